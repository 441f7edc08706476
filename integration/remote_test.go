package integration

import (
	"context"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

// headerRoundTripper adds a header to every request, as a client that
// tries to pass itself off as someone else would.
type headerRoundTripper struct {
	http.RoundTripper
	key, value string
}

func (h headerRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.key, h.value)
	return h.RoundTripper.RoundTrip(r)
}

// An MCP server on another tailnet node, reached by its MagicDNS name
// through the gateway's own node, multiplexed with a stdio target: calls
// reach it, with the caller's identity (from WhoIs, whatever the client
// claims) and the target's static header; a sessionless client is served
// too.
func TestRemoteTargetOnTheTailnet(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	upstream := tn.Node(t, "upstream")
	var mu sync.Mutex
	seen := map[string][]string{}
	upstream.RemoteMCP(t, "8080", demoserver.New(), nil, func(mcpHandler http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			for _, h := range []string{"X-Tailgate-User-Login", "X-Tailgate-Node-Name", "X-Api-Key"} {
				if v := r.Header.Get(h); v != "" {
					seen[h] = append(seen[h], v)
				}
			}
			mu.Unlock()
			mcpHandler.ServeHTTP(w, r)
		})
	})

	t.Setenv("UPSTREAM_API_KEY", "key-from-env")
	var logs gatewaytest.Logs
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, routeConfig("", `
          - name: remote
            mcp:
              host: http://upstream:8080/mcp
              identityHeaders: true
              headers: {X-Api-Key: {env: UPSTREAM_API_KEY}}
          - name: local
            stdio: {cmd: $DEMO}`)), gatewaytest.CaptureLogs(&logs))
	laptop := tn.Node(t, "laptop")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := &http.Client{Transport: headerRoundTripper{laptop.Client().Transport, "X-Tailgate-User-Login", "mallory@example.com"}}
	for _, opts := range []*mcp.ClientSessionOptions{gatewaytest.LegacySession, nil} {
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "laptop"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: gw.URL(3000, "/mcp"), HTTPClient: hc, MaxRetries: -1}, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, tool := range []string{"remote_echo", "local_echo"} {
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"message": tool}})
			if err != nil {
				t.Fatalf("session %q: %s: %v", cs.ID(), tool, err)
			}
			if got := strings.TrimSpace(resultText(res)); got != tool {
				t.Errorf("%s answered %q", tool, got)
			}
		}
		tools, err := cs.ListTools(ctx, nil)
		if err != nil || !hasTool(tools, "remote_add") || !hasTool(tools, "local_add") {
			t.Errorf("tools of both targets: %v", err)
		}
		cs.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	login := laptop.Login(t)
	for _, v := range seen["X-Tailgate-User-Login"] {
		if v != login {
			t.Errorf("the upstream saw X-Tailgate-User-Login %q, want %q", v, login)
		}
	}
	if len(seen["X-Tailgate-User-Login"]) == 0 || len(seen["X-Tailgate-Node-Name"]) == 0 {
		t.Errorf("the upstream saw no identity headers: %v", seen)
	}
	if len(seen["X-Api-Key"]) == 0 || seen["X-Api-Key"][0] != "key-from-env" {
		t.Errorf("the upstream's static header: %v", seen["X-Api-Key"])
	}
	if logs.Contains("key-from-env") {
		t.Error("the static header's value is in the gateway's log")
	}
}

func hasTool(res *mcp.ListToolsResult, name string) bool {
	for _, t := range res.Tools {
		if t.Name == name {
			return true
		}
	}
	return false
}
