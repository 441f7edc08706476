package mcpstdio

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strconv"
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
	headers http.Header // static and identity headers; never logged
	handle  func([]byte)
	log     *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	last      chan struct{} // closed once the last message written is out
	session   string        // Mcp-Session-Id, for a server of the session era
	version   string        // the protocol version agreed at initialize
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
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Host != u.Host || len(via) > 5 {
				return fmt.Errorf("redirect to %s refused: only the target's own host", req.URL.Host)
			}
			return nil
		},
	}, nil
}

// dialRemote makes the link to remote target t for one session (or one
// caller's sessionless requests). Nothing is sent until the first message.
func (b *Backend) dialRemote(t *Target, identity map[string]string, handle func([]byte), log *slog.Logger) link {
	l := &httpLink{t: t, url: t.Remote.URL, handle: handle, log: log, headers: make(http.Header), done: make(chan struct{})}
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
	l.client = client
	for k, v := range t.Remote.Headers {
		l.headers.Set(k, v)
	}
	if t.Remote.IdentityHeaders {
		for h, k := range map[string]string{
			"X-Tailgate-User-Login": "TAILGATE_USER_LOGIN",
			"X-Tailgate-Node-Name":  "TAILGATE_NODE_NAME",
			"X-Tailgate-Node-Tags":  "TAILGATE_NODE_TAGS",
		} {
			if v := identity[k]; v != "" {
				l.headers.Set(h, v)
			}
		}
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

// write posts msg; the answer is handed on when it comes.
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
	prev, sent := l.last, make(chan struct{})
	l.last = sent
	l.mu.Unlock()
	go l.post(m, headers, prev, sent)
	return nil
}

// post sends m once the message written before it is out (prev), and
// says when m is (sent): a request once it is written to the connection, a
// notification once the server has taken it. Messages then reach the
// server in the order the relay wrote them — notifications/initialized
// before the first request, a cancellation after its request — while
// requests still run side by side.
func (l *httpLink) post(m *Message, extra map[string]string, prev <-chan struct{}, sent chan struct{}) {
	var once sync.Once
	done := func() { once.Do(func() { close(sent) }) }
	defer done()
	if prev != nil {
		select {
		case <-prev:
		case <-l.ctx.Done():
			return
		}
	}
	method := m.MethodName()
	ctx := l.ctx
	if m.IsRequest() {
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { done() }})
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.url, bytes.NewReader(m.Raw))
	if err != nil {
		l.answerError(m, err)
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
	l.mu.Lock()
	session, version := l.session, l.version
	l.mu.Unlock()
	if session != "" {
		h.Set("Mcp-Session-Id", session)
	}
	// A sessionless request says its version in _meta, and the header
	// must agree (SEP-2575); a session's requests carry the version agreed
	// at initialize, which itself carries none.
	if v := m.String(m.Path("params", "_meta", metaProtocolVersion)); v != "" {
		h.Set("Mcp-Protocol-Version", v)
	} else if version != "" && method != "initialize" {
		h.Set("Mcp-Protocol-Version", version)
	}
	if method != "" {
		// SEP-2243: the server checks these against the body.
		h.Set("Mcp-Method", method)
		if name, ok := m.NameSpan(); ok && m.String(name) != "" {
			h.Set("Mcp-Name", m.String(name))
		}
	}
	resp, err := l.client.Do(req)
	if err != nil {
		l.answerError(m, err)
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
	switch {
	case resp.StatusCode == http.StatusAccepted:
		return
	case resp.StatusCode == http.StatusNotFound && session != "":
		// The server forgot the session: the target is gone for it.
		l.fail(fmt.Errorf("target %q: the server ended the session (404)", l.t.Name))
		return
	}
	ct := resp.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "text/event-stream"):
		l.followEvents(resp.Body, m)
	case strings.HasPrefix(ct, "application/json"):
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if err != nil {
			l.answerError(m, err)
			return
		}
		l.deliver(body, m)
	default:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		l.answerError(m, fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body))))
	}
}

// deliver hands a message from the server on, noting the version agreed
// at initialize and opening the GET stream of a session once it exists.
func (l *httpLink) deliver(body []byte, sent *Message) {
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
	l.handle(body)
}

// followEvents reads a request's event stream. A server may close it
// before the response and expect the client to come back for the rest
// (SSE polling, SEP-1699): then the stream is resumed with a GET that
// names the last event seen, after the delay the server asked for.
func (l *httpLink) followEvents(body io.Reader, sent *Message) {
	st := l.readEvents(body, sent)
	for range maxResumes {
		if st.answered || !sent.IsRequest() || l.ctx.Err() != nil {
			return
		}
		if st.lastID == "" {
			// Nothing to resume from: the answer is lost upstream, and
			// the caller would wait for it until its timeout.
			l.answerLost(sent, "the server closed the answer's event stream before answering, with no event id to resume from")
			return
		}
		select {
		case <-time.After(st.retry):
		case <-l.ctx.Done():
			return
		}
		req, err := l.streamRequest()
		if err != nil {
			l.answerError(sent, err)
			return
		}
		req.Header.Set("Last-Event-ID", st.lastID)
		resp, err := l.client.Do(req)
		if err != nil {
			l.answerError(sent, err)
			return
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			l.answerError(sent, fmt.Errorf("resuming the answer's stream: HTTP %d", resp.StatusCode))
			return
		}
		next := l.readEvents(resp.Body, sent)
		resp.Body.Close()
		if next.lastID == "" {
			next.lastID = st.lastID
		}
		st = next
	}
	if !st.answered && sent.IsRequest() {
		l.answerLost(sent, fmt.Sprintf("no answer after resuming the answer's event stream %d times", maxResumes))
	}
}

// maxResumes bounds how often one answer's event stream is resumed.
const maxResumes = 1000

// answerLost answers a request whose answer the server will not send.
func (l *httpLink) answerLost(m *Message, why string) {
	if l.ctx.Err() != nil {
		return
	}
	l.log.Warn("remote target: answer lost", "target", l.t.Name, "method", m.MethodName(), "reason", why)
	l.handle(ErrorMessage(m.Bytes(m.ID), CodeInternalError, fmt.Sprintf("target %q: %s", l.t.Name, why)))
}

// eventsRead is what readEvents saw of a stream.
type eventsRead struct {
	lastID   string
	retry    time.Duration
	answered bool // the response to the request that opened it came
}

// readEvents hands on each message of an event stream.
func (l *httpLink) readEvents(r io.Reader, sent *Message) eventsRead {
	st := eventsRead{retry: 100 * time.Millisecond}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	var data []byte
	flush := func() {
		if len(data) == 0 {
			return
		}
		if sent != nil && sent.IsRequest() {
			if rm, err := ParseMessage(bytes.TrimSpace(data)); err == nil && rm.IsResponse() && bytes.Equal(rm.Bytes(rm.ID), sent.Bytes(sent.ID)) {
				st.answered = true
			}
		}
		l.deliver(data, sent)
		data = nil
	}
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0:
			flush()
		case bytes.HasPrefix(line, []byte("data:")):
			data = append(data, bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" "))...)
		case bytes.HasPrefix(line, []byte("id:")):
			st.lastID = strings.TrimSpace(string(line[3:]))
		case bytes.HasPrefix(line, []byte("retry:")):
			if ms, err := strconv.Atoi(strings.TrimSpace(string(line[6:]))); err == nil && ms >= 0 {
				st.retry = min(time.Duration(ms)*time.Millisecond, 30*time.Second)
			}
		}
	}
	flush()
	return st
}

// answerError answers a request the server could not be asked (down,
// refused, timed out) with an error naming the target.
func (l *httpLink) answerError(m *Message, err error) {
	if !m.IsRequest() {
		l.log.Debug("remote target: message not delivered", "method", m.MethodName(), "err", err)
		return
	}
	if l.ctx.Err() != nil {
		return // stopped: the session fails its calls itself
	}
	l.handle(ErrorMessage(m.Bytes(m.ID), CodeInternalError, fmt.Sprintf("target %q: %s unreachable: %v", l.t.Name, redactURL(l.url), err)))
}

// listen opens the session's GET stream, for what the server sends
// unasked (list_changed, its requests of the client).
func (l *httpLink) listen() {
	req, err := l.streamRequest()
	if err != nil {
		return
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		l.readEvents(resp.Body, nil)
	}
}

// streamRequest is a GET of the session's event stream.
func (l *httpLink) streamRequest() (*http.Request, error) {
	req, err := http.NewRequestWithContext(l.ctx, http.MethodGet, l.url, nil)
	if err != nil {
		return nil, err
	}
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
	return req, nil
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
func (b *Backend) dialSSE(t *Target, identity map[string]string, handle func([]byte), log *slog.Logger) link {
	hl := b.dialRemote(t, identity, handle, log).(*httpLink)
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
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	var event string
	var data []byte
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0:
			if event == "endpoint" {
				if u, err := url.Parse(l.url); err == nil {
					if ep, err := u.Parse(strings.TrimSpace(string(data))); err == nil && ep.Host == u.Host {
						l.endpoint = ep.String()
						close(l.ready)
					}
				}
			} else if len(data) > 0 {
				l.handle(bytes.TrimSpace(data))
			}
			event, data = "", nil
		case bytes.HasPrefix(line, []byte("event:")):
			event = strings.TrimSpace(string(line[6:]))
		case bytes.HasPrefix(line, []byte("data:")):
			data = append(data, bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" "))...)
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
