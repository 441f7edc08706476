package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// What the gateway answers itself, when no target does: a target that
// cannot start, a request without a session, a method it cannot route, a
// batch, a cancelled call. A client gets something it can act on: a
// JSON-RPC error with a valid code (never 0) that says what went wrong, an
// HTTP status with a reason, or, for a call it cancelled, nothing at all.

const (
	rawInit = `{"jsonrpc":"2.0","id":"init-1","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`
	// rawModernList is a sessionless (2026-07-28) tools/list.
	rawModernList = `{"jsonrpc":"2.0","id":"list-1","method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
)

// modernHeaders are a sessionless request's headers for method.
func modernHeaders(method string) map[string]string {
	return withHeaders(map[string]string{protocolVersionHeader: jsonrpc.ModernVersion, methodHeader: method})
}

// rpcAnswer is a JSON-RPC answer as a client reads it.
type rpcAnswer struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Result json.RawMessage `json:"result"`
}

// decodeAnswer reads the JSON-RPC answer in body: the body itself, or the
// last data line of an event stream.
func decodeAnswer(t *testing.T, contentType, body string) rpcAnswer {
	t.Helper()
	raw := body
	if strings.HasPrefix(contentType, "text/event-stream") {
		raw = ""
		for line := range strings.Lines(body) {
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				raw = strings.TrimSpace(data)
			}
		}
	}
	var a rpcAnswer
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		t.Fatalf("answer %q (%s) is not JSON-RPC: %v", body, contentType, err)
	}
	if a.JSONRPC != "2.0" {
		t.Errorf("answer %q: jsonrpc %q, want 2.0", raw, a.JSONRPC)
	}
	return a
}

// wantError checks that a is an error answer to id with code, whose
// message contains each of says.
func wantError(t *testing.T, a rpcAnswer, id string, code int, says ...string) {
	t.Helper()
	if a.Error == nil {
		t.Fatalf("answer to %s: no error (result %s)", id, a.Result)
	}
	if string(a.ID) != id {
		t.Errorf("error answers id %s, want %s", a.ID, id)
	}
	if a.Error.Code != code {
		t.Errorf("error code %d (%q), want %d", a.Error.Code, a.Error.Message, code)
	}
	for _, s := range says {
		if !strings.Contains(a.Error.Message, s) {
			t.Errorf("error message %q does not say %q", a.Error.Message, s)
		}
	}
}

// sseSession opens a legacy SSE session at base and returns its stream
// and the URL its messages are posted to.
func sseSession(t *testing.T, base string) (*events, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/sse", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /sse: %d", resp.StatusCode)
	}
	ev := newEvents(resp.Body)
	endpoint, ok := ev.next(t, 10*time.Second)
	if !ok || !bytes.HasPrefix(endpoint, []byte("/sse?")) {
		t.Fatalf("endpoint event %q", endpoint)
	}
	return ev, base + string(endpoint)
}

// postSSE posts body to a legacy SSE session, which accepts it at once.
func postSSE(t *testing.T, url, body string) {
	t.Helper()
	code, _, got := badRequest(t, http.MethodPost, url, body, map[string]string{"Content-Type": "application/json"})
	if code != http.StatusAccepted {
		t.Fatalf("POST %s: %d %q, want 202", body, code, got)
	}
}

// A target whose program does not exist, or exits at once: the client's
// first request gets a JSON-RPC internal error (-32603, not 0) that names
// the target, in every way a client can start, and nothing is left open.
// Failed before: code 0.
func TestFailedStartAnswersWithCode(t *testing.T) {
	targets := []struct{ name, stdio string }{
		{"no such program", `{cmd: /nonexistent/tailgate-test-server}`},
		{"exits at once", `{cmd: /bin/sh, args: ["-c", "exit 3"]}`},
	}
	ways := []struct {
		name string
		// backend is added to the backend's mcp block.
		backend string
		// ask starts a client and returns its answer to its first request.
		ask func(t *testing.T, base string) rpcAnswer
		// id is the request's id.
		id string
	}{
		{"session initialize", "", func(t *testing.T, base string) rpcAnswer {
			code, hdr, body := badRequest(t, http.MethodPost, base+"/mcp", rawInit, mcpHeaders)
			if code != http.StatusOK || hdr.Get(sessionIDHeader) != "" {
				t.Errorf("failed initialize: %d, session %q; want 200 and no session", code, hdr.Get(sessionIDHeader))
			}
			return decodeAnswer(t, hdr.Get("Content-Type"), body)
		}, `"init-1"`},
		{"stateless route", "          statefulMode: stateless\n", func(t *testing.T, base string) rpcAnswer {
			code, hdr, body := badRequest(t, http.MethodPost, base+"/mcp", rawInit, mcpHeaders)
			if code != http.StatusOK {
				t.Errorf("failed initialize: %d, want 200", code)
			}
			return decodeAnswer(t, hdr.Get("Content-Type"), body)
		}, `"init-1"`},
		{"sessionless request", "", func(t *testing.T, base string) rpcAnswer {
			code, hdr, body := badRequest(t, http.MethodPost, base+"/mcp", rawModernList, modernHeaders("tools/list"))
			if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
				t.Errorf("failed sessionless start: %d (Retry-After %q), want 503 with Retry-After", code, hdr.Get("Retry-After"))
			}
			return decodeAnswer(t, hdr.Get("Content-Type"), body)
		}, `"list-1"`},
		{"legacy SSE initialize", "", func(t *testing.T, base string) rpcAnswer {
			ev, url := sseSession(t, base)
			postSSE(t, url, rawInit)
			msg, ok := ev.next(t, 10*time.Second)
			if !ok {
				t.Fatal("the SSE stream ended without an answer to initialize")
			}
			return decodeAnswer(t, "application/json", string(msg))
		}, `"init-1"`},
	}
	for _, target := range targets {
		for _, way := range ways {
			t.Run(target.name+"/"+way.name, func(t *testing.T) {
				cfg := strings.Replace(demoConfig, "      - mcp:\n", "      - mcp:\n"+way.backend, 1)
				cfg = strings.Replace(cfg, "          - name: demo\n            stdio: {cmd: DEMO}",
					"          - name: broken-target\n            stdio: "+target.stdio, 1)
				s, base := serveLoopbackOpts(t, cfg, Options{Logger: badInputLogger(t)})
				a := way.ask(t, base)
				wantError(t, a, way.id, jsonrpc.CodeInternalError, "broken-target")
				waitFor(t, "no child left", func() bool { return s.Stats().ChildrenRunning == 0 })
				if way.name != "legacy SSE initialize" {
					if st := s.Stats(); st.Sessions != 0 {
						t.Errorf("a failed start left %d sessions", st.Sessions)
					}
				}
			})
		}
	}
}

// A route that keeps sessions, asked without one: 400 with a reason that
// names what is missing and what to do, and nothing started.
func TestRequestWithoutSession(t *testing.T) {
	s, base := serveLoopbackOpts(t, demoConfig, Options{Logger: badInputLogger(t)})
	for _, tc := range []struct {
		name, method, path, body string
		header                   map[string]string
		says                     []string
	}{
		{"a request", http.MethodPost, "/mcp", `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, mcpHeaders,
			[]string{"missing Mcp-Session-Id header", "send initialize first"}},
		{"a call", http.MethodPost, "/mcp", `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"message":"x"}}}`, mcpHeaders,
			[]string{"missing Mcp-Session-Id header", "send initialize first"}},
		{"a notification", http.MethodPost, "/mcp", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, mcpHeaders,
			[]string{"missing Mcp-Session-Id header", "send initialize first"}},
		{"the stream", http.MethodGet, "/mcp", "", map[string]string{"Accept": "text/event-stream"},
			[]string{"GET requires an Mcp-Session-Id header"}},
		{"DELETE", http.MethodDelete, "/mcp", "", nil,
			[]string{"DELETE requires an Mcp-Session-Id header"}},
		{"a legacy SSE message", http.MethodPost, "/sse", `{"jsonrpc":"2.0","id":4,"method":"tools/list"}`, map[string]string{"Content-Type": "application/json"},
			[]string{"missing sessionId"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, hdr, body := badRequest(t, tc.method, base+tc.path, tc.body, tc.header)
			if code != http.StatusBadRequest {
				t.Errorf("%s %s without a session: %d %q, want 400", tc.method, tc.path, code, body)
			}
			for _, s := range tc.says {
				if !strings.Contains(body, s) {
					t.Errorf("answer %q does not say %q", body, s)
				}
			}
			if hdr.Get(sessionIDHeader) != "" {
				t.Errorf("a session was opened: %q", hdr.Get(sessionIDHeader))
			}
		})
	}
	if st := s.Stats(); st.ChildrenStarted != 0 || st.Sessions != 0 {
		t.Errorf("requests without a session started something: %+v", st)
	}
	stillServes(t, base)
}

// twoTargets is the demo server twice, as targets a and b of one backend
// (their names prefixed a_ and b_).
var twoTargets = strings.Replace(demoConfig, "          - name: demo\n            stdio: {cmd: DEMO}",
	"          - name: a\n            stdio: {cmd: DEMO}\n          - name: b\n            stdio: {cmd: DEMO}", 1)

// A method tailgate does not know, among several targets, with nothing
// that says which target it is for: -32601, which says why, from the
// gateway itself, on a session and without one; a name of no target is
// -32602. One a prefixed name routes reaches its target, whose own answer
// comes back.
func TestUnknownMethodAmongTargets(t *testing.T) {
	s, base := serveLoopbackOpts(t, twoTargets, Options{Logger: badInputLogger(t)})
	rs := rawInitialize(t, base+"/mcp", `{}`)
	for _, tc := range []struct {
		name, body string
		code       int
		says       []string
	}{
		{"unknown method", `{"jsonrpc":"2.0","id":"u-1","method":"vendor/frobnicate","params":{"a":1}}`,
			jsonrpc.CodeMethodNotFound, []string{"tailgate cannot tell which", "2 targets", `"vendor/frobnicate"`}},
		{"unknown method, a name of no target", `{"jsonrpc":"2.0","id":"u-1","method":"vendor/frobnicate","params":{"name":"c_x"}}`,
			jsonrpc.CodeMethodNotFound, []string{"tailgate cannot tell which"}},
		{"unknown method routed by its name", `{"jsonrpc":"2.0","id":"u-1","method":"vendor/frobnicate","params":{"name":"a_x"}}`,
			jsonrpc.CodeMethodNotFound, []string{"vendor/frobnicate"}},
		{"unknown tool", `{"jsonrpc":"2.0","id":"u-1","method":"tools/call","params":{"name":"c_echo","arguments":{}}}`,
			jsonrpc.CodeInvalidParams, []string{`unknown tool "c_echo"`}},
	} {
		t.Run(tc.name+"/session", func(t *testing.T) {
			resp := rs.post(tc.body)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("status %d, want 200 with the error", resp.StatusCode)
			}
			wantError(t, decodeAnswer(t, resp.Header.Get("Content-Type"), string(body)), `"u-1"`, tc.code, tc.says...)
		})
		t.Run(tc.name+"/sessionless", func(t *testing.T) {
			body := strings.Replace(tc.body, `"params":{`, `"params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}},`, 1)
			m, err := jsonrpc.ParseMessage([]byte(body))
			if err != nil {
				t.Fatal(err)
			}
			h := modernHeaders(m.MethodName())
			if name := m.String(m.Path("params", "name")); name != "" {
				h[nameHeader] = name
			}
			code, hdr, got := badRequest(t, http.MethodPost, base+"/mcp", body, h)
			// SEP-2243: a 2026-07-28 error is also an HTTP status.
			want := map[int]int{jsonrpc.CodeMethodNotFound: http.StatusNotFound, jsonrpc.CodeInvalidParams: http.StatusBadRequest}[tc.code]
			if code != want {
				t.Errorf("status %d, want %d", code, want)
			}
			wantError(t, decodeAnswer(t, hdr.Get("Content-Type"), got), `"u-1"`, tc.code, tc.says...)
		})
	}
	// The session carries on.
	resp := rs.post(`{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"b_echo","arguments":{"message":"still here"}}}`)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(body, []byte(`"text":"still here"`)) {
		t.Errorf("the session after unknown methods: %s", body)
	}
	if st := s.Stats(); st.ChildrenRunning == 0 {
		t.Errorf("no children running: %+v", st)
	}
}

// A JSON-RPC batch (an array), which MCP dropped in 2025-06-18: 400 with a
// reason that says batches are not supported, before any session or child
// sees it, with or without a session; the session carries on.
func TestBatchRefused(t *testing.T) {
	s, base := serveLoopbackOpts(t, demoConfig, Options{Logger: badInputLogger(t)})
	rs := rawInitialize(t, base+"/mcp", `{}`)
	started := s.Stats().ChildrenStarted
	batches := []struct{ name, body string }{
		{"of one request", `[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]`},
		{"of two", `[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]`},
		{"of an initialize", "[" + rawInit + "]"},
		{"of a notification", `[{"jsonrpc":"2.0","method":"notifications/initialized"}]`},
		{"empty", ` [ ] `},
	}
	ways := []struct {
		name   string
		header map[string]string
	}{
		{"without a session", mcpHeaders},
		{"on a session", withHeaders(map[string]string{sessionIDHeader: rs.id})},
		{"sessionless", modernHeaders("tools/list")},
	}
	for _, b := range batches {
		for _, way := range ways {
			t.Run(b.name+"/"+way.name, func(t *testing.T) {
				code, hdr, body := badRequest(t, http.MethodPost, base+"/mcp", b.body, way.header)
				if code != http.StatusBadRequest || !strings.Contains(body, "batch") || !strings.Contains(body, "not supported") {
					t.Errorf("batch: %d %q, want 400 saying batches are not supported", code, body)
				}
				if hdr.Get(sessionIDHeader) != "" {
					t.Errorf("a batch opened a session: %q", hdr.Get(sessionIDHeader))
				}
			})
		}
	}
	if st := s.Stats(); st.ChildrenStarted != started || st.Sessions != 1 {
		t.Errorf("batches started something: %+v (children started before: %d)", st, started)
	}
	resp := rs.post(`{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{"message":"still here"}}}`)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(body, []byte(`"text":"still here"`)) {
		t.Errorf("the session after batches: %s", body)
	}
}

// logLines is a gateway log a test can wait on.
type logLines struct{ syncBuffer }

func (l *logLines) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// A call the client cancels (notifications/cancelled) gets no response at
// all: the client has forgotten its id (the TypeScript SDK reports "unknown
// message ID" for one), while the child is told and stops. Failed before:
// an error with code 0.
func TestCancelledCallGetsNoResponse(t *testing.T) {
	const call = `{"jsonrpc":"2.0","id":"slow-1","method":"tools/call","params":{"name":"slow","arguments":{"steps":6000,"delayMs":100},"_meta":{"progressToken":"p1"}}}`
	const cancel = `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"slow-1","reason":"the user gave up"}}`
	// childStopped waits until the child says it stopped the call: by then
	// tailgate has handled the cancellation.
	childStopped := func(t *testing.T, logs *logLines) {
		waitFor(t, "the child to stop the cancelled call", func() bool { return strings.Contains(logs.String(), "slow: cancelled after") })
	}
	isCallAnswer := func(msg []byte) bool {
		m, err := jsonrpc.ParseMessage(msg)
		return err == nil && m.IsResponse() && string(m.Bytes(m.ID)) == `"slow-1"`
	}

	t.Run("Streamable HTTP", func(t *testing.T) {
		var logs logLines
		_, base := serveLoopbackOpts(t, demoConfig, Options{Logger: logs.logger()})
		rs := rawInitialize(t, base+"/mcp", `{}`)
		resp := rs.post(call)
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("call with progress: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		ev := newEvents(resp.Body)
		if msg, _ := ev.next(t, 10*time.Second); !bytes.Contains(msg, []byte(`"notifications/progress"`)) {
			t.Fatalf("first event %q, want progress", msg)
		}
		cresp := rs.post(cancel)
		cresp.Body.Close()
		if cresp.StatusCode != http.StatusAccepted {
			t.Errorf("notifications/cancelled: %d, want 202", cresp.StatusCode)
		}
		// The call's stream ends, with progress at most, and no answer.
		start := time.Now()
		for {
			msg, ok := ev.next(t, 10*time.Second)
			if !ok {
				break
			}
			if isCallAnswer(msg) {
				t.Errorf("the cancelled call was answered: %s", msg)
			}
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("the cancelled call's stream ended after %v", took)
		}
		childStopped(t, &logs)
		// The session carries on.
		resp = rs.post(`{"jsonrpc":"2.0","id":"after","method":"ping"}`)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Contains(body, []byte(`"id":"after","result":{}`)) {
			t.Errorf("ping after the cancellation: %s", body)
		}
	})

	t.Run("legacy SSE", func(t *testing.T) {
		var logs logLines
		_, base := serveLoopbackOpts(t, demoConfig, Options{Logger: logs.logger()})
		ev, url := sseSession(t, base)
		postSSE(t, url, rawInit)
		if msg, _ := ev.next(t, 10*time.Second); !bytes.Contains(msg, []byte(`"id":"init-1","result"`)) {
			t.Fatalf("initialize: %s", msg)
		}
		postSSE(t, url, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
		postSSE(t, url, call)
		if msg, _ := ev.next(t, 10*time.Second); !bytes.Contains(msg, []byte(`"notifications/progress"`)) {
			t.Fatalf("first event %q, want progress", msg)
		}
		postSSE(t, url, cancel)
		childStopped(t, &logs)
		// Everything before the ping's answer: progress at most, no answer
		// to the cancelled call.
		postSSE(t, url, `{"jsonrpc":"2.0","id":"after","method":"ping"}`)
		for {
			msg, ok := ev.next(t, 10*time.Second)
			if !ok {
				t.Fatal("the session's stream ended")
			}
			if isCallAnswer(msg) {
				t.Errorf("the cancelled call was answered: %s", msg)
			}
			if bytes.Contains(msg, []byte(`"id":"after"`)) {
				break
			}
		}
	})
}
