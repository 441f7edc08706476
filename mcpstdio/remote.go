package mcpstdio

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
)

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
	handle  func(msg []byte, held *charge)
	log     *slog.Logger
	// maxMsg bounds each message read from the server, mem what the link
	// holds of them at once.
	maxMsg int
	mem    *bufferShare

	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	last      chan struct{}                 // closed once the last message written is out
	inflight  map[string]context.CancelFunc // requests whose answer may still come, by id
	session   string                        // Mcp-Session-Id, for a server of the session era
	version   string                        // the protocol version agreed at initialize
	listening bool
	done      chan struct{}
	err       error
}

// remoteClients share connections per target definition.
func (b *Backend) remoteClient(t *Target) (*http.Client, error) {
	r := t.Remote
	dialer := &net.Dialer{Timeout: r.ConnectTimeout}
	if dialer.Timeout <= 0 {
		dialer.Timeout = 10 * time.Second
	}
	dial := dialer.DialContext
	if r.Tailnet {
		if b.opts.TailnetDial == nil {
			return nil, errors.New("the host is on the tailnet, and tailgate has no tailnet node to dial it through")
		}
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, dialer.Timeout)
			defer cancel()
			return b.opts.TailnetDial(ctx, network, addr)
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

// dialRemote makes the link to remote target t for one session (or one
// caller's sessionless requests). Nothing is sent until the first message.
func (b *Backend) dialRemote(t *Target, identity map[string]string, handle func([]byte, *charge), mem *bufferShare, log *slog.Logger) link {
	l := &httpLink{t: t, url: t.Remote.URL, handle: handle, log: log, headers: make(http.Header), done: make(chan struct{}),
		inflight: make(map[string]context.CancelFunc), maxMsg: b.opts.MaxMessageBytes, mem: mem}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	b.remoteMu.Lock()
	client := b.remotes[t.Name]
	var err error
	if client == nil {
		client, err = b.remoteClient(t)
		if err == nil {
			b.remotes[t.Name] = client
		}
	}
	b.remoteMu.Unlock()
	if err != nil {
		l.fail(fmt.Errorf("target %q: %w", t.Name, err))
		return l
	}
	// The caller's identity goes with each request as of the caller's
	// latest (identity.go).
	l.client = withIdentity(client, t, identity)
	for k, v := range t.Remote.Headers {
		l.headers.Set(k, v)
	}
	return l
}

func (l *httpLink) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
		return
	default:
	}
	l.err = err
	close(l.done)
	l.cancel()
}

// write posts msg; the answer is handed on when it comes. A cancellation
// closes the cancelled request's stream, which is how a Streamable HTTP
// client cancels (2026-07-28); a server of the session era is also sent
// the notification.
func (l *httpLink) write(msg []byte, headers map[string]string) error {
	select {
	case <-l.done:
		return l.err
	default:
	}
	m, err := ParseMessage(msg)
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
		l.post(ctx, m, headers, prev, sent)
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
func (l *httpLink) post(ctx context.Context, m *Message, extra map[string]string, prev <-chan struct{}, sent chan struct{}) {
	var once sync.Once
	done := func() { once.Do(func() { close(sent) }) }
	defer done()
	if prev != nil {
		t := time.NewTimer(orderWait)
		select {
		case <-prev:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		t.Stop()
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
	sessionEra, body := version != "" && version < ModernVersion, m.Raw
	if sessionEra {
		body = withoutRequestMeta(m)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.url, bytes.NewReader(body))
	if err != nil {
		l.answerError(ctx, m, err)
		return
	}
	h := req.Header
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
	if v := m.String(m.Path("params", "_meta", metaProtocolVersion)); v != "" && !sessionEra {
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
	resp, err := l.client.Do(req)
	if err != nil {
		l.answerError(ctx, m, fmt.Errorf("unreachable: %w", err))
		return
	}
	defer resp.Body.Close()
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
		l.fail(fmt.Errorf("target %q: the server ended the session (404)", l.t.Name))
		return
	}
	ct := resp.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "text/event-stream"):
		l.followEvents(ctx, resp.Body, m)
	case strings.HasPrefix(ct, "application/json"):
		body, n, err := boundedRead(resp.Body, resp.ContentLength, l.maxMsg, l.mem)
		held := charge{share: l.mem, n: n, owns: true}
		defer held.readerDone()
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
			l.fail(fmt.Errorf("target %q: the server no longer knows the session (%v)", l.t.Name, herr))
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
var requestMetaKeys = []string{metaProtocolVersion, metaClientCapabilities, metaClientInfo, "io.modelcontextprotocol/logLevel"}

// withoutRequestMeta is m without requestMetaKeys, for a server of the
// session era: it learnt all that at initialize, and a Streamable HTTP
// server that also speaks 2026-07-28 takes a message that carries them for
// one of that protocol, which its sessions do not serve (go-sdk's answers
// -32022). A sessionless caller's requests, bridged to such a server, have
// them.
func withoutRequestMeta(m *Message) []byte {
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
func answers(body []byte, m *Message) bool {
	if m == nil || !m.IsRequest() {
		return false
	}
	rm, err := ParseMessage(bytes.TrimSpace(body))
	return err == nil && rm.IsResponse() && bytes.Equal(rm.Bytes(rm.ID), m.Bytes(m.ID))
}

// httpError describes a reply that is not the answer: its status, and the
// JSON-RPC error's message or the start of the body.
func httpError(status int, body []byte) error {
	if rm, err := ParseMessage(bytes.TrimSpace(body)); err == nil {
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
// at initialize and opening the GET stream of a session once it exists;
// held is what the message holds of the link's buffers, for the answer
// made of it to take over.
func (l *httpLink) deliver(body []byte, sent *Message, held *charge) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return
	}
	if sent != nil && sent.MethodName() == "initialize" {
		if rm, err := ParseMessage(body); err == nil {
			if v := rm.String(rm.Path("result", "protocolVersion")); v != "" {
				l.mu.Lock()
				l.version = v
				// Once a session exists, the server may send unasked:
				// listen for it.
				listen := l.session != "" && !l.listening
				l.listening = l.listening || listen
				l.mu.Unlock()
				if listen {
					go l.listen()
				}
			}
		}
	}
	if sent != nil && sent.MethodName() == "notifications/initialized" {
		return
	}
	l.handle(body, held)
}

// followEvents reads a request's event stream. A server may close it
// before the response and expect the client to come back for the rest
// (SSE polling, SEP-1699): then the stream is resumed with a GET that
// names the last event seen, after the delay the server asked for.
func (l *httpLink) followEvents(ctx context.Context, body io.Reader, sent *Message) {
	st := l.readEvents(body, sent, eventsRead{retry: defaultRetry})
	for range maxResumes {
		if st.answered || !sent.IsRequest() || ctx.Err() != nil {
			return
		}
		if st.err != nil {
			l.answerError(ctx, sent, st.err)
			return
		}
		if st.lastID == "" {
			// Nothing to resume from: the answer is lost upstream, and
			// the caller would wait for it until its timeout.
			l.answerLost(ctx, sent, "the server closed the answer's event stream before answering, with no event id to resume from")
			return
		}
		if !sleep(ctx, st.retry) {
			return
		}
		resp, err := l.client.Do(l.streamRequest(ctx, st.lastID))
		if err != nil {
			l.answerError(ctx, sent, fmt.Errorf("unreachable resuming the answer's stream: %w", err))
			return
		}
		if resp.StatusCode == http.StatusNotFound {
			resp.Body.Close()
			l.fail(fmt.Errorf("target %q: the server ended the session (404 resuming a stream)", l.t.Name))
			return
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			l.answerError(ctx, sent, fmt.Errorf("resuming the answer's stream: HTTP %d", resp.StatusCode))
			return
		}
		st = l.readEvents(resp.Body, sent, st)
		resp.Body.Close()
	}
	if !st.answered && sent.IsRequest() {
		l.answerLost(ctx, sent, fmt.Sprintf("no answer after resuming the answer's event stream %d times", maxResumes))
	}
}

// sleep waits d, or until ctx ends (false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

const (
	// maxResumes bounds how often one answer's event stream is resumed.
	maxResumes = 1000
	// defaultRetry is the reconnection delay until a server names one.
	defaultRetry = 100 * time.Millisecond
)

// answerLost answers a request whose answer the server will not send.
func (l *httpLink) answerLost(ctx context.Context, m *Message, why string) {
	if ctx.Err() != nil {
		return // stopped or cancelled: nobody waits for the answer
	}
	l.log.Warn("remote target: answer lost", "target", l.t.Name, "method", m.MethodName(), "reason", why)
	l.handle(ErrorMessage(m.Bytes(m.ID), CodeInternalError, fmt.Sprintf("target %q: %s", l.t.Name, why)), nil)
}

// eventsRead is what readEvents saw of a stream, carried over to the
// stream that resumes it.
type eventsRead struct {
	lastID   string
	retry    time.Duration
	answered bool // the response to the request that opened it came
	// err is why the stream was given up: a message past the gateway's
	// bounds.
	err error
}

// readEvents hands on each message of an event stream, starting from
// what the streams before it saw (the last event id, the server's retry).
// An event counts, its id included, once its closing blank line has come;
// a stream that ends inside an event drops it, as EventSource does. An
// event longer than the gateway takes (or than its buffers have room for)
// ends the stream with st.err set.
func (l *httpLink) readEvents(r io.Reader, sent *Message, st eventsRead) eventsRead {
	st.answered = false
	er := newEventReader(r, l.maxMsg, l.mem)
	defer er.release()
	for {
		ev, err := er.next()
		if err != nil {
			if overBound(err) {
				st.err = err
			}
			return st
		}
		if ev.hasID {
			st.lastID = ev.id
		}
		if ev.retry >= 0 {
			st.retry = min(ev.retry, 30*time.Second)
		}
		if len(ev.data) > 0 {
			if answers(ev.data, sent) {
				st.answered = true
			}
			held := er.handOver()
			l.deliver(ev.data, sent, &held)
			held.readerDone()
		}
	}
}

// answerError answers a request the server could not be asked (down,
// refused, timed out) with an error naming the target.
func (l *httpLink) answerError(ctx context.Context, m *Message, err error) {
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
	l.handle(ErrorMessage(m.Bytes(m.ID), CodeInternalError, fmt.Sprintf("target %q: %s: %v", l.t.Name, redactURL(l.url), err)), nil)
}

// listen holds the session's GET stream open, for what the server sends
// unasked (list_changed, its requests of the client): reopened when the
// server or a proxy closes it, from the last event seen, until the link
// ends or the server says it offers none (405).
func (l *httpLink) listen() {
	st := eventsRead{retry: defaultRetry}
	backoff := time.Duration(0)
	for l.ctx.Err() == nil {
		began := time.Now()
		resp, err := l.client.Do(l.streamRequest(l.ctx, st.lastID))
		switch {
		case err != nil:
			l.log.Debug("remote target: listen stream", "target", l.t.Name, "err", err)
		case resp.StatusCode == http.StatusOK:
			st = l.readEvents(resp.Body, nil, st)
			resp.Body.Close()
			if st.err != nil {
				l.log.Warn("remote target: listen stream given up", "target", l.t.Name, "err", st.err)
				st.err, err = nil, st.err // retried, ever more slowly
			}
		case resp.StatusCode == http.StatusNotFound:
			resp.Body.Close()
			l.fail(fmt.Errorf("target %q: the server ended the session (404 on its event stream)", l.t.Name))
			return
		default:
			// 405: the server has no GET stream; anything else: it will
			// not give one. Either way, nothing to listen to.
			resp.Body.Close()
			l.log.Debug("remote target: no listen stream", "target", l.t.Name, "status", resp.StatusCode)
			return
		}
		// A stream that ends at once, or a connection that fails, is
		// retried ever more slowly; one that lasted, after retry.
		if err != nil || time.Since(began) < time.Second {
			backoff = min(max(2*backoff, time.Second), 30*time.Second)
		} else {
			backoff = 0
		}
		if !sleep(l.ctx, max(st.retry, backoff)) {
			return
		}
	}
}

// streamRequest is a GET of the session's event stream, resuming after
// lastID when it is set.
func (l *httpLink) streamRequest(ctx context.Context, lastID string) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, l.url, nil) // l.url parsed at load
	for k, v := range l.headers {
		req.Header[k] = v
	}
	l.mu.Lock()
	if l.session != "" {
		req.Header.Set("Mcp-Session-Id", l.session)
	}
	if l.version != "" {
		req.Header.Set("Mcp-Protocol-Version", l.version)
	}
	l.mu.Unlock()
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	return req
}

// read waits for the link to end; messages arrive through post.
func (l *httpLink) read(c *child) {
	<-l.done
	c.closed(nil)
}

func (l *httpLink) exited() <-chan struct{} { return l.done }

func (l *httpLink) exitError() error {
	select {
	case <-l.done:
		if l.err != nil {
			return l.err
		}
		return fmt.Errorf("target %q: closed", l.t.Name)
	default:
		return nil
	}
}

func (l *httpLink) waitExited(d time.Duration) bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// stop ends the server's session (DELETE) and the link.
func (l *httpLink) stop(grace time.Duration) {
	l.mu.Lock()
	session := l.session
	l.mu.Unlock()
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

func (l *httpLink) kill()    { l.fail(errors.New("the server broke the protocol")) }
func (l *httpLink) pid() int { return 0 }

// redactURL drops userinfo and query from a URL for messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the server"
	}
	u.User, u.RawQuery = nil, ""
	return u.String()
}

// sseLink is a remote MCP server of the legacy HTTP+SSE transport: one GET
// event stream carries everything the server sends, the first event names
// the endpoint the client posts its messages to.
type sseLink struct {
	*httpLink
	ready    chan struct{} // closed once the endpoint is known
	endpoint string
}

// dialSSE opens the event stream of a legacy SSE target.
func (b *Backend) dialSSE(t *Target, identity map[string]string, handle func([]byte, *charge), mem *bufferShare, log *slog.Logger) link {
	hl := b.dialRemote(t, identity, handle, mem, log).(*httpLink)
	l := &sseLink{httpLink: hl, ready: make(chan struct{})}
	if hl.client != nil {
		go l.stream()
	}
	return l
}

// stream reads the server's event stream until it ends; then the target is
// gone, as a child whose stdout closed.
func (l *sseLink) stream() {
	req, err := http.NewRequestWithContext(l.ctx, http.MethodGet, l.url, nil)
	if err != nil {
		l.fail(err)
		return
	}
	for k, v := range l.headers {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := l.client.Do(req)
	if err != nil {
		l.fail(fmt.Errorf("target %q: %s unreachable: %v", l.t.Name, redactURL(l.url), err))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		l.fail(fmt.Errorf("target %q: %s: HTTP %d", l.t.Name, redactURL(l.url), resp.StatusCode))
		return
	}
	er := newEventReader(resp.Body, l.maxMsg, l.mem)
	defer er.release()
	for {
		ev, err := er.next()
		if err != nil {
			if overBound(err) {
				// Which request it answers is not known: the target is
				// gone for this session, as a child that wrote a line
				// too long.
				l.log.Warn("remote target: event stream given up", "target", l.t.Name, "err", err)
				l.fail(fmt.Errorf("target %q: %s: %w", l.t.Name, redactURL(l.url), err))
				return
			}
			break
		}
		event, data := ev.name, ev.data
		if event == "endpoint" {
			// The first endpoint on the target's own host and scheme
			// counts; write reads it once ready is closed.
			select {
			case <-l.ready:
			default:
				if u, err := url.Parse(l.url); err == nil {
					if ep, err := u.Parse(strings.TrimSpace(string(data))); err == nil && ep.Host == u.Host && ep.Scheme == u.Scheme {
						l.endpoint = ep.String()
						close(l.ready)
					}
				}
			}
		} else if len(data) > 0 {
			held := er.handOver()
			l.handle(bytes.TrimSpace(data), &held)
			held.readerDone()
		}
	}
	l.fail(fmt.Errorf("target %q: the server closed its event stream", l.t.Name))
}

// write posts msg to the endpoint; the answer comes on the stream.
func (l *sseLink) write(msg []byte, headers map[string]string) error {
	select {
	case <-l.ready:
	case <-l.done:
		return l.exitError()
	case <-time.After(30 * time.Second):
		return fmt.Errorf("target %q: no endpoint event from %s", l.t.Name, redactURL(l.url))
	}
	req, err := http.NewRequestWithContext(l.ctx, http.MethodPost, l.endpoint, bytes.NewReader(msg))
	if err != nil {
		return err
	}
	for k, v := range l.headers {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.client.Do(req)
	if err != nil {
		select {
		case <-l.done:
			// The stream ended under the post (a message past the
			// gateway's bounds, the server gone): that is the reason.
			return l.exitError()
		default:
		}
		return fmt.Errorf("target %q: %s unreachable: %v", l.t.Name, redactURL(l.endpoint), err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("target %q: %s: HTTP %d", l.t.Name, redactURL(l.endpoint), resp.StatusCode)
	}
	return nil
}

// read waits for the stream to end.
func (l *sseLink) read(c *child) {
	<-l.done
	c.closed(nil)
}

// stop closes the stream.
func (l *sseLink) stop(time.Duration) { l.fail(nil) }
