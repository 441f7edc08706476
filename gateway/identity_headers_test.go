package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/tsnode"
)

// A remote target's identity headers say who asks at each request, not
// who opened the link: a node whose tags are taken away mid-session (its
// next connection's WhoIs says so) is sent untagged from its next call on,
// in the same MCP session, for both generations of client. Failed before:
// the headers were set once per link, and the old tags went on being sent.
func TestRemoteTargetIdentityHeadersFollowTheCaller(t *testing.T) {
	tagged := &tsnode.Identity{NodeID: "n1", NodeName: "ci-runner.tail1234.ts.net", NodeHostname: "ci-runner", UserLogin: "tagged-devices", Tags: []string{"tag:ci", "tag:deploy"}}
	untagged := &tsnode.Identity{NodeID: "n1", NodeName: "ci-runner.tail1234.ts.net", NodeHostname: "ci-runner", UserLogin: "alice@example.com"}
	var now atomic.Pointer[tsnode.Identity]
	identify := IdentifyTailnet(func(context.Context, netip.AddrPort) (*tsnode.Identity, error) { return now.Load(), nil })

	var seen upstreamLog
	upstream := httptest.NewServer(seen.record(bothGenerations()))
	t.Cleanup(upstream.Close)
	_, base := serveLoopbackOpts(t, withTarget(`            mcp: {host: "`+upstream.URL+`", identityHeaders: true}`), Options{Identify: identify})

	calls := func(from int) []upstreamRequest {
		var out []upstreamRequest
		for _, r := range seen.all()[from:] {
			if r.mcpMethod == "tools/call" {
				out = append(out, r)
			}
		}
		return out
	}
	for _, g := range generations {
		t.Run(g.name, func(t *testing.T) {
			now.Store(tagged)
			// A connection per request: each is identified anew, as after
			// a netmap change.
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cs, err := mcp.NewClient(&mcp.Implementation{Name: "test-client"}, nil).Connect(ctx,
				&mcp.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: client, MaxRetries: -1}, g.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			echo := func(msg string) {
				t.Helper()
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": msg}})
				if err != nil || res.IsError {
					t.Fatalf("echo %s: %v %v", msg, res, err)
				}
			}
			mark := len(seen.all())
			echo("tagged")
			for _, r := range calls(mark) {
				if got := r.header.Values("X-Tailgate-Node-Tags"); !slices.Equal(got, []string{"tag:ci,tag:deploy"}) {
					t.Errorf("call while tagged came with tags %q, want %q", got, "tag:ci,tag:deploy")
				}
			}
			now.Store(untagged)
			mark = len(seen.all())
			echo("untagged")
			after := calls(mark)
			if len(after) == 0 {
				t.Fatal("the call after the tags were taken reached no server")
			}
			for _, r := range after {
				if got := r.header.Values("X-Tailgate-Node-Tags"); len(got) != 0 {
					t.Errorf("call after the tags were taken still came with tags %q", got)
				}
				if got := r.header.Get("X-Tailgate-User-Login"); got != "alice@example.com" {
					t.Errorf("call after the tags were taken came with login %q, want alice@example.com", got)
				}
			}
		})
	}
}
