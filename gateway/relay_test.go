package gateway

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

// rawSession is a Streamable HTTP session driven by hand, for what an SDK
// client would not do: leave a server request unanswered, watch the exact
// bytes.
type rawSession struct {
	t    *testing.T
	url  string
	id   string
	http *http.Client
}

func rawInitialize(t *testing.T, url, capabilities string) *rawSession {
	t.Helper()
	rs := &rawSession{t: t, url: url, http: &http.Client{}}
	resp := rs.post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":` + capabilities + `,"clientInfo":{"name":"raw","version":"1"}}}`)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	rs.id = resp.Header.Get(sessionIDHeader)
	if resp.StatusCode != http.StatusOK || rs.id == "" {
		t.Fatalf("initialize: %d %s", resp.StatusCode, body)
	}
	resp = rs.post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	resp.Body.Close()
	return rs
}

func (rs *rawSession) request(method, body string) *http.Response {
	rs.t.Helper()
	req, err := http.NewRequest(method, rs.url, strings.NewReader(body))
	if err != nil {
		rs.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if rs.id != "" {
		req.Header.Set(sessionIDHeader, rs.id)
	}
	resp, err := rs.http.Do(req)
	if err != nil {
		rs.t.Fatalf("%s: %v", method, err)
	}
	return resp
}

func (rs *rawSession) post(body string) *http.Response { return rs.request(http.MethodPost, body) }

// stream opens the session's standalone stream.
func (rs *rawSession) stream() *events {
	rs.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, rs.url, nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set(sessionIDHeader, rs.id)
	resp, err := rs.http.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		rs.t.Fatalf("GET stream: %v %v", err, resp)
	}
	rs.t.Cleanup(func() { resp.Body.Close() })
	return newEvents(resp.Body)
}

// events reads server-sent events' data lines in a goroutine, so a test
// can wait for one with a deadline.
type events struct{ c chan []byte }

func newEvents(r io.Reader) *events {
	e := &events{c: make(chan []byte, 64)}
	go func() {
		defer close(e.c)
		br := bufio.NewReader(r)
		for {
			line, err := br.ReadBytes('\n')
			if data, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
				e.c <- bytes.TrimSpace(data)
			}
			if err != nil {
				return
			}
		}
	}()
	return e
}

// next waits for the next event; ok is false when the stream ended.
func (e *events) next(t *testing.T, within time.Duration) (msg []byte, ok bool) {
	t.Helper()
	select {
	case msg, ok = <-e.c:
		return msg, ok
	case <-time.After(within):
		t.Fatalf("no event within %v", within)
		return nil, false
	}
}

// closeWays are the ways a session ends that must not wait on its client
// or its child.
var closeWays = []struct {
	name  string
	close func(t *testing.T, s *Server, rs *rawSession)
}{
	{"DELETE", func(t *testing.T, s *Server, rs *rawSession) {
		resp := rs.request(http.MethodDelete, "")
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Errorf("DELETE: %d", resp.StatusCode)
		}
	}},
	{"Shutdown", func(t *testing.T, s *Server, rs *rawSession) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}},
}

// A server that asks the client for its roots, unprompted, and a client
// that offers roots and never answers: closing the session must not wait
// for the answer (it used to wait forever, and leave the child running).
func TestUnansweredServerRequestHangsNothing(t *testing.T) {
	cfg := strings.Replace(demoConfig, "stdio: {cmd: DEMO}", "stdio: {cmd: DEMO, env: {"+demoserver.AskRootsEnv+": 100ms}}", 1)
	ways := append(closeWays, struct {
		name  string
		close func(t *testing.T, s *Server, rs *rawSession)
	}{"TTL", func(t *testing.T, s *Server, rs *rawSession) {
		waitFor(t, "the idle session to be closed", func() bool { return s.Stats().Sessions == 0 })
	}})
	for _, way := range ways {
		t.Run(way.name, func(t *testing.T) {
			s, base := serveLoopbackOpts(t, cfg, Options{Logger: badInputLogger(t), SessionTTL: 500 * time.Millisecond})
			rs := rawInitialize(t, base+"/mcp", `{"roots":{"listChanged":true}}`)
			ev := rs.stream()
			msg, ok := ev.next(t, 10*time.Second)
			if !ok || !bytes.Contains(msg, []byte(`"method":"roots/list"`)) {
				t.Fatalf("expected the child's roots/list on the stream, got %q", msg)
			}
			start := time.Now()
			way.close(t, s, rs)
			waitFor(t, "every child reaped", func() bool { return s.Stats().ChildrenRunning == 0 })
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("closing took %v", took)
			}
			if _, ok := ev.next(t, 5*time.Second); ok {
				t.Errorf("the standalone stream stayed open after the session closed")
			}
		})
	}
}

// A call that would run for ten minutes: DELETE and Shutdown end it, the
// client gets an MCP error on the call's stream, and no process is left.
func TestCloseCancelsCallsInFlight(t *testing.T) {
	for _, way := range closeWays {
		t.Run(way.name, func(t *testing.T) {
			s, base := serveLoopbackOpts(t, demoConfig, Options{Logger: badInputLogger(t), DrainTimeout: time.Second})
			rs := rawInitialize(t, base+"/mcp", `{}`)
			resp := rs.post(`{"jsonrpc":"2.0","id":"long","method":"tools/call","params":{"name":"slow","arguments":{"steps":6000,"delayMs":100},"_meta":{"progressToken":"p1"}}}`)
			defer resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Fatalf("a call with progress answered as %q", ct)
			}
			ev := newEvents(resp.Body)
			if msg, _ := ev.next(t, 10*time.Second); !bytes.Contains(msg, []byte(`"notifications/progress"`)) {
				t.Fatalf("first event %q, want progress", msg)
			}
			start := time.Now()
			done := make(chan struct{})
			go func() {
				defer close(done)
				way.close(t, s, rs)
			}()
			var last []byte
			for {
				msg, ok := ev.next(t, 10*time.Second)
				if !ok {
					break
				}
				last = msg
			}
			<-done
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("%s took %v with a call in flight", way.name, took)
			}
			m, err := jsonrpc.ParseMessage(last)
			if err != nil || !m.Error.Has() || string(m.Bytes(m.ID)) != `"long"` {
				t.Errorf("the call's last message: %q (%v), want an error response to id \"long\"", last, err)
			}
			if st := s.Stats(); st.ChildrenRunning != 0 {
				t.Errorf("children still running: %+v", st)
			}
		})
	}
}

// Everything a target sends passes through as it came, but for the id: an
// unknown method and unknown fields reach the child, and the child's answer
// (here, its "method not found" error) reaches the client unchanged.
func TestUnknownPassesThrough(t *testing.T) {
	_, base := serveLoopback(t, demoConfig)
	rs := rawInitialize(t, base+"/mcp", `{}`)
	for _, tc := range []struct{ name, body, want string }{
		{"unknown method", `{"jsonrpc":"2.0","id":"x-1","method":"vendor/frobnicate","params":{"a":1}}`, `"id":"x-1","error":{"code":-32601`},
		{"unknown fields", `{"jsonrpc":"2.0","id":12345678901234567890,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"},"vendorExtra":{"deep":[1,2]}},"vendorTop":true}`, `"id":12345678901234567890,"result":{"content":[{"type":"text","text":"hi"}]`},
		{"pretty-printed request", "{\n  \"jsonrpc\": \"2.0\",\n  \"id\": 3,\n  \"method\": \"ping\"\n}", `"id":3,"result":{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := rs.post(tc.body)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !bytes.Contains(body, []byte(tc.want)) {
				t.Errorf("got %s, want it to contain %s", body, tc.want)
			}
		})
	}
}

func ExampleMessage() {
	m, _ := jsonrpc.ParseMessage([]byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo"}}`))
	fmt.Println(m.MethodName(), string(m.Bytes(m.ID)), m.String(m.Path("params", "name")))
	// Output: tools/call 7 echo
}

// Shutdown returns by its context's deadline even when a child takes its
// whole stop grace to die (it ignores SIGTERM while a call hangs).
// Failed before: Shutdown waited for every child, past the deadline.
func TestShutdownHonoursItsContext(t *testing.T) {
	s, base := serveLoopbackOpts(t, demoConfig, Options{Logger: badInputLogger(t), StopGrace: 2 * time.Second, DrainTimeout: 50 * time.Millisecond})
	rs := rawInitialize(t, base+"/mcp", `{}`)
	go func() {
		// Answered (with an error) only when its session closes.
		req, _ := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"hang","arguments":{"ignoreTerm":true}}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set(sessionIDHeader, rs.id)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	waitFor(t, "the call in flight", func() bool { return s.inflight() > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	s.Shutdown(ctx)
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("Shutdown took %v with a 300ms deadline", took)
	}
}

// A session whose children take longer to start than sessionTtl (npx
// fetching a package) is not idle while its initialize is in flight, and
// its idle time starts when it is ready. Failed before: the TTL closed it
// mid-start ("session closed while starting").
func TestSlowStartOutlastsTTL(t *testing.T) {
	cfg := strings.Replace(demoConfig, "stdio: {cmd: DEMO}", `stdio: {cmd: sh, args: ["-c", "sleep 1; exec `+demoBin+`"]}`, 1)
	s, base := serveLoopbackOpts(t, cfg, Options{Logger: badInputLogger(t), SessionTTL: 300 * time.Millisecond})
	rs := rawInitialize(t, base+"/mcp", `{}`)
	resp := rs.post(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"still here"}}}`)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "still here") {
		t.Fatalf("call right after a slow start: %d %s", resp.StatusCode, body)
	}
	waitFor(t, "the session closed once idle past its TTL", func() bool { return s.Stats().Sessions == 0 })
}
