package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/policy"
)

// Names a client makes up do not become metric labels: 20 calls with
// distinct 64 KiB tool names, denied or unknown, leave /metrics small and
// counted under tool="other". Failed before: each name was a label, for
// good.
func TestMetricsLabelOnlyListedNames(t *testing.T) {
	var logs syncBuffer
	s, base := serveLoopbackOpts(t, envDeniedConfig, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	awaitNamesLearnt(t, s)
	cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}})
	for i := range 20 {
		name := strings.Repeat(string(rune('a'+i)), 64<<10)
		if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name}); err == nil {
			t.Fatal("a made-up tool answered")
		}
	}
	// A made-up method is a label and a log field as well. Failed before:
	// each went into /metrics and the log whole.
	rs := rawInitialize(t, base+"/mcp", `{}`)
	for i := range 20 {
		resp := rs.post(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"%s"}`, i+1, strings.Repeat(string(rune('a'+i)), 64<<10)))
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	_, body := get(t, s.AdminHandler(), "/metrics")
	if len(body) > 64<<10 {
		t.Errorf("/metrics is %d bytes after 20 made-up names and 20 made-up methods", len(body))
	}
	for _, want := range []string{`tool="echo"`, `tool="other"`, `method="other"`, `method="tools/call"`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if len(line) > 4<<10 {
			t.Errorf("a log line of %d bytes: %.200s … %s", len(line), line, line[len(line)-300:])
			break
		}
	}
}

// A resource hidden by its name is hidden from reads too, not only from
// lists. Failed before: the read was judged by its URI alone.
func TestResourceReadJudgedByName(t *testing.T) {
	_, base := serveLoopback(t, denyingResource(demoConfig, "readme"))
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	res, err := cs.ListResources(context.Background(), nil)
	if err != nil || len(res.Resources) != 0 {
		t.Fatalf("list: %v %v, want the readme hidden", err, res)
	}
	if _, err := cs.ReadResource(context.Background(), &mcp.ReadResourceParams{URI: "demo://readme"}); err == nil || !strings.Contains(err.Error(), "not permitted") {
		t.Errorf("read of a resource hidden by name: %v", err)
	}
}

// A resource template hidden by its name is hidden from completion and
// from reads of the URIs it expands to, not only from lists. Failed
// before: completion on a template was judged with no name, and a read of
// an expansion by its URI alone.
func TestResourceTemplateJudgedByName(t *testing.T) {
	_, base := serveLoopback(t, denyingResource(demoConfig, "note"))
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	ctx := context.Background()
	if res, err := cs.ListResourceTemplates(ctx, nil); err != nil || len(res.ResourceTemplates) != 1 || res.ResourceTemplates[0].Name != "any-demo" {
		t.Fatalf("templates: %v %v, want the note template hidden, any-demo listed", err, res)
	}
	if _, err := cs.Complete(ctx, &mcp.CompleteParams{Ref: &mcp.CompleteReference{Type: "ref/resource", URI: "demo://notes/{name}"}, Argument: mcp.CompleteParamsArgument{Name: "name", Value: "a"}}); err == nil || !strings.Contains(err.Error(), "not permitted") {
		t.Errorf("completion on a template hidden by name: %v", err)
	}
	// demo://notes/alice expands note and any-demo (listed first): every
	// template it expands is judged. Failed before: the first one decided.
	if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "demo://notes/alice"}); err == nil || !strings.Contains(err.Error(), "not permitted") {
		t.Errorf("read of a hidden template's expansion: %v", err)
	}
	if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "demo://elsewhere/x"}); err != nil {
		t.Errorf("read of any-demo's expansion: %v", err)
	}
	// What the rule does not name is served: the prompt's completion, the
	// readme.
	if res, err := cs.Complete(ctx, &mcp.CompleteParams{Ref: &mcp.CompleteReference{Type: "ref/prompt", Name: "greet"}, Argument: mcp.CompleteParamsArgument{Name: "name", Value: "a"}}); err != nil || len(res.Completion.Values) != 2 {
		t.Errorf("prompt completion: %v %v", res, err)
	}
	if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "demo://readme"}); err != nil {
		t.Errorf("readme: %v", err)
	}
}

// A front replaced by a reload serves its sessions to their end and opens
// no new one, whatever reaches it.
func TestRetiredFrontOpensNoSession(t *testing.T) {
	s, base := serveLoopback(t, reloadConfig)
	old := frontOf(t, s, "mcp")
	reloadWith(t, s, strings.Replace(reloadConfig, "stdio: {cmd: DEMO}", "stdio: {cmd: DEMO, env: {GENERATION: '2'}}", 1))
	if frontOf(t, s, "mcp") == old {
		t.Fatal("the reload kept the front")
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	old.ServeHTTP(rec, req.WithContext(withSource(req.Context(), &policy.Source{Address: "127.0.0.1"})))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get(sessionIDHeader) != "" {
		t.Errorf("initialize on a retired front: %d, session %q", rec.Code, rec.Header().Get(sessionIDHeader))
	}
	// The route's current front opens sessions as before.
	cs := connect(t, base+"/mcp")
	cs.Close()
}

// denyingResource is cfg (a route named mcp) with rules that deny the
// resource named name and allow the rest.
func denyingResource(cfg, name string) string {
	return strings.Replace(cfg, "      backends:", `      policies:
        mcpAuthorization:
          rules:
          - deny: 'mcp.resource.name == "`+name+`"'
          - 'true'
      backends:`, 1)
}

// openSSE opens a legacy SSE stream from local address from (127.0.0.x)
// and reports the status; the stream stays open until the test ends.
func openSSE(t *testing.T, base, from string) int {
	t.Helper()
	return openSSEPath(t, base+"/sse", from)
}

// openSSEPath opens a session at url from local address from (127.0.0.x)
// and reports the status: a legacy SSE stream if url ends in /sse, which
// stays open until the test ends, else a Streamable HTTP initialize.
func openSSEPath(t *testing.T, url, from string) int {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	if !strings.HasSuffix(url, "/sse") {
		req, _ = http.NewRequest(http.MethodPost, url, strings.NewReader(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
	} else {
		t.Cleanup(func() { resp.Body.Close() })
	}
	return resp.StatusCode
}

// Session caps hold under concurrency and for legacy SSE streams too, and
// one peer cannot take every place. Failed before: the per-route cap was
// checked and taken in two steps (5 through a cap of 2), SSE streams
// bypassed it, and there was no per-peer cap.
func TestSessionCapsHold(t *testing.T) {
	t.Run("concurrent opens", func(t *testing.T) {
		_, base := serveLoopback(t, "config:\n  mcp:\n    maxSessions: 2\n"+demoConfig)
		var ok atomic.Int32
		var wg sync.WaitGroup
		for range 12 {
			wg.Go(func() {
				if openSSE(t, base, "127.0.0.1") == http.StatusOK {
					ok.Add(1)
				}
			})
		}
		wg.Wait()
		if n := ok.Load(); n != 2 {
			t.Errorf("%d SSE sessions through a cap of 2", n)
		}
	})
	t.Run("across routes", func(t *testing.T) {
		// The caps are the gateway's: more routes (or a reload) do not
		// multiply them. Failed before: each route had caps of its own.
		two := strings.Replace(demoConfig, "    routes:\n", `    routes:
    - name: other
      matches:
      - path: {pathPrefix: /other}
      backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: DEMO}
`, 1)
		s, base := serveLoopback(t, "config:\n  mcp:\n    maxSessions: 3\n    maxSessionsPerPeer: 2\n"+two)
		for _, p := range []string{"/other", "/sse"} {
			if code := openSSEPath(t, base+p, "127.0.0.1"); code != http.StatusOK {
				t.Fatalf("%s: %d", p, code)
			}
		}
		if code := openSSEPath(t, base+"/other", "127.0.0.1"); code != http.StatusServiceUnavailable {
			t.Errorf("a peer's third session, on a route where it has one: %d, want 503", code)
		}
		if code := openSSEPath(t, base+"/sse", "127.0.0.2"); code != http.StatusOK {
			t.Errorf("another peer: %d", code)
		}
		if code := openSSEPath(t, base+"/other", "127.0.0.3"); code != http.StatusServiceUnavailable {
			t.Errorf("a fourth session through a gateway cap of 3: %d, want 503", code)
		}
		reloadWith(t, s, "config:\n  mcp:\n    maxSessions: 4\n    maxSessionsPerPeer: 2\n"+strings.Replace(two, "stdio: {cmd: DEMO}", "stdio: {cmd: DEMO, env: {GENERATION: '2'}}", 1))
		if code := openSSEPath(t, base+"/other", "127.0.0.3"); code != http.StatusOK {
			t.Errorf("a fourth session once the cap is 4: %d", code)
		}
		if code := openSSEPath(t, base+"/other", "127.0.0.4"); code != http.StatusServiceUnavailable {
			t.Errorf("a reload's new front opened a session past the gateway's cap: %d, want 503", code)
		}
	})
	t.Run("sessionless callers count", func(t *testing.T) {
		// A sessionless caller's children hold a session's place. Failed
		// before: they were outside the gateway's caps.
		_, base := serveLoopback(t, "config:\n  mcp:\n    maxSessionsPerPeer: 1\n"+demoConfig)
		if resp, _ := do(t, sessionlessRequest(t, base, "tools/list")); resp.StatusCode != http.StatusOK {
			t.Fatalf("sessionless: %d", resp.StatusCode)
		}
		if code := openSSE(t, base, "127.0.0.1"); code != http.StatusServiceUnavailable {
			t.Errorf("a session past the peer's cap, its caller holding the place: %d, want 503", code)
		}
		if code := openSSE(t, base, "127.0.0.2"); code != http.StatusOK {
			t.Errorf("another peer: %d", code)
		}
	})
	t.Run("per peer", func(t *testing.T) {
		_, base := serveLoopback(t, demoConfig)
		for i := range defaultMaxSessionsPerPeer {
			if code := openSSE(t, base, "127.0.0.1"); code != http.StatusOK {
				t.Fatalf("session %d: %d", i, code)
			}
		}
		if code := openSSE(t, base, "127.0.0.1"); code != http.StatusServiceUnavailable {
			t.Errorf("a peer's session past its cap: %d, want 503", code)
		}
		if code := openSSE(t, base, "127.0.0.2"); code != http.StatusOK {
			t.Errorf("another peer locked out: %d", code)
		}
	})
}

// frontOf is the front serving route name.
func frontOf(t *testing.T, s *Server, name string) *mcpFront {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.fronts {
		if f.name == name {
			return f
		}
	}
	t.Fatalf("no front for route %q", name)
	return nil
}

// A peer's requests in flight are bounded, and reaching its bound does not
// hold up another peer. Failed before: nothing bounded them (30 concurrent
// 4 MB calls took the gateway to 1.95 GB).
func TestRequestBudget(t *testing.T) {
	s, base := serveLoopback(t, demoConfig)
	f := frontOf(t, s, "mcp")
	f.budget.mu.Lock()
	f.budget.maxCallsPerPeer = 2
	f.budget.mu.Unlock()
	rs := rawInitialize(t, base+"/mcp", `{}`)
	var streams []*http.Response
	for i := range 2 {
		resp := rs.post(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"slow","arguments":{"steps":100,"delayMs":100},"_meta":{"progressToken":%d}}}`, i+10, i))
		streams = append(streams, resp)
	}
	defer func() {
		for _, r := range streams {
			r.Body.Close()
		}
	}()
	resp := rs.post(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"message":"x"}}}`)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "from this peer") {
		t.Errorf("third request in flight: %d %s, want 429", resp.StatusCode, body)
	}
	if code := openSSE(t, base, "127.0.0.2"); code != http.StatusOK {
		t.Errorf("another peer: %d", code)
	}
	// The gateway's own bound: everyone is refused past it, with 503.
	set := func(calls, peerBytes int) {
		f.budget.mu.Lock()
		f.budget.maxCalls, f.budget.maxBytesPerPeer = calls, int64(peerBytes)
		f.budget.mu.Unlock()
	}
	set(2, 64<<20)
	if code := openSSEPath(t, base+"/mcp", "127.0.0.2"); code != http.StatusServiceUnavailable {
		t.Errorf("another peer's request past the gateway's bound: %d, want 503", code)
	}
	// Bytes in flight: a body past the peer's bytes is refused, 429.
	set(1024, 64)
	if code := openSSEPath(t, base+"/mcp", "127.0.0.3"); code != http.StatusTooManyRequests {
		t.Errorf("a body past the peer's bytes: %d, want 429", code)
	}
	set(1024, 64<<20)
	if code := openSSEPath(t, base+"/mcp", "127.0.0.3"); code != http.StatusOK {
		t.Errorf("within the bounds again: %d", code)
	}
}

// A reload reaches every running session: a changed backend's old sessions
// get the route's new rules at once, and a removed route's sessions end.
// Failed before: the old sessions kept the old rules, and lived on.
func TestReloadReachesEverySession(t *testing.T) {
	const cfgA = reloadConfig
	s, base := serveLoopback(t, cfgA)
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	reload := func(y string) { reloadWith(t, s, y) }
	echo := func() error {
		_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}})
		return err
	}
	if err := echo(); err != nil {
		t.Fatal(err)
	}
	// A changed backend and a new rule: the old session is judged by it.
	changed := strings.Replace(cfgA, "stdio: {cmd: DEMO}", "stdio: {cmd: DEMO, env: {GENERATION: '2'}}", 1)
	reload(strings.Replace(changed, "      backends:", "      policies:\n        mcpAuthorization:\n          rules: ['mcp.tool.name != \"echo\"']\n      backends:", 1))
	if err := echo(); err == nil || !strings.Contains(err.Error(), "not permitted") {
		t.Errorf("echo in a session of the replaced backend, after a rule denied it: %v", err)
	}
	// The route goes: its sessions end.
	reload(strings.Replace(cfgA, "name: mcp", "name: other\n      matches:\n      - path: {pathPrefix: /other}", 1))
	waitFor(t, "the removed route's children reaped", func() bool { return s.Stats().ChildrenRunning == 0 })
	if err := echo(); err == nil {
		t.Error("a session of a removed route still answers")
	}
}

// Connections cannot be held open for nothing: a POST body trickled byte
// by byte is cut off at the body deadline, and a legacy SSE stream whose
// session is never initialized is closed. Failed before: 1000 trickling
// connections and 2000 uninitialized SSE streams stayed open for good.
func TestIdleConnectionsEnd(t *testing.T) {
	s, base := serveLoopbackOpts(t, demoConfig, Options{Logger: badInputLogger(t), BodyReadTimeout: 300 * time.Millisecond, SSEInitTimeout: 300 * time.Millisecond})
	t.Run("trickled body", func(t *testing.T) {
		c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /mcp HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n{", strings.TrimPrefix(base, "http://"))
		start := time.Now()
		for time.Since(start) < 5*time.Second {
			if _, err := c.Write([]byte(" ")); err != nil {
				break
			}
			c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			var buf [512]byte
			if n, err := c.Read(buf[:]); n > 0 || (err != nil && !errors.Is(err, os.ErrDeadlineExceeded)) {
				break // answered or closed
			}
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("a trickled body held its connection for %v", took)
		}
	})
	t.Run("uninitialized SSE stream", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, base+"/sse", nil)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		done := make(chan struct{})
		go func() { io.Copy(io.Discard, resp.Body); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("an uninitialized SSE stream stayed open")
		}
		waitFor(t, "the session gone", func() bool { return s.Stats().Sessions == 0 })
	})
}

// reloadWith reloads s with cfgYAML (DEMO is the demo server).
func reloadWith(t *testing.T, s *Server, cfgYAML string) {
	t.Helper()
	cfg, err := Parse("reload.yaml", []byte(strings.ReplaceAll(cfgYAML, "DEMO", demoBin)), newEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
}
