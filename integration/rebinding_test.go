package integration

import (
	"context"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// A web page that a tailnet user opens cannot drive the gateway with the
// user's identity. Over the tailnet, the gateway answers only to its own
// names (MagicDNS, short and full, and its addresses): a page that
// resolves evil.example.com to the gateway's address gets 403, and so
// does one naming localhost. Through the dev bridge, localhost names are
// fine, because they come from the bridge's node; a rebinding name is not.
// A foreign Origin gets 403 either way. Before, every one of these
// requests reached the MCP route.
func TestBrowserCannotDriveTheGateway(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, routeConfig("", demoTarget(""))))
	laptop := tn.Node(t, "laptop")
	bridge := gw.Bridge(t, tn.Node(t, "bridge"), 3000)

	ip := gw.Addr.String()
	name := gw.Node.DNSName()
	short, _, _ := strings.Cut(name, ".")
	over := func(c *http.Client, url string) func(host, origin string) (int, string) {
		return func(host, origin string) (int, string) {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				req.Host = host
				if origin != "" {
					req.Header.Set("Origin", origin)
				}
				resp, err := c.Do(req)
				if err != nil {
					if ctx.Err() == nil && gatewaytest.Retryable(err) {
						time.Sleep(100 * time.Millisecond)
						continue
					}
					t.Fatalf("Host %q: %v", host, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp.StatusCode, string(body)
			}
		}
	}
	tailnet := over(laptop.Client(), gw.URL(3000, "/mcp"))
	local := over(http.DefaultClient, "http://"+bridge+"/mcp")
	_, bridgePort, _ := strings.Cut(bridge, ":")

	for _, tt := range []struct {
		via           string
		do            func(host, origin string) (int, string)
		host, origin  string
		wantForbidden bool
	}{
		{"tailnet", tailnet, name, "", false},
		{"tailnet", tailnet, name + ":3000", "", false},
		{"tailnet", tailnet, short + ":3000", "", false},
		{"tailnet", tailnet, ip + ":3000", "", false},
		{"tailnet", tailnet, ip, "http://" + ip, false},
		{"tailnet", tailnet, "evil.example.com:3000", "", true},
		{"tailnet", tailnet, "evil.example.com:3000", "http://evil.example.com:3000", true},
		{"tailnet", tailnet, "localhost:3000", "", true},
		{"tailnet", tailnet, "127.0.0.1:" + bridgePort, "", true},
		{"tailnet", tailnet, name + ":3000", "http://evil.example.com", true},

		{"bridge", local, bridge, "", false},
		{"bridge", local, "localhost:" + bridgePort, "", false},
		{"bridge", local, "[::1]:" + bridgePort, "", false},
		{"bridge", local, bridge, "http://" + bridge, false},
		{"bridge", local, "evil.example.com:" + bridgePort, "", true},
		{"bridge", local, "evil.example.com:" + bridgePort, "http://evil.example.com:" + bridgePort, true},
		{"bridge", local, bridge, "http://evil.example.com", true},
		{"bridge", local, bridge, "http://localhost:8080", true},
	} {
		code, body := tt.do(tt.host, tt.origin)
		forbidden := code == http.StatusForbidden && strings.HasPrefix(body, "tailgate: ")
		if forbidden != tt.wantForbidden {
			t.Errorf("via %s, Host %q, Origin %q: %d %q; want refused: %v", tt.via, tt.host, tt.origin, code, strings.TrimSpace(body), tt.wantForbidden)
		}
	}

	// A local client through the bridge works end to end.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "local-ide"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: "http://" + bridge + "/mcp"}, gatewaytest.LegacySession)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "hi"}}); err != nil {
		t.Fatal(err)
	}
}
