package gateway

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay"
	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
	"github.com/tailgate-dev/tailgate/policy"
)

// This file holds frontSession, one client's MCP session on a front:
// opening and initializing it, its standalone stream, waiting for its
// calls, closing it when its client, its backend or the TTL ends it, and
// the one-request sessions of a stateless backend.

// frontSession is one client's MCP session: its backend session (once
// initialized), its standalone stream and what it is doing.
type frontSession struct {
	f     *mcpFront
	id    string
	owner *policy.Source
	sse   bool // a legacy SSE session: everything flows on its stream
	// sessionless serves the sessionless (2026-07-28) requests of one caller.
	sessionless bool
	// urlElicitation says the session's client declared URL
	// elicitations when it began (connectanswer.go).
	urlElicitation atomic.Bool
	// toolHeaders are its tools' Mcp-Param-* bindings; under mu.
	toolHeaders *toolHeaders
	log         *slog.Logger

	mu sync.Mutex
	bs *relay.Session

	// queue holds messages for the standalone stream (the GET stream, or
	// the legacy SSE stream).
	queue     chan []byte
	streaming atomic.Bool
	inflight  atomic.Int64
	listens   atomic.Int64  // of inflight, subscriptions/listen
	idle      chan struct{} // closed when inflight drops to 0; under mu
	ending    atomic.Bool   // the backend ended; new requests get 404
	lastUsed  atomic.Int64  // unix nanoseconds
	closeOnce sync.Once
	closed    chan struct{}
	// closing is set as close begins, before it looks for the backend:
	// an initialize that stores its backend after that sees it.
	closing atomic.Bool
	// holdsPlace is set while the session (or a sessionless caller's
	// children) holds a place in the gateway's budget.
	holdsPlace atomic.Bool
	// opened is when the session opened, client what its client said of
	// itself (noteClient), for the status page.
	opened time.Time
	client atomic.Pointer[statusClient]
}

// newSession reserves a place for a new session under the caps and
// registers it; it answers 503 past a cap.
func (f *mcpFront) newSession(w http.ResponseWriter, r *http.Request, sse bool) *frontSession {
	src := sourceFrom(r.Context())
	f.mu.Lock()
	if f.closed || f.retired.Load() {
		f.mu.Unlock()
		http.Error(w, "gateway shutting down", http.StatusServiceUnavailable)
		return nil
	}
	// The caps are the gateway's, across routes: one peer cannot lock
	// out the others, nor many routes multiply what the gateway holds.
	if err := f.budget.openSession(callerKey(src)); err != nil {
		f.mu.Unlock()
		f.log.Warn("session refused: at a session cap", append([]any{"reason", err.Error()}, sourceAttrs(src)...)...)
		w.Header().Set("Retry-After", "5")
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return nil
	}
	fs := &frontSession{
		f:      f,
		id:     rand.Text(),
		owner:  src,
		sse:    sse,
		queue:  make(chan []byte, 256),
		closed: make(chan struct{}),
		opened: time.Now(),
	}
	fs.holdsPlace.Store(true) // taken above
	fs.log = f.log.With(append([]any{"session", fs.id}, sourceAttrs(src)...)...)
	fs.touch()
	f.sessions[fs.id] = fs
	f.mu.Unlock()
	return fs
}

func (fs *frontSession) touch() { fs.lastUsed.Store(time.Now().UnixNano()) }

func (fs *frontSession) backend() *relay.Session {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.bs
}

// releasePlace gives back the session's place in the budget, once.
func (fs *frontSession) releasePlace() {
	if fs.holdsPlace.CompareAndSwap(true, false) {
		fs.f.budget.closeSession(callerKey(fs.owner))
	}
}

func (fs *frontSession) isClosed() bool {
	if fs.closing.Load() {
		return true
	}
	select {
	case <-fs.closed:
		return true
	default:
		return false
	}
}

// initialize starts the session's children with the client's initialize
// params and answers with their description of themselves. It reports
// whether the session is open.
func (fs *frontSession) initialize(ctx context.Context, m *jsonrpc.Message, w http.ResponseWriter) bool {
	start := time.Now()
	if fs.backend() != nil {
		writeJSON(w, jsonrpc.ErrorMessage(m.Bytes(m.ID), jsonrpc.CodeInvalidRequest, "session already initialized"))
		return true
	}
	var params []byte
	if m.Params.Has() {
		params = m.Bytes(m.Params)
	}
	fs.noteClient(m, false)
	bs, err := fs.f.backend.Open(ctx, relay.OpenParams{ID: fs.id, Initialize: params, Identity: newCaller(fs.owner), Caller: callerKey(fs.owner).String(), Notify: fs.enqueue})
	if err != nil {
		fs.log.Error("session start failed", "err", err)
		writeJSON(w, startError(m.Bytes(m.ID), err))
		fs.record("initialize", relay.Route{}, outcomeError, err, time.Since(start))
		return false
	}
	fs.mu.Lock()
	fs.bs = bs
	fs.mu.Unlock()
	if fs.isClosed() { // DELETE, shutdown or the SSE stream ended meanwhile
		bs.Close()
		writeJSON(w, jsonrpc.ErrorMessage(m.Bytes(m.ID), jsonrpc.CodeInternalError, "session closed while starting"))
		return false
	}
	fs.touch() // idle from now, not from the initialize's arrival
	go fs.watch(bs)
	bs.LearnNames() // in the background, to name calls in metrics
	w.Header().Set(sessionIDHeader, fs.id)
	if fs.sse {
		w.Header().Del(sessionIDHeader)
	}
	fs.urlElicitation.Store(m.Path("params", "capabilities", "elicitation", "url").Has())
	writeJSON(w, jsonrpc.ResultMessage(m.Bytes(m.ID), bs.InitializeResult()))
	fs.log.Info("mcp session opened", "client", m.String(m.Path("params", "clientInfo", "name")),
		"protocol_version", m.String(m.Path("params", "protocolVersion")), "pids", bs.PIDs(), "duration", time.Since(start).Round(time.Millisecond))
	fs.record("initialize", relay.Route{}, outcomeOK, nil, time.Since(start))
	return true
}

// watch ends the front session when its backend session ends (a child
// exited): calls in flight have had their error naming the child; later
// requests get 404, so the client starts a new session.
func (fs *frontSession) watch(bs *relay.Session) {
	select {
	case <-bs.Done():
		// The calls in flight have been failed with the child's exit; let
		// their handlers write that before the session's streams close, or
		// a client that sees its stream end first reports that instead.
		fs.ending.Store(true)
		fs.waitIdle(2 * time.Second)
		// The errors travel on their requests' connections, the end of
		// the standalone stream on another; a client that sees its stream
		// end first fails every call with that instead of the error that
		// names the child. So the stream lingers a moment, while new
		// requests already get 404.
		linger := time.NewTimer(streamLinger)
		select {
		case <-linger.C:
		case <-fs.closed:
		}
		linger.Stop()
		fs.close(bs.Err())
	case <-fs.closed:
	}
}

// streamLinger is how long the standalone stream of a session whose child
// died stays open after the calls in flight got their errors.
const streamLinger = time.Second

// waitIdle waits until no call is in flight, or d has passed.
func (fs *frontSession) waitIdle(d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		fs.mu.Lock()
		if fs.inflight.Load() == 0 {
			fs.mu.Unlock()
			return
		}
		idle := fs.idle
		if idle == nil {
			idle = make(chan struct{})
			fs.idle = idle
		}
		fs.mu.Unlock()
		select {
		case <-idle:
		case <-timer.C:
			return
		}
	}
}

// callDone ends a call's share of inflight and wakes waitIdle.
func (fs *frontSession) callDone() {
	fs.mu.Lock()
	if fs.inflight.Add(-1) == 0 && fs.idle != nil {
		close(fs.idle)
		fs.idle = nil
	}
	fs.mu.Unlock()
}

// enqueue is where the backend session sends what belongs to no request.
// A legacy SSE stream is the session's only channel, so it waits for room;
// a Streamable HTTP session without an open GET stream keeps the newest
// 256 messages.
func (fs *frontSession) enqueue(msg []byte) {
	if fs.sse {
		select {
		case fs.queue <- msg:
		case <-fs.closed:
		}
		return
	}
	for {
		select {
		case fs.queue <- msg:
			return
		default:
		}
		select {
		case old := <-fs.queue:
			fs.log.Warn("standalone stream full; dropped the oldest message", "dropped_bytes", len(old))
		default:
		}
	}
}

// pump writes the session's queued messages to its stream until the
// client leaves or the session closes.
func (fs *frontSession) pump(sw *sseWriter, ctx context.Context) {
	for {
		select {
		case msg := <-fs.queue:
			if err := sw.event(msg); err != nil {
				fs.log.Info("legacy SSE stream write failed", "err", err)
				return
			}
		case <-ctx.Done():
			return
		case <-fs.closed:
			return
		}
	}
}

// close ends the session and its backend session (cancelling calls in
// flight and reaping children). cause is nil for an orderly close.
func (fs *frontSession) close(cause error) {
	fs.closeOnce.Do(func() {
		fs.closing.Store(true)
		f := fs.f
		f.mu.Lock()
		if f.sessions[fs.id] == fs {
			delete(f.sessions, fs.id)
		}
		f.mu.Unlock()
		fs.releasePlace()
		// The calls in flight get their errors while the session's streams
		// are still open: a legacy SSE session's answers travel on its
		// stream, and a Streamable HTTP client that sees its standalone
		// stream end first fails every call with that instead (see watch).
		answering := fs.inflight.Load() > 0
		if bs := fs.backend(); bs != nil {
			bs.Close()
		}
		if answering {
			fs.waitIdle(2 * time.Second)
			time.Sleep(streamLinger)
		}
		close(fs.closed)
		if cause != nil {
			fs.log.Warn("mcp session ended by its backend", "err", cause)
		} else {
			fs.log.Info("mcp session closed")
		}
	})
}

// serveStateless serves a request of a stateless backend: a session of
// its own, whose children live as long as the request.
func (f *mcpFront) serveStateless(w http.ResponseWriter, r *http.Request, m *jsonrpc.Message) {
	if !m.IsRequest() {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	src := sourceFrom(r.Context())
	// A request's own children count as a session against the caps, per
	// peer and in all, for as long as they run.
	if err := f.budget.openSession(callerKey(src)); err != nil {
		f.log.Warn("session refused: at a session cap", append([]any{"reason", err.Error()}, sourceAttrs(src)...)...)
		writeRPCError(w, http.StatusServiceUnavailable, m.Bytes(m.ID), jsonrpc.CodeInternalError, err.Error())
		return
	}
	defer f.budget.closeSession(callerKey(src))
	fs := &frontSession{f: f, id: "stateless", owner: src, queue: make(chan []byte, 16), closed: make(chan struct{})}
	fs.log = f.log.With(sourceAttrs(src)...)
	var params []byte
	if m.MethodName() == "initialize" && m.Params.Has() {
		params = m.Bytes(m.Params)
	}
	start := time.Now()
	bs, err := f.backend.Open(r.Context(), relay.OpenParams{ID: "stateless", Initialize: params, Identity: newCaller(src), Notify: func([]byte) {}})
	if err != nil {
		writeJSON(w, jsonrpc.ErrorMessage(m.Bytes(m.ID), jsonrpc.CodeInternalError, err.Error()))
		fs.record(m.MethodName(), relay.Route{}, outcomeError, err, time.Since(start))
		return
	}
	defer bs.Close()
	if m.MethodName() == "initialize" {
		writeJSON(w, jsonrpc.ResultMessage(m.Bytes(m.ID), bs.InitializeResult()))
		return
	}
	fs.bs = bs
	fs.handle(w, r, m)
}

// janitor closes sessions idle past the TTL: no request for that long and
// none in flight. A legacy SSE session lives as long as its stream.
func (f *mcpFront) janitor() {
	every := min(10*time.Second, f.sseInit/2)
	if f.ttl > 0 {
		every = min(f.ttl/4+time.Millisecond, every)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case now := <-t.C:
			f.mu.Lock()
			var idle []*frontSession
			for _, fs := range f.sessions {
				idleFor := now.Sub(time.Unix(0, fs.lastUsed.Load()))
				switch {
				case fs.sse && fs.backend() == nil && idleFor > f.sseInit:
					idle = append(idle, fs) // a stream nobody initialized
				case !fs.sse && f.ttl > 0 && fs.backend() != nil && fs.inflight.Load() == 0 && idleFor > f.ttl:
					// A session still starting its children (npx takes
					// seconds) is not idle: its initialize is in flight.
					idle = append(idle, fs)
				}
			}
			for key, c := range f.callers {
				if fs := c.fs; f.ttl > 0 && fs.backend() != nil && fs.inflight.Load() == 0 && now.Sub(time.Unix(0, fs.lastUsed.Load())) > f.ttl {
					delete(f.callers, key)
					idle = append(idle, fs)
				}
			}
			f.mu.Unlock()
			for _, fs := range idle {
				fs.log.Info("mcp session idle past its TTL; closing", "ttl", f.ttl)
				go fs.close(nil)
			}
		}
	}
}
