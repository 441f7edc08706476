package gateway

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

// An upstream that is down fails its target as a crashed child does: the
// session's start fails naming it (failClosed), or the others are served
// and the instructions say which is missing (failOpen).
func TestRemoteTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String() + "/mcp"
	ln.Close() // nothing listens there now
	targets := `          - name: gone
            mcp: {host: ` + down + `}
          - name: demo
            stdio: {cmd: DEMO}`
	cfg := strings.Replace(demoConfig, `          - name: demo
            stdio: {cmd: DEMO}`, targets, 1)
	for _, tc := range []struct{ mode, want string }{{"failClosed", `target "gone"`}, {"failOpen", "gone is unavailable"}} {
		t.Run(tc.mode, func(t *testing.T) {
			_, base := serveLoopback(t, strings.Replace(cfg, "      - mcp:\n", "      - mcp:\n          failureMode: "+tc.mode+"\n", 1))
			c := mcp.NewClient(&mcp.Implementation{Name: "test"}, nil)
			cs, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: base + "/mcp"}, legacySession)
			if tc.mode == "failClosed" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("initialize with an upstream down: %v, want an error naming the target", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			if !strings.Contains(cs.InitializeResult().Instructions, tc.want) {
				t.Errorf("instructions %q do not say the target is missing", cs.InitializeResult().Instructions)
			}
			if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "demo_echo", Arguments: map[string]any{"message": "x"}}); err != nil {
				t.Errorf("the other target: %v", err)
			}
		})
	}
}

// A remote server of the legacy HTTP+SSE transport (agentgateway's
// targets[].sse, default path /sse) behind the same relay.
func TestSSETarget(t *testing.T) {
	upstream := httptest.NewServer(mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil))
	defer upstream.Close()
	cfg := strings.Replace(demoConfig, `            stdio: {cmd: DEMO}`, `            sse: {host: "`+upstream.URL+`"}`, 1)
	_, base := serveLoopback(t, cfg)
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "over sse"}})
	if err != nil || strings.TrimSpace(res.Content[0].(*mcp.TextContent).Text) != "over sse" {
		t.Fatalf("echo through an sse target: %v %v", err, res)
	}
}
