package integration

import (
	"context"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/tsnode/devnet"
)

func TestMain(m *testing.M) {
	code := m.Run()
	gatewaytest.RemoveDemoServer()
	os.Exit(code)
}

// seedLike is the seed config with the demo server as its target.
func seedLike(rule, pidDir string) string {
	return `
frontendPolicies:
  networkAuthorization:
    rules:
    - '` + rule + `'
binds:
- port: 3000
  listeners:
  - name: default
    protocol: HTTP
    routes:
    - name: mcp
      backends:
      - mcp:
          targets:
          - name: demo
            stdio:
              cmd: $DEMO
              env: {TAILGATE_DEMO_PIDDIR: "` + pidDir + `"}
`
}

func TestClientCallsToolsOverTailnet(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	pids := t.TempDir()
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, seedLike(`cidr("100.64.0.0/10").containsIP(source.address)`, pids)))
	laptop := tn.Node(t, "laptop")
	cs := laptop.MCP(t, gw, 3000, "/mcp")

	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	for _, want := range []string{"add", "echo", "env", "slow"} {
		if !slices.Contains(names, want) {
			t.Errorf("tools %v lack %q", names, want)
		}
	}
	echo, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "over wireguard"}})
	if err != nil || echo.Content[0].(*mcp.TextContent).Text != "over wireguard" {
		t.Fatalf("echo: %v %+v", err, echo)
	}
	add, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "add", Arguments: map[string]any{"a": 19, "b": 23}})
	if err != nil || add.Content[0].(*mcp.TextContent).Text != "42" {
		t.Fatalf("add: %v %+v", err, add)
	}
	// One child for the session, however many requests it made.
	if got := gatewaytest.StartedPIDs(t, pids); len(got) != 1 {
		t.Errorf("children started: %v, want one", got)
	}
}

// A peer that networkAuthorization refuses is told so: HTTP 403 and one
// line naming it and the rule, so that "denied" is not mistaken for
// "down"; it starts nothing.
func TestNetworkAuthorizationRefusesPeer(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	pids := t.TempDir()
	// Only 100.64.0.99 may connect; the client node is not it.
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, seedLike(`cidr("100.64.0.99/32").containsIP(source.address)`, pids)))
	intruder := tn.Node(t, "intruder")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := intruder.Connect(ctx, gw.URL(3000, "/mcp"), nil)
	if err == nil {
		cs.Close()
		t.Fatal("a peer outside the rule opened a session")
	}
	if !strings.Contains(err.Error(), "403") && !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("the MCP client was not told it is forbidden: %v", err)
	}
	resp, err := intruder.HTTPGet(ctx, gw.URL(3000, "/mcp"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := "tailgate: connection from intruder." + devnet.MagicDNSDomain + " (" + intruder.Login(t) + ") denied by frontendPolicies.networkAuthorization.rules: no allow rule matched\n"
	if resp.StatusCode != http.StatusForbidden || string(body) != want {
		t.Errorf("got %d %q, want 403 %q", resp.StatusCode, body, want)
	}
	if st := gw.Server.Stats(); st.DeniedConnections == 0 || st.ChildrenStarted != 0 {
		t.Errorf("stats %+v: want denied connections and no child", st)
	}
	if got := gatewaytest.StartedPIDs(t, pids); len(got) != 0 {
		t.Errorf("denied peer started children %v", got)
	}
}

func TestShutdownLeavesNoChild(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	pids := t.TempDir()
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, seedLike(`cidr("100.64.0.0/10").containsIP(source.address)`, pids)))
	laptop := tn.Node(t, "laptop")
	for range 3 {
		cs := laptop.MCP(t, gw, 3000, "/mcp")
		if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err != nil {
			t.Fatal(err)
		}
	}
	started := gatewaytest.StartedPIDs(t, pids)
	if len(started) != 3 {
		t.Fatalf("children started: %v, want 3", started)
	}
	for _, pid := range started {
		if !gatewaytest.Running(pid) {
			t.Fatalf("child %d not running before shutdown", pid)
		}
	}
	begin := time.Now()
	gw.Shutdown(t)
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	for _, pid := range started {
		if gatewaytest.Running(pid) {
			t.Errorf("child %d still running after shutdown", pid)
		}
	}
}
