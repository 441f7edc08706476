package integration

import (
	"context"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"tailscale.com/tailcfg"
)

// An MCP client keeps its connection for hours. A grant taken away while
// it holds one is felt at its very next request on that same connection,
// over the real tailnet: WhoIs is asked again per request (the resolver's
// cache is emptied by the netmap change). Failed before: the identity was
// looked up once per connection, and the call went on being allowed.
func TestKeptConnectionFollowsGrants(t *testing.T) {
	tm := newTeam(t)
	gw := tm.tn.Gateway(t, tm.identityConfig(t), gatewaytest.GatewayTags("tag:mcp-gateway"))
	tm.tn.Control.SetGlobalAppCaps(tailcfg.PeerCapMap{"example.com/cap/tailgate": {`{"tools":["info"]}`}})

	// One connection for everything: a second one would be identified
	// afresh and prove nothing.
	hc := &http.Client{Transport: &http.Transport{DialContext: tm.bob.Dial, MaxConnsPerHost: 1}}
	url := gw.URL(3000, "/mcp")
	session := ""
	conns := 0
	post := func(body string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
			if !i.Reused {
				conns++
			}
		}})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if session != "" {
			req.Header.Set("Mcp-Session-Id", session)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if session == "" {
			session = resp.Header.Get("Mcp-Session-Id")
		}
		return resp.StatusCode, string(b)
	}
	info := func() string {
		_, body := post(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"info","arguments":{}}}`)
		return body
	}
	if code, body := post(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"kept","version":"1"}}}`); code != http.StatusOK || session == "" {
		t.Fatalf("initialize: %d %s", code, body)
	}
	post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	waitForTools(t, "info granted", func() bool { return strings.Contains(info(), `"pid"`) })

	tm.tn.Control.SetGlobalAppCaps(nil)
	waitForTools(t, "the grant's removal felt on the kept connection", func() bool {
		return strings.Contains(info(), "not permitted by tailgate policy")
	})
	if conns != 1 {
		t.Fatalf("%d connections were opened, want 1: the test proves nothing", conns)
	}
}
