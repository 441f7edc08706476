package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/gateway/audit"
)

// limitsConfig limits each caller (the X-Caller header: on loopback every
// caller has the same address) to 2 echo calls an hour, and to 1 slow
// call in flight; the trail goes to AUDIT.
const limitsConfig = `
config:
  audit: {file: AUDIT}
binds:
- port: 3000
  listeners:
  - routes:
    - name: mcp
      policies:
        localRateLimit:
        - maxTokens: 2
          tokensPerFill: 1
          fillInterval: 1h
          key: 'request.headers["x-caller"] + "/" + mcp.tool.name'
          match: 'mcp.method == "tools/call" && mcp.tool.name == "echo"'
        - concurrency: 1
          key: 'request.headers["x-caller"]'
          match: 'mcp.tool.name == "slow"'
      backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: DEMO}
`

// echoLimit is the path of limitsConfig's echo limit.
const echoLimit = "binds[0].listeners[0].routes[0].policies.localRateLimit[0]"

// serveLimits serves config (limitsConfig's form) on loopback, with its
// audit trail in a file of the test's.
func serveLimits(t *testing.T, config string) (*Server, string, string) {
	t.Helper()
	trail := filepath.Join(t.TempDir(), "audit.jsonl")
	s, base := serveLoopback(t, strings.ReplaceAll(config, "AUDIT", trail))
	return s, base, trail
}

// limitPost posts body as caller (X-Caller) on session (none if ""),
// with the headers of a 2026-07-28 sessionless request if modern.
func limitPost(t *testing.T, base, session, caller, body string, modern bool) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("X-Caller", caller)
	if session != "" {
		req.Header.Set(sessionIDHeader, session)
	}
	if modern {
		req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
		req.Header.Set("Mcp-Method", "tools/call")
		req.Header.Set("Mcp-Name", "echo")
	}
	return do(t, req)
}

// echoBody is a tools/call of echo; with modernMeta for a sessionless
// request.
func echoBody(modern bool) string {
	meta := ""
	if modern {
		meta = "," + modernMeta
	}
	return `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}` + meta + `}}`
}

// limitErrorOf is the JSON-RPC error of an answer (JSON, or the last
// event of a stream).
func limitErrorOf(t *testing.T, body []byte) (code int, msg string, data limitErrorData) {
	t.Helper()
	if i := strings.LastIndex(string(body), "data: "); i >= 0 {
		body = []byte(strings.TrimSpace(string(body[i+len("data: "):])))
	}
	var m struct {
		Error *struct {
			Code    int            `json:"code"`
			Message string         `json:"message"`
			Data    limitErrorData `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &m); err != nil || m.Error == nil {
		return 0, "", limitErrorData{}
	}
	return m.Error.Code, m.Error.Message, m.Error.Data
}

// Past a limit, a call gets a JSON-RPC error that names the limit, the
// caller's key and when to retry, under HTTP 429 with Retry-After where
// the answer is its own HTTP response (a sessionless request, a
// Streamable HTTP POST); another caller, and another tool, are not
// affected; the refused call is on the audit trail with the limit as its
// rule, counted in tailgate_limited_total and listed near its bound.
func TestRateLimitAnswers(t *testing.T) {
	s, base, trail := serveLimits(t, limitsConfig)
	for _, tc := range []struct {
		name   string
		modern bool
	}{{"session", false}, {"sessionless", true}} {
		t.Run(tc.name, func(t *testing.T) {
			caller := "alice-" + tc.name
			session := ""
			if !tc.modern {
				resp, body := limitPost(t, base, "", caller, fuzzInitialize, false)
				if session = resp.Header.Get(sessionIDHeader); session == "" {
					t.Fatalf("initialize: %d %s", resp.StatusCode, body)
				}
				limitPost(t, base, session, caller, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, false)
			}
			for i := range 2 {
				if resp, body := limitPost(t, base, session, caller, echoBody(tc.modern), tc.modern); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"text":"hi"`) {
					t.Fatalf("call %d within the limit: %d %s", i+1, resp.StatusCode, body)
				}
			}
			resp, body := limitPost(t, base, session, caller, echoBody(tc.modern), tc.modern)
			retry, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			if resp.StatusCode != http.StatusTooManyRequests || retry < 3590 || retry > 3600 {
				t.Errorf("past the limit: %d, Retry-After %q; want 429 and about an hour", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
			code, msg, data := limitErrorOf(t, body)
			want := `rate limit ` + echoLimit + ` reached for "` + caller + `/echo": 2 requests, then 1 every 1h0m0s; retry after`
			if code != codeLimited || !strings.HasPrefix(msg, want) || data.Limit != echoLimit || data.Key != caller+"/echo" || data.RetryAfter != retry {
				t.Errorf("past the limit:\n%s\nwant code %d, message %q…, data with the limit, key and retryAfter", body, codeLimited, want)
			}
			// Another caller, and another tool of the same caller, pass.
			if resp, body := limitPost(t, base, session, "bob-"+tc.name, echoBody(tc.modern), tc.modern); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"text":"hi"`) {
				t.Errorf("another caller: %d %s", resp.StatusCode, body)
			}
		})
	}

	recs := readTrail(t, trail)
	rec := findRecord(recs, func(r audit.Record) bool { return r.Outcome == "limited" })
	if rec == nil || rec.Event != "mcp.call" || rec.Decision != "deny" || rec.Rule != echoLimit || !strings.Contains(rec.Reason, "rate limit") || rec.Name != "echo" {
		t.Errorf("the limited call's record: %+v", rec)
	}
	_, metrics := get(t, s.AdminHandler(), "/metrics")
	if want := `tailgate_limited_total{limit="` + echoLimit + `",route="mcp"} 2`; !strings.Contains(metrics, want) {
		t.Errorf("metrics lack %s:\n%s", want, grepLines(metrics, "limited"))
	}
	// Both refused calls are counted as limited, by their tool's name, or
	// as "unlisted" when a new sessionless child's list was not known yet
	// (a call never waits for tailgate's own list request).
	limitedCalls := 0
	for _, tool := range []string{"echo", "unlisted"} {
		var n int
		for line := range strings.Lines(metrics) {
			if _, err := fmt.Sscanf(line, `tailgate_mcp_calls_total{method="tools/call",outcome="limited",route="mcp",target="demo",tool="`+tool+`"} %d`, &n); err == nil {
				limitedCalls += n
			}
		}
	}
	if limitedCalls != 2 {
		t.Errorf("%d tools/call counted as limited, want 2:\n%s", limitedCalls, grepLines(metrics, "limited"))
	}
	status := s.LimitsStatus()
	if len(status) != 2 || status[0].Key != "alice-session/echo" || status[0].Tokens != 0 || status[0].MaxTokens != 2 || status[0].RetryAfter <= 0 ||
		status[0].Route != "mcp" || status[0].Limit != echoLimit || status[1].Key != "alice-sessionless/echo" {
		t.Errorf("LimitsStatus: %+v, want alice's two keys with no token left", status)
	}
	_, page := get(t, s.AdminHandler(), "/status")
	if row := `<td>mcp: ` + echoLimit + ` (requests) <span class="pill warn">near its bound</span></td><td>alice-session/echo</td><td class="n">2</td><td class="n">2</td>`; !strings.Contains(page, row) {
		t.Errorf("the status page lacks alice's limit:\n%s", grepLines(page, "localRateLimit"))
	}
}

// go-sdk's client and a legacy SSE session: the session goes on after a
// refusal; on legacy SSE, whose answers go on the session's stream, the
// refusal is the JSON-RPC error alone, with the limit's message.
func TestRateLimitClients(t *testing.T) {
	_, base, _ := serveLimits(t, limitsConfig)
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		transport func(*http.Client) mcp.Transport
		want      string
	}{
		{"streamable", func(hc *http.Client) mcp.Transport {
			return &mcp.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: hc, MaxRetries: -1}
		}, "Too Many Requests"}, // go-sdk v1.8.0 does not read the body of a 429
		{"legacy SSE", func(hc *http.Client) mcp.Transport {
			return &mcp.SSEClientTransport{Endpoint: base + "/sse", HTTPClient: hc}
		}, "rate limit " + echoLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hc := &http.Client{Transport: clientHeaders{http.DefaultTransport, http.Header{"X-Caller": {tc.name}}}}
			cs, err := mcp.NewClient(&mcp.Implementation{Name: "test-client"}, nil).Connect(ctx, tc.transport(hc), legacySession)
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			echo := &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "hi"}}
			for range 2 {
				if _, err := cs.CallTool(ctx, echo); err != nil {
					t.Fatal(err)
				}
			}
			_, err = cs.CallTool(ctx, echo)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("past the limit: %v, want an error with %q", err, tc.want)
			}
			var wire *jsonrpc.Error
			if tc.name == "legacy SSE" && (!errors.As(err, &wire) || wire.Code != codeLimited) {
				t.Errorf("legacy SSE: %v, want JSON-RPC error %d", err, codeLimited)
			}
			if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "add", Arguments: map[string]any{"a": 1, "b": 2}}); err != nil {
				t.Errorf("the session after a refusal: %v", err)
			}
		})
	}
}

// slowInFlight starts a slow call (about 10s) as caller on a session of
// its own, returns once the call is in flight (its first progress came),
// and gives the function that cancels it and waits for its end.
func slowInFlight(t *testing.T, base, caller string) (cancel func()) {
	t.Helper()
	progress := make(chan struct{}, 1)
	opts := &mcp.ClientOptions{ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) {
		select {
		case progress <- struct{}{}:
		default:
		}
	}}
	hc := &http.Client{Transport: clientHeaders{http.DefaultTransport, http.Header{"X-Caller": {caller}}}}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test-client"}, opts).Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: hc, MaxRetries: -1}, legacySession)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		p := &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"steps": 100, "delayMs": 100}}
		p.SetProgressToken("slow-" + caller)
		_, err := cs.CallTool(ctx, p)
		done <- err
	}()
	select {
	case <-progress:
	case err := <-done:
		t.Fatalf("the slow call ended before any progress: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no progress from the slow call")
	}
	return func() {
		stop()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the cancelled slow call did not end")
		}
	}
}

// quickSlow calls slow for one short step as caller, on a sessionless
// request, and returns the HTTP status and body.
func quickSlow(t *testing.T, base, caller string) (int, string) {
	t.Helper()
	req := modernRequest(t, base, "tools/call", "slow", `"name":"slow","arguments":{"steps":1,"delayMs":1}`)
	req.Header.Set("X-Caller", caller)
	resp, body := do(t, req)
	return resp.StatusCode, string(body)
}

// A concurrency cap refuses a caller's call past it while others run,
// and the place comes back however a call ends: cancelled, its client
// gone, an error.
func TestConcurrencyLimitReleased(t *testing.T) {
	_, base, _ := serveLimits(t, limitsConfig)
	cancel := slowInFlight(t, base, "carol")
	code, body := quickSlow(t, base, "carol")
	if _, msg, _ := limitErrorOf(t, []byte(body)); code != http.StatusTooManyRequests || !strings.HasPrefix(msg, "concurrency limit binds[0].listeners[0].routes[0].policies.localRateLimit[1] reached for \"carol\": 1 requests in flight at most") {
		t.Errorf("a second call in flight: %d %s", code, body)
	}
	if code, body := quickSlow(t, base, "dave"); code != http.StatusOK {
		t.Errorf("another caller: %d %s", code, body)
	}

	// Cancelled.
	cancel()
	waitFor(t, "the place of a cancelled call", func() bool { code, _ := quickSlow(t, base, "carol"); return code == http.StatusOK })

	// The client gone: its connection closed while the call runs.
	ctx, gone := context.WithCancel(context.Background())
	req := modernRequest(t, base, "tools/call", "slow", "")
	const withProgress = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow","arguments":{"steps":100,"delayMs":100},` +
		`"_meta":{"progressToken":"p","io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
	req.Body, req.ContentLength = io.NopCloser(strings.NewReader(withProgress)), int64(len(withProgress))
	req.Header.Set("X-Caller", "carol")
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || !strings.HasPrefix(line, "event:") {
		t.Fatalf("the slow call's first event: %q %v", line, err)
	}
	if code, _ := quickSlow(t, base, "carol"); code != http.StatusTooManyRequests {
		t.Errorf("while the raw call runs: %d, want 429", code)
	}
	gone()
	resp.Body.Close()
	waitFor(t, "the place of a call whose client left", func() bool { code, _ := quickSlow(t, base, "carol"); return code == http.StatusOK })

	// Errors (the target refuses the arguments): each ends its call, and
	// gives its place back.
	for range 3 {
		req := modernRequest(t, base, "tools/call", "slow", `"name":"slow","arguments":{"steps":"many"}`)
		req.Header.Set("X-Caller", "carol")
		if resp, body := do(t, req); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"isError":true`) {
			t.Fatalf("a call with bad arguments: %d %s", resp.StatusCode, body)
		}
	}
	if code, body := quickSlow(t, base, "carol"); code != http.StatusOK {
		t.Errorf("after errors: %d %s", code, body)
	}
}

// A reload keeps what an unchanged limit counted (tokens taken, calls in
// flight) and starts a changed limit afresh.
func TestLimitsSurviveReload(t *testing.T) {
	s, base, trail := serveLimits(t, limitsConfig)
	reload := func(config string) {
		t.Helper()
		y := strings.NewReplacer("AUDIT", trail, "DEMO", demoBin).Replace(config)
		cfg, err := Parse("test.yaml", []byte(y), newEnv(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Reload(cfg); err != nil {
			t.Fatal(err)
		}
	}
	echo := func() int {
		resp, _ := limitPost(t, base, "", "alice", echoBody(true), true)
		return resp.StatusCode
	}
	for range 2 {
		echo()
	}
	cancel := slowInFlight(t, base, "carol")
	defer cancel()

	reload(limitsConfig)
	if code := echo(); code != http.StatusTooManyRequests {
		t.Errorf("alice after a reload that kept her limit: %d, want 429", code)
	}
	if code, _ := quickSlow(t, base, "carol"); code != http.StatusTooManyRequests {
		t.Errorf("carol's call in flight after a reload that kept the cap: %d, want 429", code)
	}

	reload(strings.Replace(limitsConfig, "maxTokens: 2", "maxTokens: 3", 1))
	for i := range 3 {
		if code := echo(); code != http.StatusOK {
			t.Errorf("alice's call %d under the changed limit: %d, want 200", i+1, code)
		}
	}
	if code := echo(); code != http.StatusTooManyRequests {
		t.Errorf("alice past the changed limit: %d, want 429", code)
	}
	if code, _ := quickSlow(t, base, "carol"); code != http.StatusTooManyRequests {
		t.Errorf("carol after a reload that changed another limit: %d, want 429", code)
	}

	reload(strings.Replace(limitsConfig, "concurrency: 1", "concurrency: 2", 1))
	if code, body := quickSlow(t, base, "carol"); code != http.StatusOK {
		t.Errorf("carol under a changed cap: %d %s", code, body)
	}
}

// A limit whose expression cannot be evaluated for a call refuses it (it
// fails closed, as a rule does) with an error that names the
// expression, under 200: retrying would not help.
func TestLimitExpressionFails(t *testing.T) {
	s, base := serveLoopback(t, `
mcp:
  policies:
    localRateLimit:
    - maxTokens: 100
      fillInterval: 1s
      key: 'int(request.headers["x-caller"])'
  targets:
  - name: demo
    stdio: {cmd: DEMO}
`)
	resp, body := limitPost(t, base, "", "alice", echoBody(true), true)
	code, msg, data := limitErrorOf(t, body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Retry-After") != "" || code != codeLimited ||
		!strings.HasPrefix(msg, "limit mcp.policies.localRateLimit[0].key could not be evaluated for this call") || data.Limit != "mcp.policies.localRateLimit[0]" {
		t.Errorf("got %d %s", resp.StatusCode, body)
	}
	if resp, body := limitPost(t, base, "", "42", echoBody(true), true); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"text":"hi"`) {
		t.Errorf("a key that evaluates: %d %s", resp.StatusCode, body)
	}
	_, metrics := get(t, s.AdminHandler(), "/metrics")
	if !strings.Contains(metrics, `tailgate_limited_total{limit="mcp.policies.localRateLimit[0]",route="mcp"} 1`) {
		t.Errorf("metrics:\n%s", grepLines(metrics, "limited"))
	}
}
