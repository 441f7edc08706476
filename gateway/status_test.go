package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// statusConfig has a status route on the MCP bind (denied to requests
// that carry x-status-denied) and an MCP route whose rules deny the env
// tool; its target's environment holds a value the page must not show.
const statusConfig = `
binds:
- port: 3000
  listeners:
  - routes:
    - name: status
      matches: [{path: {exact: /status}}]
      policies:
        authorization:
          rules:
          - deny: '"x-status-denied" in request.headers'
          - 'source.address == "127.0.0.1"'
      backends:
      - status: {}
    - name: mcp
      policies:
        mcpAuthorization:
          rules:
          - deny: 'mcp.tool.name == "env"'
          - 'true'
      backends:
      - mcp:
          targets:
          - name: demo
            stdio:
              cmd: DEMO
              env: {DEMO_TOKEN: sekret-env-value-456}
`

// headerTransport adds a header to every request, as a client that
// sends a credential does.
type headerTransport struct{ name, value string }

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.name, h.value)
	return http.DefaultTransport.RoundTrip(r)
}

// The status page shows what an operator asks first, from the live
// gateway: the target and its health, a session and a sessionless caller
// with protocol, client and age, the children, a denied call with its
// rule (and the rule's text), the calls per tool, and the limits. A
// client's name is shown as text, never markup; nothing a client sent in
// a header, nor a child's environment, reaches the page; the page runs
// no script (its CSP allows its own style only, by hash).
func TestStatusPage(t *testing.T) {
	s, base := serveLoopback(t, statusConfig)
	const evil = `<script>document.title="pwned"</script>evil-client`
	httpClient := &http.Client{Transport: headerTransport{"Authorization", "Bearer sekret-token-123"}}
	session, err := mcp.NewClient(&mcp.Implementation{Name: evil, Version: "6.6.6"}, nil).Connect(context.Background(),
		&mcp.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: httpClient}, legacySession)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { session.Close() })
	sessionless := connectSessionless(t, mcp.NewClient(&mcp.Implementation{Name: "modern-client", Version: "1.0"}, nil), base+"/mcp")
	// Calls are named by tool once the targets' lists are known.
	waitFor(t, "the targets' tool names", func() bool {
		for _, f := range s.allFronts() {
			f.mu.Lock()
			sessions := []*frontSession{}
			for _, fs := range f.sessions {
				sessions = append(sessions, fs)
			}
			for _, c := range f.callers {
				sessions = append(sessions, c.fs)
			}
			f.mu.Unlock()
			for _, fs := range sessions {
				if bs := fs.backend(); bs == nil || !bs.NamesKnown() {
					return false
				}
			}
		}
		return true
	})
	for _, cs := range []*mcp.ClientSession{session, sessionless} {
		if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "hi"}}); err != nil {
			t.Fatal(err)
		}
	}
	if res, err := session.CallTool(context.Background(), &mcp.CallToolParams{Name: "env", Arguments: map[string]any{"names": []string{"DEMO_TOKEN"}}}); err == nil && !res.IsError {
		t.Fatal("env was not denied")
	}

	rec := httptest.NewRecorder()
	s.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	page := rec.Body.String()
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("admin /: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	for _, want := range []string{
		`<meta http-equiv="refresh" content="5">`,
		`<td>mcp</td><td>demo</td><td><span class="pill ok">ok</span>`,
		"Streamable HTTP", "2025-11-25", "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;evil-client", "6.6.6",
		"sessionless", "2026-07-28", "modern-client",
		"tool env", "binds[0].listeners[0].routes[1].policies.mcpAuthorization.rules[0]", "deny: mcp.tool.name == &#34;env&#34;", "deny rule matched",
		"<td>tools/call</td><td>echo</td><td>demo</td><td class=\"n\">2</td>",
		"No limit is near its bound.",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	for _, secret := range []string{"<script>", "sekret-token-123", "sekret-env-value-456", "Bearer"} {
		if strings.Contains(page, secret) {
			t.Errorf("the page shows %q", secret)
		}
	}
	if n, running := strings.Count(page, `<tr class="child">`), s.Stats().ChildrenRunning; int64(n) != running {
		t.Errorf("the page lists %d children, %d run", n, running)
	}
	_, rest, _ := strings.Cut(page, "<style>")
	css, _, _ := strings.Cut(rest, "</style>")
	sum := sha256.Sum256([]byte(css))
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "style-src 'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("the CSP does not allow the page's own style, or allows more: %s", csp)
	}
	if code, body := get(t, s.AdminHandler(), "/status"); code != http.StatusOK || !strings.Contains(body, "modern-client") {
		t.Errorf("admin /status: %d", code)
	}
	if code, _ := get(t, s.AdminHandler(), "/nothing-here"); code != http.StatusNotFound {
		t.Errorf("admin /nothing-here: %d, want 404", code)
	}
}

// A route whose backend is status serves the page on the gateway's own
// listener to whom its authorization allows; a refused request is a
// denial the page shows with its rule. The root page does not offer it
// as an MCP endpoint, nor does policy explain.
func TestStatusRoute(t *testing.T) {
	s, base := serveLoopback(t, statusConfig)
	for _, tc := range []struct {
		name   string
		header string
		code   int
	}{
		{"allowed", "", http.StatusOK},
		{"denied", "x-status-denied", http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, base+"/status", nil)
			if tc.header != "" {
				req.Header.Set(tc.header, "yes")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("GET /status: %d, want %d", resp.StatusCode, tc.code)
			}
		})
	}
	_, page := get(t, s.AdminHandler(), "/")
	if !strings.Contains(page, "GET /status") || !strings.Contains(page, "binds[0].listeners[0].routes[0].policies.authorization.rules[0]") {
		t.Errorf("the refused request is not among the denials with its rule")
	}
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	var root strings.Builder
	fmt.Fprint(&root, resp.Body)
	resp.Body.Close()
	if strings.Contains(root.String(), "/status") {
		t.Errorf("the root page offers the status page as an MCP route")
	}
	// Policy explain lists MCP routes only: the status route has no
	// targets to list.
	ex, err := s.Explain(t.Context(), ExplainIdentity{Login: "alice@example.com", Address: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ex.Routes) != 1 || ex.Routes[0].Name != "mcp" {
		t.Errorf("explain lists routes %+v, want mcp only", ex.Routes)
	}
}

// The book keeps the newest maxDenials denials, newest first, and counts
// them all.
func TestDenialRingKeepsTheNewest(t *testing.T) {
	for _, n := range []int{0, 1, maxDenials, maxDenials + 50} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			b := newStatusBook()
			for i := range n {
				b.denials.add(statusDenial{What: fmt.Sprint(i)})
			}
			got, total := b.denials.recent()
			if total != uint64(n) || len(got) != min(n, maxDenials) {
				t.Fatalf("%d added: %d kept, total %d", n, len(got), total)
			}
			for i, d := range got {
				if want := fmt.Sprint(n - 1 - i); d.What != want {
					t.Fatalf("denial %d is %s, want %s", i, d.What, want)
				}
			}
		})
	}
}

// The calls table's p95 is the bound of the bucket that holds it, and
// errors and refusals (by policy or a limit) are counted apart.
func TestCallCounts(t *testing.T) {
	b := newStatusBook()
	for i := range 100 {
		took, o := 3*time.Millisecond, outcomeOK
		switch {
		case i >= 97:
			took = 2 * time.Second
		case i%10 == 0:
			o = outcomeToolError
		case i%10 == 1:
			o = outcomeDenied
		case i%10 == 2:
			o = outcomeLimited
		}
		b.observeCall("mcp", "tools/call", "demo", "echo", o, took)
	}
	rows := b.callRows()
	if len(rows) != 1 {
		t.Fatalf("%d rows", len(rows))
	}
	r := rows[0]
	if r.Calls != 100 || r.Errors != 10 || r.Denied != 20 || r.P95 != 5*time.Millisecond || r.Max != 2*time.Second {
		t.Errorf("got %+v", r)
	}
}

// What the status book costs a call: its row's counters (every call) and
// its client's description (every sessionless request, unchanged).
func BenchmarkStatusBookPerCall(b *testing.B) {
	m, err := jsonrpc.ParseClientMessage([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"},` +
		`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"modern","version":"1.0"},"io.modelcontextprotocol/clientCapabilities":{}}}}`))
	if err != nil {
		b.Fatal(err)
	}
	sb, fs := newStatusBook(), &frontSession{}
	b.Run("observeCall", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sb.observeCall("mcp", "tools/call", "demo", "echo", outcomeOK, 3*time.Millisecond)
		}
	})
	b.Run("noteClient", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			fs.noteClient(m, true)
		}
	})
}

// The admin status page explains an identity's policy (the form's login,
// node and tags), as tailgate explain does, and stops refreshing while it
// shows one; the status page a route serves on the tailnet has no such
// form: it must not tell one caller what another may use.
func TestStatusPageExplains(t *testing.T) {
	s, base := serveLoopback(t, statusConfig)
	_, page := get(t, s.AdminHandler(), "/status?login=alice%40example.com")
	for _, want := range []string{`id="explain"`, "alice@example.com", "echo", "not refreshed while explaining"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(page, `http-equiv="refresh"`) {
		t.Error("the page refreshes while it shows an explanation (each one starts the targets)")
	}
	var want strings.Builder
	ex, err := s.Explain(t.Context(), ExplainIdentity{Login: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	ex.WriteText(&want)
	if first, _, _ := strings.Cut(strings.TrimSpace(want.String()), "\n"); !strings.Contains(page, template.HTMLEscapeString(first)) {
		t.Errorf("the page's explanation differs from tailgate explain's: want its line %q", first)
	}
	// Grants too: a rule that reads the caller's capabilities is judged
	// with the ones the form gives, and a malformed grant is said.
	_, granted := get(t, s.AdminHandler(), "/status?login=alice%40example.com&caps="+url.QueryEscape(`{"example.com/cap/tailgate":[{"tools":["echo"]}]}`))
	var withCaps strings.Builder
	ex, err = s.Explain(t.Context(), ExplainIdentity{Login: "alice@example.com", Caps: map[string][]json.RawMessage{"example.com/cap/tailgate": {json.RawMessage(`{"tools":["echo"]}`)}}})
	if err != nil {
		t.Fatal(err)
	}
	ex.WriteText(&withCaps)
	var capsLine string
	for line := range strings.Lines(withCaps.String()) {
		if strings.Contains(line, "example.com/cap/tailgate") {
			capsLine = strings.TrimSpace(line)
		}
	}
	if capsLine == "" || !strings.Contains(granted, template.HTMLEscapeString(capsLine)) {
		t.Errorf("the page does not explain with the grants asked: want its line %q", capsLine)
	}
	if !strings.Contains(granted, `name="caps" value="{&#34;example.com`) {
		t.Error("the form does not keep the grants asked")
	}
	if _, bad := get(t, s.AdminHandler(), "/status?login=alice%40example.com&caps=%7Bnot-json"); !strings.Contains(bad, "caps: want a JSON object") {
		t.Error("a malformed grant is not said on the page")
	}
	if _, plain := get(t, s.AdminHandler(), "/status"); !strings.Contains(plain, `name="login"`) || strings.Contains(plain, "<pre>") {
		t.Error("the admin page without a question: want the form and no explanation")
	}
	resp, err := http.Get(base + "/status?login=alice%40example.com")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || strings.Contains(string(body), `id="explain"`) || strings.Contains(string(body), "<pre>") {
		t.Errorf("the tailnet status route offers policy explain (status %d)", resp.StatusCode)
	}
}
