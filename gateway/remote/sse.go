package remote

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
	"github.com/tailgate-dev/tailgate/mcpstdio/buffers"
	"github.com/tailgate-dev/tailgate/tsnode"
)

// Event streams of a remote target: an answer's stream (followed and
// resumed), the session's GET stream (listen), and the legacy HTTP+SSE
// link, whose one stream carries everything.

// followEvents reads a request's event stream. A server may close it
// before the response and expect the client to come back for the rest
// (SSE polling, SEP-1699): then the stream is resumed with a GET that
// names the last event seen, after the delay the server asked for.
func (l *httpLink) followEvents(ctx context.Context, body io.Reader, sent *jsonrpc.Message) {
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
			l.fail(fmt.Errorf("target %q: the server ended the session (404 resuming a stream)", l.t.opts.Name))
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
func (l *httpLink) readEvents(r io.Reader, sent *jsonrpc.Message, st eventsRead) eventsRead {
	st.answered = false
	er := newEventReader(r, l.maxMsg, l.mem)
	defer er.release()
	for {
		ev, err := er.next()
		if err != nil {
			if buffers.OverBound(err) {
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
			held.ReaderDone()
		}
	}
}

// listen holds the session's GET stream open, for what the server sends
// unasked (list_changed, its requests of the client): reopened when the
// server or a proxy closes it, from the last event seen, until the link
// closes or ends or the server says it offers none (405). opened is
// closed once the first request has been answered or has failed.
func (l *httpLink) listen(opened chan struct{}) {
	var once sync.Once
	open := func() { once.Do(func() { close(opened) }) }
	defer open()
	st := eventsRead{retry: defaultRetry}
	backoff := time.Duration(0)
	for l.ctx.Err() == nil && !l.isClosing() {
		began := time.Now()
		resp, err := l.client.Do(l.streamRequest(l.ctx, st.lastID))
		open()
		switch {
		case err != nil:
			l.log.Debug("remote target: listen stream", "target", l.t.opts.Name, "err", err)
		case resp.StatusCode == http.StatusOK:
			st = l.readEvents(resp.Body, nil, st)
			resp.Body.Close()
			if st.err != nil {
				l.log.Warn("remote target: listen stream given up", "target", l.t.opts.Name, "err", st.err)
				st.err, err = nil, st.err // retried, ever more slowly
			}
		case resp.StatusCode == http.StatusNotFound:
			resp.Body.Close()
			l.fail(fmt.Errorf("target %q: the server ended the session (404 on its event stream)", l.t.opts.Name))
			return
		default:
			// 405: the server has no GET stream; anything else: it will
			// not give one. Either way, nothing to listen to.
			resp.Body.Close()
			l.log.Debug("remote target: no listen stream", "target", l.t.opts.Name, "status", resp.StatusCode)
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

// isClosing reports whether Close has begun: the stream is not reopened
// then, so that nothing follows the session's DELETE.
func (l *httpLink) isClosing() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closing
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

// sseLink is a remote MCP server of the legacy HTTP+SSE transport: one GET
// event stream carries everything the server sends, the first event names
// the endpoint the client posts its messages to.
type sseLink struct {
	*httpLink
	ready    chan struct{} // closed once the endpoint is known
	endpoint string
}

// dialSSE opens the event stream of a legacy SSE target.
func (t *Target) dialSSE(identity *tsnode.Identity, headers http.Header, handle func([]byte, *buffers.Charge), mem *buffers.Share, log *slog.Logger) Conn {
	hl := t.dialHTTP(identity, headers, handle, mem, log)
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
		l.fail(fmt.Errorf("target %q: %s unreachable: %v", l.t.opts.Name, redactURL(l.url), err))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		l.fail(fmt.Errorf("target %q: %s: HTTP %d", l.t.opts.Name, redactURL(l.url), resp.StatusCode))
		return
	}
	er := newEventReader(resp.Body, l.maxMsg, l.mem)
	defer er.release()
	for {
		ev, err := er.next()
		if err != nil {
			if buffers.OverBound(err) {
				// Which request it answers is not known: the target is
				// gone for this session, as a child that wrote a line
				// too long.
				l.log.Warn("remote target: event stream given up", "target", l.t.opts.Name, "err", err)
				l.fail(fmt.Errorf("target %q: %s: %w", l.t.opts.Name, redactURL(l.url), err))
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
			held.ReaderDone()
		}
	}
	l.fail(fmt.Errorf("target %q: the server closed its event stream", l.t.opts.Name))
}

// Write posts msg to the endpoint; the answer comes on the stream.
func (l *sseLink) Write(msg []byte, headers map[string]string, identity *tsnode.Identity) error {
	select {
	case <-l.ready:
	case <-l.ended:
		return l.Err()
	case <-time.After(30 * time.Second):
		return fmt.Errorf("target %q: no endpoint event from %s", l.t.opts.Name, redactURL(l.url))
	}
	req, err := http.NewRequestWithContext(withCaller(l.ctx, identity), http.MethodPost, l.endpoint, bytes.NewReader(msg))
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
		case <-l.ended:
			// The stream ended under the post (a message past the
			// gateway's bounds, the server gone): that is the reason.
			return l.Err()
		default:
		}
		return fmt.Errorf("target %q: %s unreachable: %v", l.t.opts.Name, redactURL(l.endpoint), err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("target %q: %s: HTTP %d", l.t.opts.Name, redactURL(l.endpoint), resp.StatusCode)
	}
	return nil
}

// Read waits for the stream to end.
func (l *sseLink) Read() error {
	<-l.ended
	return nil
}

// Close closes the stream.
func (l *sseLink) Close(time.Duration) { l.fail(nil) }
