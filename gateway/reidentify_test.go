package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tailgate-dev/tailgate/tsnode"
)

// Every request on a kept-alive connection is judged as who its peer is
// now: a node whose tag is taken away (the next WhoIs says so) is refused
// from its next request, on the same connection and in the same session,
// by networkAuthorization and by mcpAuthorization alike. Failed before:
// the identity was looked up once per connection, and an MCP client that
// keeps its connection went on being judged with the old tags.
func TestKeptConnectionJudgedAsThePeerIsNow(t *testing.T) {
	ci := &tsnode.Identity{NodeID: "n1", NodeName: "runner.tail1234.ts.net", NodeHostname: "runner", UserLogin: "tagged-devices", Tags: []string{"tag:ci", "tag:deploy"}}
	for _, tc := range []struct {
		name   string
		after  *tsnode.Identity
		status int
		want   string
	}{
		// networkAuthorization requires tag:ci: the peer is refused.
		{"tag:ci taken", &tsnode.Identity{NodeID: "n1", NodeName: ci.NodeName, NodeHostname: "runner", UserLogin: "tagged-devices", Tags: []string{"tag:deploy"}}, http.StatusForbidden, "denied by frontendPolicies.networkAuthorization"},
		// mcpAuthorization allows echo to tag:deploy only: the call is.
		{"tag:deploy taken", &tsnode.Identity{NodeID: "n1", NodeName: ci.NodeName, NodeHostname: "runner", UserLogin: "tagged-devices", Tags: []string{"tag:ci"}}, http.StatusOK, `"error"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var now atomic.Pointer[tsnode.Identity]
			now.Store(ci)
			identify := IdentifyTailnet(func(context.Context, netip.AddrPort) (*tsnode.Identity, error) { return now.Load(), nil })
			cfg := `
frontendPolicies:
  networkAuthorization:
    rules:
    - '"tag:ci" in source.tailscale.node.tags'
` + strings.Replace(demoConfig, "    - name: mcp\n", "    - name: mcp\n      policies:\n        mcpAuthorization:\n          rules:\n          - 'mcp.tool.name != \"echo\" || \"tag:deploy\" in source.tailscale.node.tags'\n", 1)
			_, base := serveLoopbackOpts(t, cfg, Options{Logger: badInputLogger(t), Identify: identify})
			rs := rawInitialize(t, base+"/mcp", `{}`)
			var reused atomic.Bool
			call := func() (int, string) {
				t.Helper()
				req, err := http.NewRequest("POST", rs.url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}`))
				if err != nil {
					t.Fatal(err)
				}
				req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused.Store(i.Reused) }}))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				req.Header.Set(sessionIDHeader, rs.id)
				resp, err := rs.http.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp.StatusCode, string(body)
			}
			if code, body := call(); code != http.StatusOK || !strings.Contains(body, `"text":"hi"`) {
				t.Fatalf("before: %d %s", code, body)
			}
			now.Store(tc.after)
			code, body := call()
			if !reused.Load() {
				t.Fatal("the second call did not reuse the connection: the test proves nothing")
			}
			if code != tc.status || !strings.Contains(body, tc.want) || strings.Contains(body, `"text":"hi"`) {
				t.Errorf("after %s: %d %s, want %d with %s", tc.name, code, body, tc.status, tc.want)
			}
		})
	}
}
