package gateway

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
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
