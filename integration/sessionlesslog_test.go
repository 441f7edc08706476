package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
)

// Over the tailnet, a sessionless (2026-07-28) caller's call is logged on
// one line with the protocol version and the client's name beside the
// caller's identity, and the gateway's normal shutdown afterwards logs no
// warning.
func TestSessionlessLogLinesOverTailnet(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	var logs gatewaytest.Logs
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, seedLike(`cidr("100.64.0.0/10").containsIP(source.address)`, t.TempDir())), gatewaytest.CaptureLogs(&logs))
	laptop := tn.Node(t, "laptop")
	awaitPeers(t, gw.Addr, laptop)
	ctx := context.Background()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "log-probe", Version: "1"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: gw.URL(3000, "/mcp"), HTTPClient: laptop.Client(), MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "hi"}}); err != nil {
		t.Fatal(err)
	}
	cs.Close()
	// The access log line is written as the call is recorded, after its
	// answer left: wait for it.
	var call string
	for deadline := time.Now().Add(10 * time.Second); call == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for line := range strings.Lines(logs.String()) {
			if strings.Contains(line, `msg="mcp call"`) && strings.Contains(line, "method=tools/call") {
				call = line
			}
		}
	}
	if call == "" {
		t.Fatalf("no log line for the call:\n%s", logs.String())
	}
	for _, want := range []string{"protocol=2026-07-28", "client=log-probe", "user=" + laptop.Login(t), "peer=laptop."} {
		if !strings.Contains(call, " "+want) {
			t.Errorf("the call's line lacks %s:\n%s", want, call)
		}
	}
	before := logs.Len()
	gw.Shutdown(t)
	after := logs.String()[before:]
	for line := range strings.Lines(after) {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			t.Errorf("the gateway's normal shutdown logged: %s", line)
		}
	}
}
