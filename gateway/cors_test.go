package gateway

import (
	"net/http"
	"strings"
	"testing"
)

// corsConfig is the demo route with agentgateway's cors policy: two
// listed origins (one a wildcard host) on /mcp, and on /open the "*" that
// agentgateway's examples carry.
const corsConfig = `
binds:
- port: 3000
  listeners:
  - routes:
    - name: listed
      matches: [{path: {exact: /mcp}}]
      policies:
        cors:
          allowOrigins: [https://app.example.com, "https://*.corp.example"]
          allowHeaders: ["*"]
          allowMethods: [GET, POST, DELETE]
          exposeHeaders: [Mcp-Session-Id]
          maxAge: 1h
      backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: DEMO}
    - name: posts
      matches: [{path: {exact: /posts}, method: POST}]
      policies:
        cors:
          allowOrigins: [https://app.example.com]
          allowMethods: [POST]
      backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: DEMO}
    - name: open
      matches: [{path: {exact: /open}}]
      policies:
        cors:
          allowOrigins: ["*"]
          allowHeaders: ["*"]
      backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: DEMO}
`

// A route's cors policy lets the browsers of its listed origins in: a
// preflight is answered with what the policy allows, and responses carry
// the CORS headers. Other origins are refused, also where the policy says
// "*" (loaded, with a warning), and requests without an Origin (non-browser
// clients) see no difference.
func TestCORS(t *testing.T) {
	cfg, err := Parse("cors.yaml", []byte(strings.ReplaceAll(corsConfig, "DEMO", demoBin)), newEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0].Error(), `routes[2].policies.cors.allowOrigins[0]: "*" admits no origin in tailgate`) {
		t.Errorf("warnings: %v, want one for the open route's \"*\"", cfg.Warnings)
	}
	_, base := serveLoopback(t, corsConfig)
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"web","version":"1"}}}`
	for _, tc := range []struct {
		name, method, path, origin string
		headers                    map[string]string
		status                     int
		want                       map[string]string // response headers; "" means absent
	}{
		{"preflight, listed origin", http.MethodOptions, "/mcp", "https://app.example.com",
			map[string]string{"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type, mcp-protocol-version"},
			http.StatusNoContent, map[string]string{
				"Access-Control-Allow-Origin":   "https://app.example.com",
				"Access-Control-Allow-Methods":  "GET, POST, DELETE",
				"Access-Control-Allow-Headers":  "content-type, mcp-protocol-version",
				"Access-Control-Max-Age":        "3600",
				"Access-Control-Expose-Headers": "Mcp-Session-Id",
			}},
		{"preflight, route matched by method", http.MethodOptions, "/posts", "https://app.example.com",
			map[string]string{"Access-Control-Request-Method": "POST"},
			http.StatusNoContent, map[string]string{"Access-Control-Allow-Origin": "https://app.example.com", "Access-Control-Allow-Methods": "POST"}},
		{"initialize, lookalike of the wildcard", http.MethodPost, "/mcp", "https://evilcorp.example", nil,
			http.StatusForbidden, map[string]string{"Access-Control-Allow-Origin": ""}},
		{"initialize, wildcard host", http.MethodPost, "/mcp", "https://team.corp.example", nil,
			http.StatusOK, map[string]string{"Access-Control-Allow-Origin": "https://team.corp.example", "Access-Control-Expose-Headers": "Mcp-Session-Id"}},
		{"preflight, other origin", http.MethodOptions, "/mcp", "https://evil.example",
			map[string]string{"Access-Control-Request-Method": "POST"}, http.StatusForbidden, map[string]string{"Access-Control-Allow-Origin": ""}},
		{"initialize, other origin", http.MethodPost, "/mcp", "https://evil.example", nil,
			http.StatusForbidden, map[string]string{"Access-Control-Allow-Origin": ""}},
		{"initialize, other scheme", http.MethodPost, "/mcp", "http://app.example.com", nil,
			http.StatusForbidden, nil},
		{"initialize, the star route", http.MethodPost, "/open", "https://evil.example", nil,
			http.StatusForbidden, map[string]string{"Access-Control-Allow-Origin": ""}},
		{"initialize, no Origin", http.MethodPost, "/mcp", "", nil,
			http.StatusOK, map[string]string{"Access-Control-Allow-Origin": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body *strings.Reader
			if tc.method == http.MethodPost {
				body = strings.NewReader(init)
			} else {
				body = strings.NewReader("")
			}
			req, _ := http.NewRequest(tc.method, base+tc.path, body)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			for k, v := range tc.want {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			if resp.Header.Get("Access-Control-Allow-Origin") != "" {
				vary := strings.Join(resp.Header.Values("Vary"), ", ")
				if !strings.Contains(vary, "Origin") || tc.method == http.MethodOptions && !strings.Contains(vary, "Access-Control-Request-Headers") {
					t.Errorf("Vary: %q", vary)
				}
			}
		})
	}
}
