package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/gateway/audit"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
)

// limitsConfig gives each person two calls of each tool an hour, by
// their tailnet login; the trail goes to AUDIT.
const limitsConfig = `
config:
  audit: {file: AUDIT}
binds:
- port: 3000
  listeners:
  - routes:
    - name: team
      policies:
        localRateLimit:
        - maxTokens: 2
          tokensPerFill: 1
          fillInterval: 1h
          key: 'source.tailscale.user.login + "/" + mcp.tool.name'
          match: 'mcp.method == "tools/call"'
      backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: $DEMO}
`

// limitPath is limitsConfig's limit, as errors, the trail and metrics
// name it.
const limitPath = "binds[0].listeners[0].routes[0].policies.localRateLimit[0]"

// Limits per identity over the tailnet: Alice, past her two calls of
// echo, is refused (a 429 that names the limit, her key and when to
// retry), while Bob, and Alice's other tools, are not; a reload that keeps
// the limit keeps her refused; the trail and the metrics show it.
func TestLimitsPerIdentity(t *testing.T) {
	tm := newTeam(t)
	trail := filepath.Join(t.TempDir(), "audit.jsonl")
	config := strings.ReplaceAll(limitsConfig, "AUDIT", trail)
	gw := tm.tn.Gateway(t, gatewaytest.ParseConfig(t, config))
	alice := tm.alice.MCP(t, gw, 3000, "/mcp")
	bob := tm.bob.MCP(t, gw, 3000, "/mcp")
	ctx := context.Background()
	echo := &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "hi"}}

	for i := range 2 {
		if _, err := alice.CallTool(ctx, echo); err != nil {
			t.Fatalf("alice's call %d: %v", i+1, err)
		}
	}
	// go-sdk v1.8.0 reports a 429 by its status text.
	if _, err := alice.CallTool(ctx, echo); err == nil || !strings.Contains(err.Error(), "Too Many Requests") {
		t.Fatalf("alice past her limit: %v", err)
	}
	// What the answer says, as any HTTP client sees it.
	resp, body := sessionlessEcho(t, tm.alice, gw)
	want := `rate limit ` + limitPath + ` reached for \"` + tm.aliceID + `/echo\": 2 requests, then 1 every 1h0m0s; retry after`
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, want) || !strings.Contains(body, `"code":-32029`) {
		t.Errorf("alice's sessionless call past her limit: %d Retry-After %q\n%s\nwant 429 with %s", resp.StatusCode, resp.Header.Get("Retry-After"), body, want)
	}
	for i := range 3 {
		if _, err := bob.CallTool(ctx, echo); i < 2 && err != nil {
			t.Errorf("bob's call %d while alice is limited: %v", i+1, err)
		}
	}
	if _, err := alice.CallTool(ctx, &mcp.CallToolParams{Name: "add", Arguments: map[string]any{"a": 1, "b": 2}}); err != nil {
		t.Errorf("alice's other tool: %v", err)
	}

	// A reload that keeps the limit keeps what it counted.
	if err := gw.Server.Reload(gatewaytest.ParseConfig(t, config)); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.CallTool(ctx, echo); err == nil {
		t.Error("alice's limit was reset by a reload that kept it")
	}

	limited := 0
	for _, r := range readAuditTrail(t, trail) {
		if r.Outcome != "limited" {
			continue
		}
		limited++
		if r.Rule != limitPath || r.Decision != "deny" || r.Name != "echo" || r.Caller.Login != tm.aliceID && r.Caller.Login != tm.bobID {
			t.Errorf("a limited call's record: %+v", r)
		}
	}
	if limited != 4 { // alice 3 (one sessionless), bob 1
		t.Errorf("%d limited calls on the trail, want 4", limited)
	}
	rec := httptest.NewRecorder()
	gw.Server.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if m := `tailgate_limited_total{limit="` + limitPath + `",route="team"} 4`; !strings.Contains(rec.Body.String(), m) {
		t.Errorf("metrics lack %s", m)
	}
	var keys []string
	for _, st := range gw.Server.LimitsStatus() {
		keys = append(keys, st.Key)
	}
	if strings.Join(keys, " ") != tm.aliceID+"/echo "+tm.bobID+"/echo" {
		t.Errorf("keys near their bound: %v", keys)
	}
}

// sessionlessEcho calls echo as n with a 2026-07-28 sessionless request,
// and reads the answer.
func sessionlessEcho(t *testing.T, n *gatewaytest.Node, gw *gatewaytest.Gateway) (*http.Response, string) {
	t.Helper()
	const body = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"},` +
		`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
	req, err := http.NewRequest(http.MethodPost, gw.URL(3000, "/mcp"), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", "tools/call")
	req.Header.Set("Mcp-Name", "echo")
	resp, err := n.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// readAuditTrail reads the records of an audit trail file.
func readAuditTrail(t *testing.T, file string) []audit.Record {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []audit.Record
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		recs = append(recs, r)
	}
	return recs
}
