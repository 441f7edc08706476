package gateway

// BenchmarkRelayedToolCall measures what the gateway costs per relayed MCP
// tools/call: time, bytes and allocations on the gateway's side of one
// call from a client on loopback to the demo stdio server and back.
//
// -benchmem counts every allocation in the process, so the client here
// allocates nothing per call: it does the MCP handshake once, then writes
// a request built once (only the digits of its JSON-RPC id change) on one
// persistent connection and parses the response in place with a reused
// bufio.Reader. The benchmark checks that (benchClientAllocs) before it
// starts the gateway, so B/op and allocs/op are the gateway's alone. The
// child process is another process: its allocations are not counted, its
// time is.
//
// It uses only the config-level API (Parse, New, Serve, Shutdown), so it
// measures the data plane whatever its implementation.
//
//	go test -run '^$' -bench RelayedToolCall -benchmem -benchtime=2000x -count=3 -timeout 10m ./gateway/

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

const (
	// benchProtocol is the protocol version the client asks for: a
	// session-based one, as most clients in the field use.
	benchProtocol = "2025-11-25"
	benchMessage  = "relay-bench-payload"
	// benchIDDigits is the width of the spliced JSON-RPC id's counter.
	benchIDDigits = 10
	// benchCallBody is the tools/call sent on every iteration; its id is
	// a string "c" + benchIDDigits digits, rewritten in place per call.
	benchCallBody = `{"jsonrpc":"2.0","id":"c0000000000","method":"tools/call","params":{"name":"echo","arguments":{"message":"` + benchMessage + `"}}}`
	benchIDPrefix = `"id":"c`
)

var (
	benchHTTP11          = []byte("HTTP/1.")
	benchHdrLength       = []byte("Content-Length")
	benchHdrType         = []byte("Content-Type")
	benchHdrTE           = []byte("Transfer-Encoding")
	benchHdrConnection   = []byte("Connection")
	benchHdrSession      = []byte("Mcp-Session-Id")
	benchChunked         = []byte("chunked")
	benchClose           = []byte("close")
	benchEventStream     = []byte("text/event-stream")
	benchData            = []byte("data:")
	benchErrorField      = []byte(`"error":`)
	benchIsError         = []byte(`"isError":true`)
	benchEchoText        = []byte(`"text":"` + benchMessage + `"`)
	errBenchLineTooLong  = errors.New("response line longer than the read buffer")
	errBenchNoBodyLength = errors.New("response has neither Content-Length nor chunked encoding")
)

// benchResp is one HTTP/1.1 response, parsed in place into buffers that
// are reused from call to call.
type benchResp struct {
	status        int
	contentLength int // -1: not given
	chunked       bool
	sse           bool
	close         bool
	sessionID     []byte
	body          []byte // the body, de-chunked
	data          []byte // scratch: one SSE event's data
}

// read consumes exactly one response from br.
func (r *benchResp) read(br *bufio.Reader) error {
	r.status, r.contentLength, r.chunked, r.sse, r.close = 0, -1, false, false, false
	r.sessionID, r.body = r.sessionID[:0], r.body[:0]

	line, err := benchLine(br)
	if err != nil {
		return fmt.Errorf("status line: %w", err)
	}
	if len(line) < 12 || !bytes.HasPrefix(line, benchHTTP11) || line[8] != ' ' {
		return fmt.Errorf("bad status line %q", line)
	}
	status, ok := benchAtoi(line[9:12])
	if !ok {
		return fmt.Errorf("bad status line %q", line)
	}
	r.status = status
	for {
		if line, err = benchLine(br); err != nil {
			return fmt.Errorf("headers: %w", err)
		}
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return fmt.Errorf("bad header line %q", line)
		}
		name, val := line[:colon], bytes.TrimSpace(line[colon+1:])
		switch {
		case bytes.EqualFold(name, benchHdrLength):
			n, ok := benchAtoi(val)
			if !ok {
				return fmt.Errorf("bad Content-Length %q", val)
			}
			r.contentLength = n
		case bytes.EqualFold(name, benchHdrTE):
			r.chunked = bytes.EqualFold(val, benchChunked)
		case bytes.EqualFold(name, benchHdrType):
			r.sse = len(val) >= len(benchEventStream) && bytes.EqualFold(val[:len(benchEventStream)], benchEventStream)
		case bytes.EqualFold(name, benchHdrConnection):
			r.close = bytes.EqualFold(val, benchClose)
		case bytes.EqualFold(name, benchHdrSession):
			r.sessionID = append(r.sessionID, val...)
		}
	}

	switch {
	case r.chunked:
		for {
			if line, err = benchLine(br); err != nil {
				return fmt.Errorf("chunk size: %w", err)
			}
			if i := bytes.IndexByte(line, ';'); i >= 0 {
				line = line[:i]
			}
			size, ok := benchHex(bytes.TrimSpace(line))
			if !ok {
				return fmt.Errorf("bad chunk size %q", line)
			}
			if size == 0 {
				break
			}
			if err := r.readBody(br, size); err != nil {
				return err
			}
			if line, err = benchLine(br); err != nil || len(line) != 0 {
				return fmt.Errorf("chunk not followed by CRLF: %q %v", line, err)
			}
		}
		for { // trailers
			if line, err = benchLine(br); err != nil {
				return fmt.Errorf("trailers: %w", err)
			}
			if len(line) == 0 {
				return nil
			}
		}
	case r.contentLength >= 0:
		return r.readBody(br, r.contentLength)
	case r.status == 204 || r.status == 304 || r.status < 200:
		return nil
	default:
		return errBenchNoBodyLength
	}
}

// describe says how the last response was framed.
func (r *benchResp) describe() string {
	kind, framing := "application/json", "Content-Length"
	if r.sse {
		kind = "text/event-stream"
	}
	if r.chunked {
		framing = "chunked"
	}
	return fmt.Sprintf("the gateway answers tools/call with %s, %s, %d body bytes", kind, framing, len(r.body))
}

// readBody appends n bytes from br to r.body.
func (r *benchResp) readBody(br *bufio.Reader, n int) error {
	l := len(r.body)
	if cap(r.body)-l < n {
		nb := make([]byte, l, 2*(l+n))
		copy(nb, r.body)
		r.body = nb
	}
	r.body = r.body[:l+n]
	if _, err := io.ReadFull(br, r.body[l:]); err != nil {
		return fmt.Errorf("body: %w", err)
	}
	return nil
}

// payload returns the JSON-RPC message in the body that contains want (an
// "id" member): the body itself for application/json, else the data of
// the first SSE event that contains it (events without data, such as a
// resumption primer, and notifications are passed over).
func (r *benchResp) payload(want []byte) ([]byte, bool) {
	if !r.sse {
		return r.body, bytes.Contains(r.body, want)
	}
	r.data = r.data[:0]
	rest := r.body
	for len(rest) > 0 {
		var line []byte
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			line, rest = rest, nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 { // end of an event
			if len(r.data) > 0 && bytes.Contains(r.data, want) {
				return r.data, true
			}
			r.data = r.data[:0]
			continue
		}
		if bytes.HasPrefix(line, benchData) {
			v := line[len(benchData):]
			if len(v) > 0 && v[0] == ' ' {
				v = v[1:]
			}
			if len(r.data) > 0 {
				r.data = append(r.data, '\n')
			}
			r.data = append(r.data, v...)
		}
	}
	return r.data, len(r.data) > 0 && bytes.Contains(r.data, want)
}

// benchLine reads one line, without its CR LF; it is valid until the next
// read from br.
func benchLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, errBenchLineTooLong
	}
	if err != nil {
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func benchAtoi(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func benchHex(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 7 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		n = n<<4 | int(c)
	}
	return n, true
}

// benchRequest builds a raw HTTP/1.1 POST to /mcp.
func benchRequest(host, session, proto, body string) []byte {
	var b strings.Builder
	b.WriteString("POST /mcp HTTP/1.1\r\nHost: " + host + "\r\n")
	b.WriteString("Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n")
	if session != "" {
		b.WriteString("Mcp-Session-Id: " + session + "\r\n")
	}
	if proto != "" {
		b.WriteString("Mcp-Protocol-Version: " + proto + "\r\n")
	}
	b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	return []byte(b.String())
}

// benchClient is one MCP session on one connection, calling echo.
type benchClient struct {
	conn    net.Conn // nil over a canned connection
	w       io.Writer
	br      *bufio.Reader
	req     []byte // the tools/call request, built once
	idAt    int    // where the id's digits are in req
	idField []byte // `"id":"c…"` inside req, so it follows the splice
	seq     uint64
	resp    benchResp
}

func newBenchClient(conn net.Conn, rw io.ReadWriter) *benchClient {
	return &benchClient{conn: conn, w: rw, br: bufio.NewReaderSize(rw, 64<<10)}
}

// setCall builds the tools/call request for a session.
func (c *benchClient) setCall(host, session, proto string) {
	c.req = benchRequest(host, session, proto, benchCallBody)
	start := bytes.Index(c.req, []byte(benchIDPrefix))
	c.idAt = start + len(benchIDPrefix)
	c.idField = c.req[start : c.idAt+benchIDDigits+1]
}

// call makes one tools/call and checks its answer. It allocates nothing
// when the call succeeds.
func (c *benchClient) call() error {
	c.seq++
	n := c.seq
	for i := c.idAt + benchIDDigits - 1; i >= c.idAt; i-- {
		c.req[i] = byte('0' + n%10)
		n /= 10
	}
	if c.conn != nil && c.seq%256 == 1 {
		c.conn.SetDeadline(time.Now().Add(time.Minute))
	}
	if _, err := c.w.Write(c.req); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	r := &c.resp
	if err := r.read(c.br); err != nil {
		return err
	}
	if r.status != 200 {
		return fmt.Errorf("tools/call: HTTP %d: %q", r.status, r.body)
	}
	p, ok := r.payload(c.idField)
	switch {
	case !ok:
		return fmt.Errorf("tools/call: no response with %s in %q", c.idField, r.body)
	case bytes.Contains(p, benchErrorField):
		return fmt.Errorf("tools/call: JSON-RPC error: %s", p)
	case bytes.Contains(p, benchIsError):
		return fmt.Errorf("tools/call: tool error: %s", p)
	case !bytes.Contains(p, benchEchoText):
		return fmt.Errorf("tools/call: no %s in %s", benchEchoText, p)
	case r.close:
		return fmt.Errorf("tools/call: the gateway closed the connection")
	}
	return nil
}

// dialBench connects to the gateway at addr and opens an MCP session:
// initialize, then notifications/initialized.
func dialBench(tb testing.TB, addr string) *benchClient {
	tb.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := newBenchClient(conn, conn)
	r := &c.resp

	init := `{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"` + benchProtocol +
		`","capabilities":{},"clientInfo":{"name":"relay-bench","version":"0"}}}`
	if _, err := conn.Write(benchRequest(addr, "", "", init)); err != nil {
		tb.Fatal(err)
	}
	if err := r.read(c.br); err != nil {
		tb.Fatalf("initialize: %v", err)
	}
	p, ok := r.payload([]byte(`"id":"init"`))
	if r.status != 200 || !ok {
		tb.Fatalf("initialize: HTTP %d %q", r.status, r.body)
	}
	var res struct {
		Result *struct {
			ProtocolVersion string `json:"protocolVersion"`
		} `json:"result"`
	}
	if err := json.Unmarshal(p, &res); err != nil || res.Result == nil || res.Result.ProtocolVersion == "" {
		tb.Fatalf("initialize: %v %s", err, p)
	}
	session, proto := string(r.sessionID), res.Result.ProtocolVersion
	if session == "" {
		tb.Fatalf("initialize: no Mcp-Session-Id")
	}

	notif := `{"jsonrpc":"2.0","method":"notifications/initialized"}`
	if _, err := conn.Write(benchRequest(addr, session, proto, notif)); err != nil {
		tb.Fatal(err)
	}
	if err := r.read(c.br); err != nil {
		tb.Fatalf("notifications/initialized: %v", err)
	}
	if r.status/100 != 2 {
		tb.Fatalf("notifications/initialized: HTTP %d %q", r.status, r.body)
	}
	c.setCall(addr, session, proto)
	return c
}

// startBenchGateway serves the demo config (one route, the demo stdio
// server as its single target) on 127.0.0.1 and returns its address.
func startBenchGateway(b *testing.B) string {
	b.Helper()
	// A text handler, not a discarding one: the access log is part of
	// what a call costs.
	_, base := serveLoopbackOpts(b, demoConfig, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return strings.TrimPrefix(base, "http://")
}

// benchCannedConn answers every request written to it with a canned response,
// into which it copies the request's id.
type benchCannedConn struct {
	resp    []byte
	idAt    int // where the id's digits are in resp; -1: none
	reqIDAt int // and in the request
	rd      bytes.Reader
}

func (f *benchCannedConn) Write(p []byte) (int, error) {
	if f.idAt >= 0 {
		copy(f.resp[f.idAt:f.idAt+benchIDDigits], p[f.reqIDAt:f.reqIDAt+benchIDDigits])
	}
	f.rd.Reset(f.resp)
	return len(p), nil
}

func (f *benchCannedConn) Read(p []byte) (int, error) { return f.rd.Read(p) }

// benchCannedResponses are responses shaped like the gateway's, the id
// to be spliced in written as c0000000000.
func benchCannedResponses() map[string]string {
	msg := `{"jsonrpc":"2.0","id":"c0000000000","result":{"content":[{"type":"text","text":"` + benchMessage + `"}]}}`
	progress := `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p","progress":1}}`
	chunk := func(s string) string { return strconv.FormatInt(int64(len(s)), 16) + "\r\n" + s + "\r\n" }
	ev := "event: message\nid: 1\ndata: " + msg + "\n\n"
	return map[string]string{
		"json": benchJSONResponse("200 OK", msg),
		"sse-chunked": "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nCache-Control: no-cache\r\nmcp-session-id: ABCDEF\r\nTransfer-Encoding: chunked\r\n\r\n" +
			chunk("id: 0\ndata:\n\n") + chunk("event: message\ndata: "+progress+"\n\n") +
			chunk(ev[:40]) + chunk(ev[40:]) + "0\r\n\r\n",
		"sse-length": "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: " + strconv.Itoa(len(ev)) + "\r\n\r\n" + ev,
	}
}

func benchJSONResponse(status, msg string) string {
	return "HTTP/1.1 " + status + "\r\nContent-Type: application/json\r\nDate: Mon, 01 Jan 2026 00:00:00 GMT\r\nContent-Length: " +
		strconv.Itoa(len(msg)) + "\r\n\r\n" + msg
}

// benchClientAllocs reports the most allocations per call of the client
// over any of the canned responses: it must be 0 for the benchmark's
// figures to be the gateway's alone.
func benchClientAllocs(tb testing.TB) float64 {
	tb.Helper()
	worst := 0.0
	for name, resp := range benchCannedResponses() {
		fc := &benchCannedConn{resp: []byte(resp), idAt: strings.Index(resp, `"c0000000000"`) + 2}
		c := newBenchClient(nil, fc)
		c.setCall("127.0.0.1:1", "ABCDEF", benchProtocol)
		fc.reqIDAt = c.idAt
		if err := c.call(); err != nil { // also grows the buffers
			tb.Fatalf("%s: %v", name, err)
		}
		n := testing.AllocsPerRun(200, func() {
			if err := c.call(); err != nil {
				tb.Fatalf("%s: %v", name, err)
			}
		})
		if n > 0 {
			tb.Logf("client over canned %s response: %v allocs/call", name, n)
		}
		worst = max(worst, n)
	}
	return worst
}

func TestRelayBenchClient(t *testing.T) {
	if n := benchClientAllocs(t); n != 0 {
		t.Errorf("the benchmark client allocates %v times per call", n)
	}
	// The checks are real: a wrong id, an HTTP or JSON-RPC error, a tool
	// error or a missing echo fail the call.
	ok := `{"jsonrpc":"2.0","id":"c0000000000","result":{"content":[{"type":"text","text":"` + benchMessage + `"}]}}`
	for name, resp := range map[string]string{
		"wrong id":   benchJSONResponse("200 OK", strings.Replace(ok, "c0000000000", "x0000000000", 1)),
		"rpc error":  benchJSONResponse("200 OK", `{"jsonrpc":"2.0","id":"c0000000000","error":{"code":-32603,"message":"`+benchMessage+`"}}`),
		"tool error": benchJSONResponse("200 OK", strings.Replace(ok, `}]}}`, `}],"isError":true}}`, 1)),
		"no echo":    benchJSONResponse("200 OK", strings.Replace(ok, benchMessage, "relay-bench-pAyload", 1)),
		"HTTP 500":   benchJSONResponse("500 Internal Server Error", ok),
		"sse no id":  strings.Replace(benchCannedResponses()["sse-length"], "c0000000000", "x0000000000", 1),
	} {
		fc := &benchCannedConn{resp: []byte(resp), idAt: -1}
		if i := strings.Index(resp, `"c0000000000"`); i >= 0 {
			fc.idAt = i + 2
		}
		c := newBenchClient(nil, fc)
		c.setCall("127.0.0.1:1", "ABCDEF", benchProtocol)
		fc.reqIDAt = c.idAt
		if err := c.call(); err == nil {
			t.Errorf("%s: call succeeded", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func BenchmarkRelayedToolCall(b *testing.B) {
	if n := benchClientAllocs(b); n != 0 {
		b.Fatalf("the benchmark client allocates %v times per call", n)
	}
	addr := startBenchGateway(b)
	c := dialBench(b, addr)
	for range 50 { // warm up: buffers, pools, the child's first calls
		if err := c.call(); err != nil {
			b.Fatal(err)
		}
	}
	b.Log(c.resp.describe())
	b.ReportAllocs()
	for b.Loop() {
		if err := c.call(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRelayedToolCallParallel is the same call from GOMAXPROCS
// clients at once, each with its own connection and session (and so its
// own child).
func BenchmarkRelayedToolCallParallel(b *testing.B) {
	if n := benchClientAllocs(b); n != 0 {
		b.Fatalf("the benchmark client allocates %v times per call", n)
	}
	addr := startBenchGateway(b)
	clients := make([]*benchClient, runtime.GOMAXPROCS(0))
	for i := range clients {
		clients[i] = dialBench(b, addr)
		for range 50 {
			if err := clients[i].call(); err != nil {
				b.Fatal(err)
			}
		}
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := clients[next.Add(1)-1]
		for pb.Next() {
			if err := c.call(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRemoteToolCall is the same call to a remote mcp target: go-sdk's
// Streamable HTTP server with the demo server's tools, on loopback, called
// directly and through tailgate. Both run in this process, so B/op and
// allocs/op include the server's; the difference between the two is
// tailgate's.
//
//	go test -run '^$' -bench RemoteToolCall -benchmem -benchtime=2000x -count=3 -timeout 10m ./gateway/
func BenchmarkRemoteToolCall(b *testing.B) {
	upstream := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil))
	b.Cleanup(upstream.Close)
	_, base := serveLoopbackOpts(b, remoteConfig(upstream.URL+"/mcp"), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	for _, tc := range []struct{ name, addr string }{
		{"direct", strings.TrimPrefix(upstream.URL, "http://")},
		{"tailgate", strings.TrimPrefix(base, "http://")},
	} {
		b.Run(tc.name, func(b *testing.B) {
			benchCallsTo(b, tc.addr)
		})
	}
}

// BenchmarkLargeResults measures the gateway's heap while it relays large
// results: each iteration makes 10 concurrent calls whose results are
// 15 MB each (the demo's big tool) on one session, with a client that
// streams the responses to nowhere, and samples the process's heap. It
// reports the peak heap in use above the idle heap, and the heap still in
// use after the calls and a GC (what a session keeps).
//
//	go test -run '^$' -bench LargeResults -benchtime=3x -timeout 10m ./gateway/
func BenchmarkLargeResults(b *testing.B) {
	const calls, size = 10, 15 << 20
	addr := startBenchGateway(b)
	url := "http://" + addr + "/mcp"
	post := func(session, body string) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if session != "" {
			req.Header.Set("Mcp-Session-Id", session)
		}
		return http.DefaultClient.Do(req)
	}
	resp, err := post("", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"`+benchProtocol+`","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}`)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	session := resp.Header.Get("Mcp-Session-Id")
	if resp, err = post(session, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); err == nil {
		resp.Body.Close()
	}
	heap := func() float64 {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return float64(ms.HeapInuse) / (1 << 20)
	}
	runtime.GC()
	idle := heap()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if h := uint64(heap()); h > peak.Load() {
					peak.Store(h)
				}
			}
		}
	}()
	for i := 0; b.Loop(); i++ {
		errs := make(chan error, calls)
		for j := range calls {
			go func() {
				resp, err := post(session, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"big","arguments":{"bytes":%d}}}`, i*calls+j+1, size))
				if err != nil {
					errs <- err
					return
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && n < size {
					err = fmt.Errorf("a %d-byte response", n)
				}
				errs <- err
			}()
		}
		for range calls {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
	}
	close(stop)
	<-sampled
	runtime.GC()
	b.ReportMetric(float64(peak.Load())-idle, "peak-heap-MB")
	b.ReportMetric(heap()-idle, "retained-heap-MB")
}

// benchCallsTo measures the benchmark client's call to the gateway (or
// server) at addr: 50 calls to warm up, then b.Loop's.
func benchCallsTo(b *testing.B, addr string) {
	c := dialBench(b, addr)
	for range 50 {
		if err := c.call(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := c.call(); err != nil {
			b.Fatal(err)
		}
	}
}
