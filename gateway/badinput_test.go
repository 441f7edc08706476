package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

// What a client that sends bad input gets from the MCP front: a status it
// can act on, a message that says what was wrong, and a gateway that
// carries on serving everyone else.

// badRequest sends method url with body and headers, and returns the
// status and body.
func badRequest(t *testing.T, method, url, body string, header map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

var mcpHeaders = map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}

func withHeaders(more map[string]string) map[string]string {
	h := make(map[string]string)
	for k, v := range mcpHeaders {
		h[k] = v
	}
	for k, v := range more {
		h[k] = v
	}
	return h
}

// stillServes checks that a real client can still use the gateway.
func stillServes(t *testing.T, base string) {
	t.Helper()
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "still here"}})
	if err != nil || res.Content[0].(*mcp.TextContent).Text != "still here" {
		t.Fatalf("gateway after bad input: %v %+v", err, res)
	}
}

func TestBadInputOversizedBody(t *testing.T) {
	s, base := serveLoopbackOpts(t, demoConfig, Options{Logger: badInputLogger(t)})
	// An initialize padded past go-sdk's 4 MiB limit on a request body.
	big := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"big","version":"1"},"pad":"` +
		strings.Repeat("x", mcp.DefaultMaxRequestBodyBytes) + `"}}`
	code, _, body := badRequest(t, http.MethodPost, base+"/mcp", big, mcpHeaders)
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "exceeds") {
		t.Errorf("oversized initialize: %d %q, want 413", code, body)
	}
	if st := s.Stats(); st.ChildrenStarted != 0 || st.Sessions != 0 {
		t.Errorf("an oversized initialize started something: %+v", st)
	}
	// The same on a session: 413, and the session carries on.
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	call := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"` + strings.Repeat("y", mcp.DefaultMaxRequestBodyBytes) + `"}}}`
	code, _, body = badRequest(t, http.MethodPost, base+"/mcp", call, withHeaders(map[string]string{"Mcp-Session-Id": cs.ID()}))
	if code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized call on a session: %d %q, want 413", code, body)
	}
	if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err != nil {
		t.Errorf("session after an oversized call: %v", err)
	}
	stillServes(t, base)
}

func TestBadInputWrongAccept(t *testing.T) {
	s, base := serveLoopbackOpts(t, demoConfig, Options{Logger: badInputLogger(t)})
	for _, accept := range []string{"application/json", "text/event-stream", "text/html", ""} {
		code, _, body := badRequest(t, http.MethodPost, base+"/mcp", fuzzInitialize, withHeaders(map[string]string{"Accept": accept}))
		if code != http.StatusBadRequest || !strings.Contains(body, "Accept must contain both 'application/json' and 'text/event-stream'") {
			t.Errorf("Accept %q: %d %q, want 400 naming both types", accept, code, body)
		}
	}
	// A GET (the event stream) needs text/event-stream.
	code, _, body := badRequest(t, http.MethodGet, base+"/mcp", "", map[string]string{"Accept": "application/json", "Mcp-Session-Id": "x"})
	if code != http.StatusBadRequest || !strings.Contains(body, "text/event-stream") {
		t.Errorf("GET with Accept application/json: %d %q, want 400", code, body)
	}
	// And a wrong Content-Type is 415.
	code, _, body = badRequest(t, http.MethodPost, base+"/mcp", fuzzInitialize, withHeaders(map[string]string{"Content-Type": "text/plain"}))
	if code != http.StatusUnsupportedMediaType {
		t.Errorf("Content-Type text/plain: %d %q, want 415", code, body)
	}
	if st := s.Stats(); st.ChildrenStarted != 0 {
		t.Errorf("refused requests started children: %+v", st)
	}
	stillServes(t, base)
}

func TestBadInputUnknownSession(t *testing.T) {
	_, base := serveLoopbackOpts(t, demoConfig, Options{Logger: badInputLogger(t)})
	unknown := map[string]string{"Mcp-Session-Id": "NOSUCHSESSION"}
	for _, tc := range []struct{ method, body string }{
		{http.MethodPost, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`},
		{http.MethodGet, ""},
		{http.MethodDelete, ""},
	} {
		h := withHeaders(unknown)
		if tc.method == http.MethodGet {
			h["Accept"] = "text/event-stream"
		}
		code, _, body := badRequest(t, tc.method, base+"/mcp", tc.body, h)
		if code != http.StatusNotFound || !strings.Contains(body, "session not found") {
			t.Errorf("%s with an unknown session: %d %q, want 404", tc.method, code, body)
		}
	}
	// A session id the client made up for its initialize is not adopted
	// either: the client must start without one.
	code, hdr, _ := badRequest(t, http.MethodPost, base+"/mcp", fuzzInitialize, withHeaders(unknown))
	if code != http.StatusNotFound || hdr.Get("Mcp-Session-Id") != "" {
		t.Errorf("initialize on a made-up session: %d %v, want 404", code, hdr)
	}
	stillServes(t, base)
}

// go-sdk refuses a body that is not JSON-RPC before any session sees it:
// the client gets 400 with a text message that says the payload is
// malformed, not a JSON-RPC -32700 parse error (there is no request id to
// answer). A session that gets such a body carries on.
func TestBadInputMalformedJSON(t *testing.T) {
	s, base := serveLoopbackOpts(t, demoConfig, Options{Logger: badInputLogger(t)})
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":1,"method":`,
		`not json at all`,
		`{"jsonrpc":"2.0","id":1,"method":"initialize"`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"},]`,
		"\xff\xfe{}",
	} {
		code, hdr, got := badRequest(t, http.MethodPost, base+"/mcp", body, mcpHeaders)
		if code != http.StatusBadRequest || !strings.Contains(got, "malformed payload") {
			t.Errorf("body %q: %d %q, want 400 malformed payload", body, code, got)
		}
		if strings.HasPrefix(hdr.Get("Content-Type"), "application/json") || strings.Contains(got, "-32700") {
			t.Errorf("body %q: answered as JSON-RPC (%s %q); go-sdk answered in text before", body, hdr.Get("Content-Type"), got)
		}
		if hdr.Get("Mcp-Session-Id") != "" {
			t.Errorf("body %q: a session was opened: %v", body, hdr)
		}
	}
	// The empty body.
	if code, _, got := badRequest(t, http.MethodPost, base+"/mcp", "", mcpHeaders); code != http.StatusBadRequest || !strings.Contains(got, "non-empty body") {
		t.Errorf("empty body: %d %q, want 400", code, got)
	}
	if st := s.Stats(); st.ChildrenStarted != 0 || st.Sessions != 0 {
		t.Errorf("malformed bodies started something: %+v", st)
	}
	// On a live session: 400, and the session goes on.
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	code, _, got := badRequest(t, http.MethodPost, base+"/mcp", `{"jsonrpc":"2.0","id":5,`, withHeaders(map[string]string{"Mcp-Session-Id": cs.ID()}))
	if code != http.StatusBadRequest || !strings.Contains(got, "malformed payload") {
		t.Errorf("malformed body on a session: %d %q", code, got)
	}
	if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err != nil {
		t.Errorf("session after a malformed body: %v", err)
	}
}

// A client that opens a connection and sends its headers too slowly is
// cut off by Options.ReadHeaderTimeout, without an answer.
func TestBadInputSlowHeaders(t *testing.T) {
	const timeout = 300 * time.Millisecond
	_, base := serveLoopbackOpts(t, demoConfig, Options{Logger: badInputLogger(t), ReadHeaderTimeout: timeout})
	addr := strings.TrimPrefix(base, "http://")
	for _, partial := range []string{
		"POST /mcp HT", // a partial request line
		"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept:", // a partial header block
		"", // nothing at all
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := io.WriteString(c, partial); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var got strings.Builder
		_, err = io.Copy(&got, c)
		took := time.Since(start)
		c.Close()
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%q: connection not closed by the server: %v after %v", partial, err, took)
			continue
		}
		// net/http closes a connection whose headers time out; a partial
		// request line it answers with a bare 400 first.
		if got.Len() > 0 && !strings.HasPrefix(got.String(), "HTTP/1.1 400 Bad Request\r\n") {
			t.Errorf("%q: the server answered %q; want the connection closed", partial, got.String())
		}
		// Closed by the timeout: not before it, and soon after it (the
		// slack is for a loaded machine).
		if took < timeout-50*time.Millisecond || took > 3*time.Second {
			t.Errorf("%q: closed after %v, want about %v", partial, took, timeout)
		}
	}
	// A client that sends its headers in time is served.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("DELETE without a session: %d, want 400", resp.StatusCode)
	}
}

// badInputLogger logs the gateway's events to the test's log.
func badInputLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(demoserver.LogWriter(t), nil))
}
