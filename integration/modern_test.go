package integration

//lint:file-ignore SA1019 roots, sampling and logging are deprecated by 2026-07-28 (SEP-2577) but clients and servers still use them, and the gateway relays them

import (
	"context"
	"fmt"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

// connectModern opens a go-sdk v1.8.0 client as it comes: it probes
// server/discover and speaks MCP 2026-07-28, without a session.
func connectModern(t *testing.T, n *gatewaytest.Node, gw *gatewaytest.Gateway) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := mcp.NewClient(&mcp.Implementation{Name: n.Name + "-modern"}, nil)
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: gw.URL(3000, "/mcp"), HTTPClient: n.Client(), MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("%s: 2026-07-28 client: %v", n.Name, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// A 2026-07-28 client and one pinned to 2025-11-25 use the same route at
// once: the first without a session, its calls served by children kept
// for its node and reused; the second with its session, as before. Another
// node's sessionless calls never reach the first node's children.
func TestBothProtocolGenerationsOnOneRoute(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, routeConfig("", demoTarget("identityEnv: true"))))
	laptop := tn.Node(t, "laptop")
	desk := tn.Node(t, "desk")

	legacy := laptop.MCP(t, gw, 3000, "/mcp")
	if legacy.ID() == "" {
		t.Fatal("the 2025-11-25 client has no session")
	}
	modern := connectModern(t, laptop, gw)
	if id := modern.ID(); id != "" {
		t.Fatalf("the 2026-07-28 client got session %q", id)
	}
	if v := modern.InitializeResult().ProtocolVersion; v != "2026-07-28" {
		t.Fatalf("the unpinned client speaks %q", v)
	}
	started := gw.Server.Stats().ChildrenStarted

	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		for _, cs := range []*mcp.ClientSession{legacy, modern} {
			wg.Go(func() {
				msg := fmt.Sprintf("call %d", i)
				res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": msg}})
				if err == nil && strings.TrimSpace(resultText(res)) != msg {
					err = fmt.Errorf("echo %q answered %q", msg, resultText(res))
				}
				if err != nil {
					errs <- fmt.Errorf("session %q: %w", cs.ID(), err)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := gw.Server.Stats().ChildrenStarted; got != started {
		t.Errorf("20 sessionless calls started %d more children; want the node's one reused", got-started)
	}

	// The sessionless children run as their caller: identityEnv is the
	// node's own.
	whoami := func(cs *mcp.ClientSession) string {
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "env", Arguments: map[string]any{"names": []string{"TAILGATE_NODE_HOSTNAME"}}})
		if err != nil {
			t.Fatal(err)
		}
		return resultText(res)
	}
	other := connectModern(t, desk, gw)
	if a, b := whoami(modern), whoami(other); a == b {
		t.Errorf("two nodes' sessionless calls reached the same child: %s", a)
	}
	if got := gw.Server.Stats().ChildrenStarted; got != started+1 {
		t.Errorf("a second node started %d children, want 1 of its own", got-started)
	}
}

// Sessionless clients need no affinity: two gateway replicas (as behind a
// Tailscale Service) serve one client's calls alternately, each from
// children of its own.
func TestReplicasServeOneSessionlessClient(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	cfg := routeConfig("", demoTarget(""))
	replicas := []*gatewaytest.Gateway{tn.Gateway(t, gatewaytest.ParseConfig(t, cfg)), tn.Gateway(t, gatewaytest.ParseConfig(t, cfg))}
	laptop := tn.Node(t, "laptop")
	hc := laptop.Client()
	for i := range 6 {
		gw := replicas[i%2]
		msg := fmt.Sprintf("call %d", i)
		body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"message":%q},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`, i, msg)
		req, _ := http.NewRequest(http.MethodPost, gw.URL(3000, "/mcp"), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
		req.Header.Set("Mcp-Method", "tools/call")
		req.Header.Set("Mcp-Name", "echo")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("replica %d: %v", i%2, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(got), msg) || resp.Header.Get("Mcp-Session-Id") != "" {
			t.Errorf("replica %d, %s: %d %s", i%2, msg, resp.StatusCode, got)
		}
	}
	for i, gw := range replicas {
		if st := gw.Server.Stats(); st.ChildrenStarted != 1 {
			t.Errorf("replica %d started %d children for one caller's 3 calls, want 1", i, st.ChildrenStarted)
		}
	}
}

// MRTR through a multiplexed backend over the tailnet: a sessionless
// client calls a tool of an older target that asks for the client's roots
// mid-call (bridged to input_required and back), and a tool of a modern
// target beside it.
func TestInputRequiredOverTailnet(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	targets := `
          - name: modern
            stdio: {cmd: $DEMO}
          - name: legacy
            stdio: {cmd: $DEMO, env: {` + demoserver.VersionsEnv + `: 2025-11-25}}`
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, routeConfig("", targets)))
	laptop := tn.Node(t, "laptop")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := mcp.NewClient(&mcp.Implementation{Name: "laptop-modern"}, nil)
	c.AddRoots(&mcp.Root{URI: "file:///home/alice/src", Name: "src"})
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: gw.URL(3000, "/mcp"), HTTPClient: laptop.Client(), MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if cs.ID() != "" {
		t.Fatalf("want a sessionless client, got session %q", cs.ID())
	}
	for tool, args := range map[string]map[string]any{"legacy_roots": {}, "modern_echo": {"message": "file:///home/alice/src"}} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		if got := strings.TrimSpace(resultText(res)); got != "file:///home/alice/src" {
			t.Errorf("%s: %q", tool, got)
		}
	}
}
