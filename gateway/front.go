package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/tailgate-dev/tailgate/gateway/relay"
	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
	"github.com/tailgate-dev/tailgate/policy"
)

// This file holds mcpFront, the HTTP side of one MCP backend: its
// requests' entry (Streamable HTTP POST, GET and DELETE, and legacy SSE),
// admission against the budget, reading a message, and dispatching it to
// its session (handle, dispatch). The sessions themselves are in
// frontsession.go.

// Version is tailgate's version, reported as the MCP server version where
// tailgate answers for itself. cmd/tailgate sets it at link time.
var Version = "dev"

// mcpFront serves one MCP backend over HTTP: Streamable HTTP on the
// route's paths and legacy SSE at /sse. It is the client side of the
// relay: it frames messages (JSON or SSE), keeps sessions, applies
// mcpAuthorization to each request with the identity of the connection it
// arrived on, and hands the messages, as bytes, to the session's
// relay.Session.
type mcpFront struct {
	name     string
	routeKey string // port/listener/route: what a reload keeps
	backend  *relay.Backend
	authz    atomic.Pointer[policy.RuleSet]
	limits   atomic.Pointer[routeLimits] // policies.localRateLimit (limits.go)
	// stageDeps are what the call's stages use beyond the call
	// (pipeline.go): a new stage's own goes there, not here.
	stageDeps
	stateless bool
	ttl       time.Duration
	maxBody   int64
	// bodyRead and sseInit are the front's time limits; writeStall bounds
	// a write to a client that makes no progress (writeBody).
	bodyRead, sseInit, writeStall time.Duration
	// retired is set when a reload replaced this front: it serves its
	// sessions until they end, and opens no new ones.
	retired atomic.Bool
	log     *slog.Logger

	keys requestKeys
	// stages are what every call goes through (pipeline.go).
	stages []stage
	// budget is the gateway's, shared by every front.
	budget *budget

	mu       sync.Mutex
	sessions map[string]*frontSession // by Mcp-Session-Id
	callers  map[peerKey]*caller      // sessionless requests' children, by caller
	closed   bool
	stop     chan struct{} // ends the TTL janitor
}

// frontOptions configure an mcpFront.
type frontOptions struct {
	Logger *slog.Logger
	// SessionTTL closes sessions idle this long.
	SessionTTL time.Duration
	// Authz is the backend's mcpAuthorization; nil allows everything.
	Authz *policy.RuleSet
	// Stages are what the call's stages use (pipeline.go).
	Stages stageDeps
	// Stateless serves every request on a session of its own, as
	// agentgateway's statefulMode: stateless.
	Stateless bool
	// Budget bounds sessions and requests in flight: the gateway's, shared
	// by every front; nil is one of the front's own, with the defaults.
	Budget *budget
	// BodyReadTimeout and SSEInitTimeout override defaultBodyRead and
	// defaultSSEInit.
	BodyReadTimeout, SSEInitTimeout time.Duration
	// WriteStallTimeout overrides defaultWriteStall.
	WriteStallTimeout time.Duration
}

// maxRequestBody bounds a POST body, as go-sdk's default.
const maxRequestBody = 4 << 20

// firstBodyBytes is what a request is charged before its body is read
// (its Content-Length, if less): most bodies are that small.
const firstBodyBytes = 64 << 10

// Session caps of the gateway when config.mcp.maxSessions sets none, and
// per peer (a tailnet node, or an address) when maxSessionsPerPeer sets
// none.
const (
	defaultMaxSessions        = 1024
	defaultMaxSessionsPerPeer = 64
)

// Default time limits of a front (frontTimes).
const (
	// defaultBodyRead bounds reading a POST body, so that a peer
	// trickling bytes cannot hold connections open.
	defaultBodyRead = 30 * time.Second
	// defaultSSEInit closes a legacy SSE stream whose session was never
	// initialized.
	defaultSSEInit = 30 * time.Second
)

func newMCPFront(name string, backend *relay.Backend, opts frontOptions) *mcpFront {
	f := &mcpFront{
		name:      name,
		backend:   backend,
		stateless: opts.Stateless,
		ttl:       opts.SessionTTL,
		maxBody:   maxRequestBody,
		bodyRead:  defaultBodyRead,
		sseInit:   defaultSSEInit,
		log:       opts.Logger.With("route", name),
		sessions:  make(map[string]*frontSession),
		callers:   make(map[peerKey]*caller),
		budget:    opts.Budget,
		stop:      make(chan struct{}),
		stages:    callStages(),
		stageDeps: opts.Stages,
	}
	if f.budget == nil {
		f.budget = newBudget()
	}
	if opts.BodyReadTimeout > 0 {
		f.bodyRead = opts.BodyReadTimeout
	}
	if opts.SSEInitTimeout > 0 {
		f.sseInit = opts.SSEInitTimeout
	}
	f.writeStall = opts.WriteStallTimeout // writeBody's default if 0
	f.authz.Store(opts.Authz)
	go f.janitor()
	return f
}

// setAuthz swaps the front's mcpAuthorization (on reload); calls from
// then on, in running sessions too, are judged by the new rules.
func (f *mcpFront) setAuthz(rs *policy.RuleSet) { f.authz.Store(rs) }

// has reports whether the front holds the session id.
func (f *mcpFront) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.sessions[id]
	return ok
}

// stopNewSessions retires the front after a reload replaced it.
func (f *mcpFront) stopNewSessions() { f.retired.Store(true) }

// openSessions is how many sessions the front has open, initialized or
// not.
func (f *mcpFront) openSessions() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sessions)
}

const sessionIDHeader = "Mcp-Session-Id"

// sessionIDOf is the MCP session a request belongs to, if any. Legacy SSE
// names it in the query (go-sdk's clients and servers spell it
// "sessionid", the TypeScript SDK "sessionId").
func sessionIDOf(r *http.Request) string {
	if id := r.Header.Get(sessionIDHeader); id != "" {
		return id
	}
	if isSSEPath(r) {
		q := r.URL.Query()
		if id := q.Get("sessionId"); id != "" {
			return id
		}
		return q.Get("sessionid")
	}
	return ""
}

func isSSEPath(r *http.Request) bool { return r.URL.Path == "/sse" }

func (f *mcpFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if isSSEPath(r) {
		switch r.Method {
		case http.MethodGet:
			f.serveSSEStream(w, r)
		case http.MethodPost:
			f.serveSSEMessage(w, r)
		default:
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		}
		return
	}
	switch r.Method {
	case http.MethodPost:
		f.servePost(w, r)
	case http.MethodGet:
		f.serveStream(w, r)
	case http.MethodDelete:
		f.serveDelete(w, r)
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
	}
}

// samePeer reports whether two sources are the same caller: the same
// tailnet node when both are tailnet peers, else the same address.
func samePeer(a, b *policy.Source) bool {
	if a.Tailscale != nil && b.Tailscale != nil && a.Tailscale.Node.ID != "" {
		return a.Tailscale.Node.ID == b.Tailscale.Node.ID
	}
	return a.Address == b.Address
}

// session finds the session a request names, answering for it (404, 403)
// if it cannot be used.
func (f *mcpFront) session(w http.ResponseWriter, r *http.Request, id string) *frontSession {
	f.mu.Lock()
	fs := f.sessions[id]
	f.mu.Unlock()
	if fs == nil {
		http.Error(w, "session not found", http.StatusNotFound)
		return nil
	}
	// A session belongs to the node that opened it: a session id seen by
	// another node is not a credential.
	if src := sourceFrom(r.Context()); !samePeer(fs.owner, src) {
		args := append([]any{"session", id, "owner_addr", fs.owner.Address}, sourceAttrs(src)...)
		f.log.Warn("session used by another peer", args...)
		http.Error(w, "session belongs to another peer", http.StatusForbidden)
		return nil
	}
	if bs := fs.backend(); fs.isClosed() || fs.ending.Load() || bs != nil && !bs.Alive() {
		http.Error(w, "session not found: it has ended", http.StatusNotFound)
		return nil
	}
	fs.touch()
	return fs
}

// admit takes a place in the budget for a POST before its body is read,
// answering 429 (this peer) or 503 (everyone) past it. It charges the
// announced length up to firstBodyBytes; a longer body is charged as it
// arrives (readBody), so that a body trickled in holds only what came.
func (f *mcpFront) admit(w http.ResponseWriter, r *http.Request) (charge, bool) {
	n := r.ContentLength
	if n < 0 || n > firstBodyBytes {
		n = firstBodyBytes
	}
	src := sourceFrom(r.Context())
	c, err := f.budget.acquire(callerKey(src), n)
	if err != nil {
		f.overBudget(w, src, err)
		return charge{}, false
	}
	return c, true
}

// overBudget answers a request refused by the budget: 429 when this peer
// holds its share, 503 when the gateway is full.
func (f *mcpFront) overBudget(w http.ResponseWriter, src *policy.Source, err error) {
	status := http.StatusServiceUnavailable
	if oe, ok := err.(*overError); ok && oe.perPeer {
		status = http.StatusTooManyRequests
	}
	f.log.Warn("request refused: over budget", append([]any{"reason", err.Error()}, sourceAttrs(src)...)...)
	w.Header().Set("Retry-After", "1")
	http.Error(w, err.Error(), status)
}

// readMessage reads and parses a POST body, charging c for it, and
// answering for it if it cannot.
func (f *mcpFront) readMessage(w http.ResponseWriter, r *http.Request, c *charge) *jsonrpc.Message {
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(f.bodyRead))
	body, err := readBody(w, r, f.maxBody, c)
	if err != nil {
		// The rest of the body is not worth waiting for: the connection
		// closes after the answer.
		w.Header().Set("Connection", "close")
		var mbe *http.MaxBytesError
		var oe *overError
		if errors.As(err, &oe) {
			f.overBudget(w, sourceFrom(r.Context()), oe)
			return nil
		}
		if errors.As(err, &mbe) {
			http.Error(w, fmt.Sprintf("request body exceeds %d bytes", mbe.Limit), http.StatusRequestEntityTooLarge)
			return nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			http.Error(w, fmt.Sprintf("request body not received within %v", f.bodyRead), http.StatusRequestTimeout)
			return nil
		}
		http.Error(w, "failed to read body", http.StatusBadRequest)
		return nil
	}
	// Lifted once the body is in: a response streamed for minutes must
	// not see the connection time out under it.
	rc.SetReadDeadline(time.Time{})
	if len(body) == 0 {
		http.Error(w, "POST requires a non-empty body", http.StatusBadRequest)
		return nil
	}
	m, err := jsonrpc.ParseClientMessage(body)
	if err != nil {
		f.refuse(w, r, err)
		return nil
	}
	return m
}

// refuse answers a body ParseClientMessage refused, counted and logged
// with who sent it. What is not JSON, or a batch, is answered in text as
// go-sdk does; a message that is JSON but could be read two ways, or
// that servers cannot read, gets a JSON-RPC -32600 that says why (id
// null: which id it carried may be the question).
func (f *mcpFront) refuse(w http.ResponseWriter, r *http.Request, err error) {
	reason := jsonrpc.ParseReason(err)
	if f.metrics != nil {
		f.metrics.refused.WithLabelValues(f.name, reason).Inc()
	}
	f.log.Warn("message refused", append([]any{"reason", reason, "err", err.Error()}, sourceAttrs(sourceFrom(r.Context()))...)...)
	if reason == jsonrpc.ReasonMalformed || reason == jsonrpc.ReasonBatch {
		http.Error(w, fmt.Sprintf("malformed payload: %v", err), http.StatusBadRequest)
		return
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusBadRequest)
	w.Write(jsonrpc.ErrorMessage(nil, jsonrpc.CodeInvalidRequest, "message refused: "+err.Error()))
}

func (f *mcpFront) servePost(w http.ResponseWriter, r *http.Request) {
	if !isJSON(r.Header.Get("Content-Type")) {
		http.Error(w, "Content-Type must be 'application/json'", http.StatusUnsupportedMediaType)
		return
	}
	if accept := r.Header.Values("Accept"); !accepts(accept, "application/json") || !accepts(accept, "text/event-stream") {
		http.Error(w, "Accept must contain both 'application/json' and 'text/event-stream'", http.StatusBadRequest)
		return
	}
	c, ok := f.admit(w, r)
	if !ok {
		return
	}
	defer c.release()
	m := f.readMessage(w, r, &c)
	if m == nil {
		return
	}
	if m.MethodName() == "subscriptions/listen" && m.IsRequest() {
		// A listen lasts: it takes a stream's place, of which a peer has
		// a share, and holds its body only.
		if err := c.holdStream(); err != nil {
			f.overBudget(w, sourceFrom(r.Context()), err)
			return
		}
	}
	if id := r.Header.Get(sessionIDHeader); id != "" {
		fs := f.session(w, r, id)
		if fs == nil {
			return
		}
		fs.handle(w, r, m)
		return
	}
	if isSessionless(r, m) {
		f.serveSessionless(w, r, m)
		return
	}
	if f.stateless {
		f.serveStateless(w, r, m)
		return
	}
	if m.MethodName() != "initialize" || !m.IsRequest() {
		http.Error(w, "Bad Request: missing Mcp-Session-Id header (send initialize first)", http.StatusBadRequest)
		return
	}
	fs := f.newSession(w, r, false)
	if fs == nil {
		return
	}
	if !fs.initialize(r.Context(), m, w) {
		fs.close(nil)
		return
	}
}

// isJSON reports whether a Content-Type is application/json, parameters
// (charset) aside.
func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}

// accepts reports whether an Accept header admits media type typ.
func accepts(values []string, typ string) bool {
	major, _, _ := strings.Cut(typ, "/")
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			mt = strings.TrimSpace(mt)
			if mt == typ || mt == "*/*" || mt == major+"/*" {
				return true
			}
		}
	}
	return false
}

// serveStream is a Streamable HTTP GET: the session's standalone stream,
// for messages that belong to no request.
func (f *mcpFront) serveStream(w http.ResponseWriter, r *http.Request) {
	if !accepts(r.Header.Values("Accept"), "text/event-stream") {
		http.Error(w, "Accept must contain 'text/event-stream' for GET requests", http.StatusBadRequest)
		return
	}
	id := r.Header.Get(sessionIDHeader)
	if id == "" {
		http.Error(w, "Bad Request: GET requires an Mcp-Session-Id header", http.StatusBadRequest)
		return
	}
	fs := f.session(w, r, id)
	if fs == nil {
		return
	}
	if !fs.streaming.CompareAndSwap(false, true) {
		http.Error(w, "Conflict: the session's stream is already open", http.StatusConflict)
		return
	}
	defer fs.streaming.Store(false)
	sw := startSSE(w)
	sw.stall = fs.f.writeStall
	fs.pump(sw, r.Context())
}

func (f *mcpFront) serveDelete(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(sessionIDHeader)
	if id == "" {
		http.Error(w, "Bad Request: DELETE requires an Mcp-Session-Id header", http.StatusBadRequest)
		return
	}
	fs := f.session(w, r, id)
	if fs == nil {
		return
	}
	fs.close(nil)
	w.WriteHeader(http.StatusNoContent)
}

// serveSSEStream is a legacy SSE GET: a new session whose messages all
// flow on this stream; the client posts to the endpoint it names.
func (f *mcpFront) serveSSEStream(w http.ResponseWriter, r *http.Request) {
	fs := f.newSession(w, r, true)
	if fs == nil {
		return
	}
	defer fs.close(nil)
	sw := startSSE(w)
	sw.stall = f.writeStall
	if sw.write("endpoint", []byte("/sse?sessionId="+fs.id)) != nil {
		return
	}
	fs.log.Info("legacy SSE stream opened")
	fs.pump(sw, r.Context())
}

// serveSSEMessage is a legacy SSE POST: accepted at once, answered on the
// session's stream.
func (f *mcpFront) serveSSEMessage(w http.ResponseWriter, r *http.Request) {
	id := sessionIDOf(r)
	if id == "" {
		http.Error(w, "Bad Request: missing sessionId", http.StatusBadRequest)
		return
	}
	fs := f.session(w, r, id)
	if fs == nil {
		return
	}
	c, ok := f.admit(w, r)
	if !ok {
		return
	}
	m := f.readMessage(w, r, &c)
	if m == nil {
		c.release()
		return
	}
	w.WriteHeader(http.StatusAccepted)
	// The request's connection identity is kept: the call runs after this
	// POST has been answered.
	ctx := context.WithoutCancel(r.Context())
	req := requestOf(r, r.Header.Clone())
	go func() {
		defer c.release()
		if m.MethodName() == "initialize" && m.IsRequest() {
			var buf responseBuffer
			fs.initialize(ctx, m, &buf)
			fs.enqueue(buf.body)
			return
		}
		c := fs.newCall(ctx, m, req)
		c.out = fs.sseSink()
		fs.dispatch(c)
	}()
}

// handle serves one message posted to a Streamable HTTP session.
func (fs *frontSession) handle(w http.ResponseWriter, r *http.Request, m *jsonrpc.Message) {
	if m.MethodName() == "initialize" && m.IsRequest() {
		fs.initialize(r.Context(), m, w)
		return
	}
	c := fs.newCall(r.Context(), m, requestOf(r, r.Header))
	c.answerOn(w, r, false)
	fs.dispatch(c)
	c.http.finish()
}

// requestOf is what policy sees of r, with header as its headers.
func requestOf(r *http.Request, header http.Header) callRequest {
	return callRequest{src: sourceFrom(r.Context()), http: requestFacts{method: r.Method, path: r.URL.Path, host: r.Host, header: header}}
}

// callRequest is what policy sees of the HTTP request a message came in.
type callRequest struct {
	src  *policy.Source
	http requestFacts
}

type requestFacts struct {
	method, path, host string
	header             http.Header
}

// sink is where the messages a request causes, and its response, go.
type sink interface {
	// send writes one message; final is the response.
	send(msg []byte, final bool) error
	// gone is closed when nobody listens any more.
	gone() <-chan struct{}
	// accepted answers a message that has no response (202).
	accepted()
}

// dispatch serves one message of an initialized session: a request runs
// through the call's stages (pipeline.go).
func (fs *frontSession) dispatch(c *call) {
	m, out := c.msg, c.out
	bs := fs.backend()
	if bs == nil {
		if m.IsRequest() {
			out.send(jsonrpc.ErrorMessage(m.Bytes(m.ID), jsonrpc.CodeInvalidRequest, "session not initialized: send initialize first"), true)
		} else {
			out.accepted()
		}
		return
	}
	switch {
	case m.IsResponse():
		if err := bs.Respond(m); err != nil {
			fs.log.Debug("client response not delivered", "err", err)
		}
		out.accepted()
		return
	case m.IsNotification():
		bs.Notify(m)
		out.accepted()
		return
	}
	fs.inflight.Add(1)
	defer fs.callDone()
	c.run(bs)
}

// maxLoggedName bounds a client-chosen name in logs and errors.
const maxLoggedName = 200

func clip(name string) string { return clipTo(name, maxLoggedName) }

// clipTo is s cut to at most n bytes (and a mark), on a rune boundary.
func clipTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// maxLoggedError bounds a logged error message, which may quote what a
// client sent (an unknown tool's name).
const maxLoggedError = 1 << 10

// close ends every front session and reaps the backend's children.
func (f *mcpFront) close() {
	f.mu.Lock()
	if !f.closed {
		close(f.stop)
	}
	f.closed = true
	sessions := make([]*frontSession, 0, len(f.sessions)+len(f.callers))
	for _, fs := range f.sessions {
		sessions = append(sessions, fs)
	}
	for _, c := range f.callers {
		sessions = append(sessions, c.fs)
	}
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, fs := range sessions {
		wg.Go(func() { fs.close(nil) })
	}
	wg.Wait()
	f.backend.Close()
}

// inflight is the number of MCP requests being forwarded.
func (f *mcpFront) inflight() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n int64
	for _, fs := range f.sessions {
		n += fs.inflight.Load()
	}
	for _, c := range f.callers {
		n += c.fs.inflight.Load()
	}
	return n
}
