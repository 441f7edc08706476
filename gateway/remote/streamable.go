package remote

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
	"github.com/tailgate-dev/tailgate/mcpstdio/buffers"
	"github.com/tailgate-dev/tailgate/tsnode"
)

// A remote target over Streamable HTTP (httpLink): its HTTP client, each
// message POSTed in order, and the answers handed on as a child's lines.
// Its event streams and the legacy SSE link are in remotesse.go.

// httpLink is a remote MCP server spoken to over Streamable HTTP: each
// message tailgate sends is a POST; what the server answers (JSON or an
// event stream) and what it sends on its GET stream go to the child's
// handle like lines from a process. Behind it, the relay treats the target
// as it treats a child process.
type httpLink struct {
	t       *Target
	url     string
	client  *http.Client
	headers http.Header // static headers; never logged
	handle  func(msg []byte, held *buffers.Charge)
	log     *slog.Logger
	// maxMsg bounds each message read from the server, mem what the link
	// holds of them at once.
	maxMsg int
	mem    *buffers.Share

	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	last      chan struct{}                 // closed once the last message written is out
	inflight  map[string]context.CancelFunc // requests whose answer may still come, by id
	session   string                        // Mcp-Session-Id, for a server of the session era
	version   string                        // the protocol version agreed at initialize
	listening bool
	// listenOpened is closed once the GET stream's first request has been
	// answered (or has failed): Close sends the DELETE after it.
	listenOpened chan struct{}
	// closing is set once Close has begun: no GET stream opens after it.
	closing bool
	ended   chan struct{}
	err     error
}

// newClient is the HTTP client of the target opts describes: its links
// share its connections.
func newClient(r Options) (*http.Client, error) {
	dialer := &net.Dialer{Timeout: r.ConnectTimeout}
	if dialer.Timeout <= 0 {
		dialer.Timeout = 10 * time.Second
	}
	dial := dialer.DialContext
	if r.Tailnet {
		if r.TailnetDial == nil {
			return nil, errors.New("the host is on the tailnet, and tailgate has no tailnet node to dial it through")
		}
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, dialer.Timeout)
			defer cancel()
			return r.TailnetDial(ctx, network, addr)
		}
	}
	tr := &http.Transport{
		DialContext:         dial,
		TLSHandshakeTimeout: dialer.Timeout,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	if r.CAFile != "" {
		pem, err := os.ReadFile(r.CAFile)
		if err != nil {
			return nil, fmt.Errorf("caFile: %w", err)
		}
		roots, err := x509.SystemCertPool()
		if err != nil || roots == nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("caFile %s: no PEM certificate in it", r.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	u, err := url.Parse(r.URL)
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Transport: tr,
		// A redirect to another host could carry the target's headers
		// (API keys, the caller's identity) somewhere else: refused.
		// A redirect that turns a POST into a GET would lose the
		// message, one from https to http would send the headers in
		// clear: refused too.
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			switch {
			case len(via) > 5:
				return errors.New("more than 5 redirects")
			case req.URL.Host != u.Host:
				return fmt.Errorf("redirect to %s refused: only the target's own host", req.URL.Host)
			case req.URL.Scheme != via[0].URL.Scheme:
				return fmt.Errorf("redirect from %s to %s refused", via[0].URL.Scheme, req.URL.Scheme)
			case req.Method != via[0].Method:
				return fmt.Errorf("redirect turning %s into %s refused (use 307 or 308)", via[0].Method, req.Method)
			}
			return nil
		},
	}, nil
}

// Dial makes the link to the target for one session (or one caller's
// sessionless requests); identity is the caller's, handle gets what the
// server sends, each message with what it holds of mem. Nothing is sent
// until the first message. It is relay.RemoteTarget.Dial.
func (t *Target) Dial(identity *tsnode.Identity, headers http.Header, handle func([]byte, *buffers.Charge), mem *buffers.Share, log *slog.Logger) Conn {
	if t.opts.SSE {
		return t.dialSSE(identity, headers, handle, mem, log)
	}
	return t.dialHTTP(identity, headers, handle, mem, log)
}

// dialHTTP makes a Streamable HTTP link (an SSE link's posts are made by
// one too).
func (t *Target) dialHTTP(identity *tsnode.Identity, headers http.Header, handle func([]byte, *buffers.Charge), mem *buffers.Share, log *slog.Logger) *httpLink {
	l := &httpLink{t: t, url: t.opts.URL, handle: handle, log: log, headers: make(http.Header), ended: make(chan struct{}),
		inflight: make(map[string]context.CancelFunc), maxMsg: t.maxMsg(), mem: mem}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	if t.err != nil {
		l.fail(fmt.Errorf("target %q: %w", t.opts.Name, t.err))
		return l
	}
	// The caller's identity goes with each request as of the caller's
	// latest (identity.go).
	l.client = t.clientFor(identity)
	for k, v := range t.opts.Headers {
		l.headers.Set(k, v)
	}
	for k, v := range headers {
		l.headers[http.CanonicalHeaderKey(k)] = v
	}
	return l
}

func (l *httpLink) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.ended:
		return
	default:
	}
	l.err = err
	close(l.ended)
	l.cancel()
}

// Write posts msg; the answer is handed on when it comes. A cancellation
// closes the cancelled request's stream, which is how a Streamable HTTP
// client cancels (2026-07-28); a server of the session era is also sent
// the notification.
func (l *httpLink) Write(msg []byte, headers map[string]string, identity *tsnode.Identity) error {
	select {
	case <-l.ended:
		return l.err
	default:
	}
	m, err := jsonrpc.ParseMessage(msg)
	if err != nil {
		return err
	}
	l.mu.Lock()
	if m.MethodName() == "notifications/cancelled" {
		if cancel := l.inflight[string(m.Bytes(m.Path("params", "requestId")))]; cancel != nil {
			cancel()
		}
		if l.session == "" {
			l.mu.Unlock()
			return nil // no session to tell: the closed stream said it
		}
	}
	ctx, cancel := l.ctx, context.CancelFunc(func() {})
	if m.IsRequest() {
		ctx, cancel = context.WithCancel(l.ctx)
		l.inflight[string(m.Bytes(m.ID))] = cancel
	}
	prev, sent := l.last, make(chan struct{})
	l.last = sent
	l.mu.Unlock()
	go func() {
		defer func() {
			cancel()
			if m.IsRequest() {
				l.mu.Lock()
				delete(l.inflight, string(m.Bytes(m.ID)))
				l.mu.Unlock()
			}
		}()
		// The request says its own caller, whatever another request of
		// the caller's told the link meanwhile.
		l.post(withCaller(ctx, identity), m, headers, prev, sent)
	}()
	return nil
}

// Bounds on what one message may hold up: a notification (or a response
// to the server) that the server does not take within notifyTimeout is
// given up, and the messages after it wait at most orderWait for it.
const (
	notifyTimeout = 30 * time.Second
	orderWait     = 5 * time.Second
)

// post sends m once the message written before it is out (prev), and
// says when m is (sent): a request once it is written to the connection, a
// notification once the server has taken it. Messages then reach the
// server in the order the relay wrote them (notifications/initialized
// before the first request) while requests still run side by side.
func (l *httpLink) post(ctx context.Context, m *jsonrpc.Message, extra map[string]string, prev <-chan struct{}, sent chan struct{}) {
	var once sync.Once
	done := func() { once.Do(func() { close(sent) }) }
	defer done()
	if prev != nil && !waitTurn(ctx, prev) {
		return
	}
	method := m.MethodName()
	if m.IsRequest() {
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { done() }})
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, notifyTimeout)
		defer cancel()
		stop := context.AfterFunc(ctx, done)
		defer stop()
		t := time.AfterFunc(orderWait, done)
		defer t.Stop()
	}
	l.mu.Lock()
	session, version := l.session, l.version
	l.mu.Unlock()
	sessionEra, body := version != "" && version < jsonrpc.ModernVersion, m.Raw
	if sessionEra {
		body = withoutRequestMeta(m)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.url, bytes.NewReader(body))
	if err != nil {
		l.answerError(ctx, m, err)
		return
	}
	l.setPostHeaders(req.Header, m, method, extra, session, version, sessionEra)
	resp, err := l.client.Do(req)
	if err != nil {
		l.answerError(ctx, m, fmt.Errorf("unreachable: %w", err))
		return
	}
	defer resp.Body.Close()
	if method == "notifications/initialized" && resp.StatusCode/100 == 2 {
		// The session is under way: the server may now send unasked.
		// Opened before the notification counts as out, so that a Close
		// waiting for it finds the stream.
		l.startListen()
	}
	if !m.IsRequest() {
		done()
	}
	if method == "initialize" {
		if id := resp.Header.Get("Mcp-Session-Id"); id != "" {
			l.mu.Lock()
			l.session = id
			l.mu.Unlock()
		}
	}
	if resp.StatusCode == http.StatusNotFound && session != "" {
		// The server forgot the session: the target is gone for it.
		l.fail(fmt.Errorf("target %q: the server ended the session (404)", l.t.opts.Name))
		return
	}
	l.postAnswer(ctx, resp, m, session)
}

// waitTurn waits until the message written before (prev) is out, for no
// longer than orderWait; false if ctx ends first.
func waitTurn(ctx context.Context, prev <-chan struct{}) bool {
	t := time.NewTimer(orderWait)
	defer t.Stop()
	select {
	case <-prev:
	case <-t.C:
	case <-ctx.Done():
		return false
	}
	return true
}

// setPostHeaders sets the headers of m's POST (h): the target's static
// ones, the request's own (extra), the content types, the session and the
// protocol version, and the method and name the server checks.
func (l *httpLink) setPostHeaders(h http.Header, m *jsonrpc.Message, method string, extra map[string]string, session, version string, sessionEra bool) {
	for k, v := range l.headers {
		h[k] = v
	}
	for k, v := range extra {
		h.Set(k, v)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json, text/event-stream")
	if session != "" {
		h.Set("Mcp-Session-Id", session)
	}
	// A sessionless request says its version in _meta, and the header
	// must agree (SEP-2575); a session's requests carry the version agreed
	// at initialize, which itself carries none.
	if v := m.String(m.Path("params", "_meta", jsonrpc.MetaProtocolVersion)); v != "" && !sessionEra {
		h.Set("Mcp-Protocol-Version", v)
	} else if version != "" && method != "initialize" {
		h.Set("Mcp-Protocol-Version", version)
	}
	if method != "" {
		// SEP-2243: the server checks these against the body.
		h.Set("Mcp-Method", method)
		if name, ok := m.NameSpan(); ok && m.String(name) != "" {
			h.Set("Mcp-Name", headerValue(m.String(name)))
		}
	}
}

// postAnswer hands on what the server answered m's POST with (resp): an
// event stream, a JSON message, or an error for a request whose answer
// did not come; session is the session the POST was sent in.
func (l *httpLink) postAnswer(ctx context.Context, resp *http.Response, m *jsonrpc.Message, session string) {
	ct := resp.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "text/event-stream"):
		l.followEvents(ctx, resp.Body, m)
	case strings.HasPrefix(ct, "application/json"):
		body, n, err := boundedRead(resp.Body, resp.ContentLength, l.maxMsg, l.mem)
		held := l.mem.Charge(n, true)
		defer held.ReaderDone()
		if err != nil {
			l.answerError(ctx, m, err)
			return
		}
		if answers(body, m) || !m.IsRequest() {
			l.deliver(body, m, &held)
			return
		}
		// Not the answer: an error without the request's id (a proxy's
		// 401, a server's "not initialized" with id null), or something
		// else entirely. The caller gets the reason instead of a wait.
		herr := httpError(resp.StatusCode, body)
		if session != "" && resp.StatusCode == http.StatusBadRequest && strings.Contains(strings.ToLower(herr.Error()), "session") {
			// A server that lost the session (restarted) and says so
			// with 400 rather than the 404 the spec asks for, as
			// server-everything does: the target is gone for this
			// session, as with 404, so that the client starts afresh.
			l.fail(fmt.Errorf("target %q: the server no longer knows the session (%v)", l.t.opts.Name, herr))
			return
		}
		l.answerError(ctx, m, herr)
	case resp.StatusCode == http.StatusAccepted || resp.StatusCode/100 == 2:
		if m.IsRequest() {
			l.answerLost(ctx, m, fmt.Sprintf("the server took the request (HTTP %d) and sent no answer", resp.StatusCode))
		}
	default:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		l.answerError(ctx, m, httpError(resp.StatusCode, body))
	}
}

// requestMetaKeys are the _meta keys with which a request of MCP
// 2026-07-28 says its version, its client and its log level (SEP-2575).
var requestMetaKeys = []string{jsonrpc.MetaProtocolVersion, jsonrpc.MetaClientCapabilities, jsonrpc.MetaClientInfo, "io.modelcontextprotocol/logLevel"}

// withoutRequestMeta is m without requestMetaKeys, for a server of the
// session era: it learnt all that at initialize, and a Streamable HTTP
// server that also speaks 2026-07-28 takes a message that carries them for
// one of that protocol, which its sessions do not serve (go-sdk's answers
// -32022). A sessionless caller's requests, bridged to such a server, have
// them.
func withoutRequestMeta(m *jsonrpc.Message) []byte {
	meta := m.Path("params", "_meta")
	var fields map[string]json.RawMessage
	if !meta.Has() || json.Unmarshal(m.Bytes(meta), &fields) != nil {
		return m.Raw
	}
	n := len(fields)
	for _, k := range requestMetaKeys {
		delete(fields, k)
	}
	if len(fields) == n {
		return m.Raw
	}
	b, err := json.Marshal(fields)
	if err != nil {
		return m.Raw
	}
	return m.Replace(meta, b)
}

// answers reports whether body is the response to request m.
func answers(body []byte, m *jsonrpc.Message) bool {
	if m == nil || !m.IsRequest() {
		return false
	}
	rm, err := jsonrpc.ParseMessage(bytes.TrimSpace(body))
	return err == nil && rm.IsResponse() && bytes.Equal(rm.Bytes(rm.ID), m.Bytes(m.ID))
}

// httpError describes a reply that is not the answer: its status, and the
// JSON-RPC error's message or the start of the body.
func httpError(status int, body []byte) error {
	if rm, err := jsonrpc.ParseMessage(bytes.TrimSpace(body)); err == nil {
		if msg := rm.String(rm.Path("error", "message")); msg != "" {
			return fmt.Errorf("HTTP %d: %s", status, msg)
		}
	}
	text := strings.TrimSpace(string(body[:min(len(body), 200)]))
	if text == "" {
		return fmt.Errorf("HTTP %d", status)
	}
	return fmt.Errorf("HTTP %d: %s", status, text)
}

// headerValue is v as an Mcp-Name or Mcp-Param-* header value: itself
// when it is plain header-safe ASCII, else SEP-2243's "=?base64?…?=".
func headerValue(v string) string {
	plain := v == strings.TrimSpace(v) && !(strings.HasPrefix(v, "=?base64?") && strings.HasSuffix(v, "?="))
	for i := 0; plain && i < len(v); i++ {
		plain = v[i] == ' ' || v[i] == '\t' || v[i] >= 0x21 && v[i] <= 0x7e
	}
	if plain {
		return v
	}
	return "=?base64?" + base64.StdEncoding.EncodeToString([]byte(v)) + "?="
}

// deliver hands a message from the server on, noting the version agreed
// at initialize; held is what the message holds of the link's buffers,
// for the answer made of it to take over.
func (l *httpLink) deliver(body []byte, sent *jsonrpc.Message, held *buffers.Charge) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return
	}
	if sent != nil && sent.MethodName() == "initialize" {
		if rm, err := jsonrpc.ParseMessage(body); err == nil {
			if v := rm.String(rm.Path("result", "protocolVersion")); v != "" {
				l.mu.Lock()
				l.version = v
				l.mu.Unlock()
			}
		}
	}
	if sent != nil && sent.MethodName() == "notifications/initialized" {
		return
	}
	l.handle(body, held)
}

// answerLost answers a request whose answer the server will not send.
func (l *httpLink) answerLost(ctx context.Context, m *jsonrpc.Message, why string) {
	if ctx.Err() != nil {
		return // stopped or cancelled: nobody waits for the answer
	}
	l.log.Warn("remote target: answer lost", "target", l.t.opts.Name, "method", m.MethodName(), "reason", why)
	l.handle(jsonrpc.ErrorMessage(m.Bytes(m.ID), jsonrpc.CodeInternalError, fmt.Sprintf("target %q: %s", l.t.opts.Name, why)), nil)
}

// answerError answers a request the server could not be asked (down,
// refused, timed out) with an error naming the target.
func (l *httpLink) answerError(ctx context.Context, m *jsonrpc.Message, err error) {
	if !m.IsRequest() {
		l.log.Debug("remote target: message not delivered", "method", m.MethodName(), "err", err)
		return
	}
	if ctx.Err() != nil {
		return // stopped (the session fails its calls itself) or cancelled
	}
	// "Post \"<url>\": …" would name the URL a second time.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = fmt.Errorf("%s%w", strings.TrimSuffix(err.Error(), ue.Error()), ue.Err)
	}
	l.handle(jsonrpc.ErrorMessage(m.Bytes(m.ID), jsonrpc.CodeInternalError, fmt.Sprintf("target %q: %s: %v", l.t.opts.Name, redactURL(l.url), err)), nil)
}

// Read waits for the link to end; messages arrive through post.
func (l *httpLink) Read() error {
	<-l.ended
	return nil
}

func (l *httpLink) Done() <-chan struct{} { return l.ended }

func (l *httpLink) Err() error {
	select {
	case <-l.ended:
		if l.err != nil {
			return l.err
		}
		return fmt.Errorf("target %q: closed", l.t.opts.Name)
	default:
		return nil
	}
}

// startListen opens the session's GET stream, once, if the server gave a
// session and the link is not closing.
func (l *httpLink) startListen() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.session == "" || l.listening || l.closing {
		return
	}
	l.listening = true
	l.listenOpened = make(chan struct{})
	go l.listen(l.listenOpened)
}

// Close ends the server's session (DELETE, for up to grace) and the
// link. The DELETE is the session's last word: it waits, for up to grace,
// until what was written before it is out and the GET stream (if it was
// being opened) has been answered, so that a session closed as soon as it
// began does not end before its notifications/initialized and GET.
func (l *httpLink) Close(grace time.Duration) {
	wait, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	l.mu.Lock()
	l.closing = true
	last := l.last
	l.mu.Unlock()
	if last != nil {
		select {
		case <-last:
		case <-wait.Done():
		}
	}
	l.mu.Lock()
	session, opened := l.session, l.listenOpened
	l.mu.Unlock()
	if opened != nil {
		select {
		case <-opened:
		case <-wait.Done():
		}
	}
	if session != "" && l.client != nil {
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, l.url, nil)
		if err == nil {
			for k, v := range l.headers {
				req.Header[k] = v
			}
			req.Header.Set("Mcp-Session-Id", session)
			l.mu.Lock()
			if l.version != "" {
				req.Header.Set("Mcp-Protocol-Version", l.version)
			}
			l.mu.Unlock()
			if resp, err := l.client.Do(req); err == nil {
				resp.Body.Close()
			}
		}
		cancel()
	}
	l.fail(nil)
}

// redactURL drops userinfo and query from a URL for messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the server"
	}
	u.User, u.RawQuery = nil, ""
	return u.String()
}
