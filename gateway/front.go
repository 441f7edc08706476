package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/mcpstdio"
	"github.com/tailgate-dev/tailgate/policy"
)

// Version is tailgate's version, reported as the MCP server version where
// tailgate answers for itself. cmd/tailgate sets it at link time.
var Version = "dev"

// mcpFront serves one MCP backend over HTTP: Streamable HTTP on the
// route's paths and legacy SSE at /sse. Each front session gets its own
// mcp.Server, created when the session's first request arrives, so that the
// server knows the peer that opened it; a receiving middleware forwards
// every request to the session's mcpstdio.Session.
type mcpFront struct {
	name        string
	backend     *mcpstdio.Backend
	authz       atomic.Pointer[policy.RuleSet]
	metrics     *metrics
	stateless   bool
	maxSessions int
	// retired is set when a reload replaced this front: it serves its
	// sessions until they end, and opens no new ones.
	retired    atomic.Bool
	log        *slog.Logger
	streamable *mcp.StreamableHTTPHandler
	sse        *mcp.SSEHandler
	// stub answers go-sdk's per-request protocol version lookups for
	// requests of existing sessions; it never gets a session.
	stub *mcp.Server

	mu       sync.Mutex
	sessions map[string]*frontSession // by Mcp-Session-Id
	closed   bool
}

// frontOptions configure an mcpFront.
type frontOptions struct {
	Logger *slog.Logger
	// SessionTTL closes sessions idle this long.
	SessionTTL time.Duration
	// Authz is the backend's mcpAuthorization; nil allows everything.
	Authz *policy.RuleSet
	// Stateless serves every request on a session of its own, as
	// agentgateway's statefulMode: stateless.
	Stateless bool
	// MaxSessions caps open sessions; 0 is no cap.
	MaxSessions int
	// Metrics receives per-call metrics.
	Metrics *metrics
}

func newMCPFront(name string, backend *mcpstdio.Backend, opts frontOptions) *mcpFront {
	f := &mcpFront{
		name:        name,
		backend:     backend,
		metrics:     opts.Metrics,
		stateless:   opts.Stateless,
		maxSessions: opts.MaxSessions,
		log:         opts.Logger.With("route", name),
		stub:        mcp.NewServer(&mcp.Implementation{Name: "tailgate", Version: Version}, nil),
		sessions:    make(map[string]*frontSession),
	}
	f.streamable = mcp.NewStreamableHTTPHandler(f.server, &mcp.StreamableHTTPOptions{
		SessionTimeout: opts.SessionTTL,
		Stateless:      opts.Stateless,
		// go-sdk refuses non-loopback Host headers on loopback sockets
		// (DNS rebinding). tailgate's sockets are tailnet ones; the only
		// loopback socket is the one tsnet forwards Tailscale Service
		// connections through, whose Host is the Service's name.
		DisableLocalhostProtection: true,
		Logger:                     quiet(f.log, slog.LevelWarn),
	})
	f.sse = mcp.NewSSEHandler(f.server, &mcp.SSEOptions{DisableLocalhostProtection: true})
	f.authz.Store(opts.Authz)
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

// sessionIDOf is the MCP session a request belongs to, if any.
func sessionIDOf(r *http.Request) string {
	if id := r.Header.Get(sessionIDHeader); id != "" {
		return id
	}
	if isSSEPath(r) {
		return r.URL.Query().Get("sessionId")
	}
	return ""
}

// server is go-sdk's getServer: a new server, bound to the calling peer,
// for a request that opens a session; the stub otherwise.
func (f *mcpFront) server(r *http.Request) *mcp.Server {
	if !f.opensSession(r) {
		return f.stub
	}
	fs := &frontSession{f: f, src: sourceFrom(r.Context()), method: r.Method, path: r.URL.Path, host: r.Host}
	fs.server = mcp.NewServer(&mcp.Implementation{Name: "tailgate", Version: Version}, &mcp.ServerOptions{
		Logger: quiet(f.log, slog.LevelWarn),
		// Subscriptions go through go-sdk's own bookkeeping, so that
		// Server.ResourceUpdated reaches the subscribed session.
		SubscribeHandler: func(ctx context.Context, req *mcp.SubscribeRequest) error {
			if bs := fs.backend(); bs != nil {
				return bs.Subscribe(ctx, req.Params)
			}
			return errNotInitialized
		},
		UnsubscribeHandler: func(ctx context.Context, req *mcp.UnsubscribeRequest) error {
			if bs := fs.backend(); bs != nil {
				return bs.Unsubscribe(ctx, req.Params)
			}
			return errNotInitialized
		},
		RootsListChangedHandler: func(ctx context.Context, req *mcp.RootsListChangedRequest) {
			if bs := fs.backend(); bs != nil {
				bs.RootsChanged(ctx)
			}
		},
	})
	fs.server.AddReceivingMiddleware(fs.middleware)
	return fs.server
}

var errNotInitialized = &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: "session not initialized"}

// opensSession reports whether r starts a new session (and so gets a new
// server): a POST without a session id, or the GET of a legacy SSE stream.
// In stateless mode every POST does.
func (f *mcpFront) opensSession(r *http.Request) bool {
	if isSSEPath(r) {
		return r.Method == http.MethodGet
	}
	return r.Method == http.MethodPost && (f.stateless || r.Header.Get(sessionIDHeader) == "")
}

const sessionIDHeader = "Mcp-Session-Id"

func isSSEPath(r *http.Request) bool { return r.URL.Path == "/sse" }

func (f *mcpFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	src := sourceFrom(r.Context())
	id := sessionIDOf(r)
	if id != "" {
		f.mu.Lock()
		fs := f.sessions[id]
		f.mu.Unlock()
		// A session belongs to the peer that opened it: a session id seen
		// by another peer is not a credential.
		if fs != nil && !samePeer(fs.src, src) {
			args := append([]any{"session", id, "owner_addr", fs.src.Address}, sourceAttrs(src)...)
			f.log.Warn("session used by another peer", args...)
			http.Error(w, "session belongs to another peer", http.StatusForbidden)
			return
		}
		if fs != nil && (fs.ended.Load() || !fs.backend().Alive()) {
			http.Error(w, "session ended: "+errString(fs.bs.Err()), http.StatusNotFound)
			return
		}
	}
	if f.maxSessions > 0 && f.opensSession(r) && f.backend.Sessions() >= f.maxSessions {
		f.log.Warn("session refused: at the session cap", append([]any{"max_sessions", f.maxSessions}, sourceAttrs(src)...)...)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "too many MCP sessions; retry later", http.StatusServiceUnavailable)
		return
	}
	if isSSEPath(r) {
		f.sse.ServeHTTP(w, r)
		return
	}
	f.streamable.ServeHTTP(w, r)
}

// samePeer reports whether two sources are the same caller: the same
// tailnet node when both are tailnet peers, else the same address.
func samePeer(a, b *policy.Source) bool {
	if a.Tailscale != nil && b.Tailscale != nil && a.Tailscale.Node.ID != "" {
		return a.Tailscale.Node.ID == b.Tailscale.Node.ID
	}
	return a.Address == b.Address
}

// close ends every front session and reaps the backend's children.
func (f *mcpFront) close() {
	f.mu.Lock()
	f.closed = true
	sessions := make([]*frontSession, 0, len(f.sessions))
	for _, fs := range f.sessions {
		sessions = append(sessions, fs)
	}
	f.mu.Unlock()
	for _, fs := range sessions {
		fs.ss.Close()
	}
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
	return n
}

// frontSession is one client's MCP session and its backend session.
type frontSession struct {
	f      *mcpFront
	src    *policy.Source
	server *mcp.Server
	// method, path and host of the request that opened the session; every
	// request of a session is on the same route.
	method, path, host string

	mu sync.Mutex
	ss *mcp.ServerSession
	bs *mcpstdio.Session
	// log carries the session id and the caller's identity, built once:
	// every request's access-log line uses it.
	log *slog.Logger

	// markers toggle the list_changed markers (see frontPeer.ListChanged).
	markers map[mcpstdio.ListKind]bool

	inflight atomic.Int64
	// ended is set once the backend session has ended; the session's id
	// then answers 404 so the client starts a new session.
	ended atomic.Bool
}

func (fs *frontSession) backend() *mcpstdio.Session {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.bs
}

func (fs *frontSession) middleware(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if method == "initialize" {
			start := time.Now()
			res, err := fs.initialize(ctx, req, next)
			fs.record(method, req, nil, res, err, time.Since(start))
			return res, err
		}
		if strings.HasPrefix(method, "notifications/") {
			// Client notifications are go-sdk's to handle (cancellation,
			// roots/list_changed through RootsListChangedHandler).
			return next(ctx, method, req)
		}
		bs := fs.backend()
		if bs == nil && fs.f.stateless {
			// A stateless request is a session of its own: its children
			// live as long as the request.
			var err error
			if bs, err = fs.openStateless(ctx, req); err != nil {
				return nil, err
			}
			defer bs.Close()
		}
		if bs == nil {
			// Before initialize go-sdk answers (and refuses) by itself.
			return next(ctx, method, req)
		}
		fs.inflight.Add(1)
		defer fs.inflight.Add(-1)
		start := time.Now()
		res, err := fs.dispatch(ctx, method, req, bs, next)
		fs.record(method, req, bs, res, err, time.Since(start))
		return res, err
	}
}

// dispatch forwards one request to the backend session, applying
// mcpAuthorization.
func (fs *frontSession) dispatch(ctx context.Context, method string, req mcp.Request, bs *mcpstdio.Session, next mcp.MethodHandler) (mcp.Result, error) {
	az := fs.authorizer(bs, req)
	switch p := req.GetParams().(type) {
	case *mcp.PingParams:
		if err := bs.Ping(ctx, p); err != nil {
			return nil, err
		}
		return next(ctx, method, req)
	case *mcp.ListToolsParams:
		res, err := bs.ListTools(ctx, p)
		if err == nil {
			res.Tools = slices.DeleteFunc(res.Tools, func(t *mcp.Tool) bool { return !az.tool(ctx, t.Name).Allow })
		}
		return res, err
	case *mcp.CallToolParamsRaw:
		if err := az.check("tools/call", "tool", p.Name, az.tool(ctx, p.Name)); err != nil {
			return nil, err
		}
		return bs.CallTool(ctx, p)
	case *mcp.ListPromptsParams:
		res, err := bs.ListPrompts(ctx, p)
		if err == nil {
			res.Prompts = slices.DeleteFunc(res.Prompts, func(pr *mcp.Prompt) bool { return !az.prompt(ctx, pr.Name).Allow })
		}
		return res, err
	case *mcp.GetPromptParams:
		if err := az.check("prompts/get", "prompt", p.Name, az.prompt(ctx, p.Name)); err != nil {
			return nil, err
		}
		return bs.GetPrompt(ctx, p)
	case *mcp.ListResourcesParams:
		res, err := bs.ListResources(ctx, p)
		if err == nil {
			res.Resources = slices.DeleteFunc(res.Resources, func(r *mcp.Resource) bool { return !az.resource(r.URI, r.Name).Allow })
		}
		return res, err
	case *mcp.ListResourceTemplatesParams:
		res, err := bs.ListResourceTemplates(ctx, p)
		if err == nil {
			res.ResourceTemplates = slices.DeleteFunc(res.ResourceTemplates, func(r *mcp.ResourceTemplate) bool { return !az.resource(r.URITemplate, r.Name).Allow })
		}
		return res, err
	case *mcp.ReadResourceParams:
		if err := az.check("resources/read", "resource", p.URI, az.resource(p.URI, "")); err != nil {
			return nil, err
		}
		return bs.ReadResource(ctx, p)
	case *mcp.CompleteParams:
		// Completing a prompt's arguments is part of getting it.
		if p.Ref != nil && p.Ref.Type == "ref/prompt" {
			if err := az.check("completion/complete", "prompt", p.Ref.Name, az.prompt(ctx, p.Ref.Name)); err != nil {
				return nil, err
			}
		}
		return bs.Complete(ctx, p)
	case *mcp.SubscribeParams:
		if err := az.check("resources/subscribe", "resource", p.URI, az.resource(p.URI, "")); err != nil {
			return nil, err
		}
		return next(ctx, method, req) // go-sdk records it, then SubscribeHandler forwards it
	case *mcp.SetLoggingLevelParams:
		// Forwarded, and recorded by go-sdk too: ServerSession.Log sends
		// only what the client's level admits.
		if err := bs.SetLoggingLevel(ctx, p); err != nil {
			return nil, err
		}
		return next(ctx, method, req)
	}
	return next(ctx, method, req)
}

// record writes the access log line and the metrics of one MCP request.
func (fs *frontSession) record(method string, req mcp.Request, bs *mcpstdio.Session, res mcp.Result, err error, took time.Duration) {
	var kind, name, target string
	if bs == nil {
		req = nil // initialize: nothing to name
	}
	switch p := paramsOf(req).(type) {
	case *mcp.CallToolParamsRaw:
		kind, name, target = "tool", p.Name, bs.PrefixTarget(p.Name)
	case *mcp.GetPromptParams:
		kind, name, target = "prompt", p.Name, bs.PrefixTarget(p.Name)
	case *mcp.ReadResourceParams:
		kind, name = "uri", p.URI
		target, _, _ = bs.ResolveURI(p.URI)
	case *mcp.SubscribeParams:
		kind, name = "uri", p.URI
		target, _, _ = bs.ResolveURI(p.URI)
	}
	outcome := "ok"
	var denied *deniedError
	switch {
	case errors.As(err, &denied):
		outcome = "denied"
	case err != nil:
		outcome = "error"
	default:
		if r, ok := res.(*mcp.CallToolResult); ok && r.IsError {
			outcome = "tool_error"
		}
	}
	toolLabel := ""
	if kind == "tool" || kind == "prompt" {
		toolLabel = name
	}
	if m := fs.f.metrics; m != nil {
		m.observeCall(fs.f.name, method, target, toolLabel, outcome, took)
	}
	args := []any{"method", method}
	if kind != "" {
		args = append(args, kind, name)
	}
	if target != "" {
		args = append(args, "target", target)
	}
	args = append(args, "outcome", outcome, "duration", took.Round(time.Microsecond))
	if err != nil && outcome != "denied" {
		args = append(args, "err", err.Error())
	}
	fs.mu.Lock()
	l := fs.log
	fs.mu.Unlock()
	if l == nil { // a stateless request: no session
		l = fs.f.log.With(sourceAttrs(fs.src)...)
	}
	l.Info("mcp call", args...)
}

// initialize starts the session's children, then lets go-sdk record the
// session, and answers with the target's own description of itself.
func (fs *frontSession) initialize(ctx context.Context, req mcp.Request, next mcp.MethodHandler) (mcp.Result, error) {
	ss, _ := req.GetSession().(*mcp.ServerSession)
	if ss == nil {
		return nil, errors.New("initialize outside a server session")
	}
	if fs.backend() != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: "session already initialized"}
	}
	p, _ := req.GetParams().(*mcp.InitializeParams)
	f := fs.f
	log := f.log.With(append([]any{"session", ss.ID()}, sourceAttrs(fs.src)...)...)
	var clientInfo *mcp.Implementation
	var caps *mcp.ClientCapabilities
	if p != nil {
		clientInfo, caps = p.ClientInfo, p.Capabilities
	}
	start := time.Now()
	bs, err := f.backend.Open(ctx, mcpstdio.OpenParams{ID: ss.ID(), Peer: frontPeer{ss, fs}, ClientInfo: clientInfo, Capabilities: caps, Identity: identityEnv(fs.src)})
	if err != nil {
		log.Error("session start failed", "err", err)
		return nil, err
	}
	res, err := next(ctx, "initialize", req)
	if err != nil {
		bs.Close()
		return nil, err
	}
	ir, ok := res.(*mcp.InitializeResult)
	if !ok {
		bs.Close()
		return nil, fmt.Errorf("initialize: unexpected result %T", res)
	}
	child := bs.InitializeResult()
	ir.Capabilities = child.Capabilities
	ir.Instructions = child.Instructions
	ir.ServerInfo = child.ServerInfo

	fs.mu.Lock()
	fs.ss, fs.bs, fs.log = ss, bs, log
	fs.mu.Unlock()
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		bs.Close()
		return nil, errors.New("gateway shutting down")
	}
	f.sessions[ss.ID()] = fs
	f.mu.Unlock()
	go fs.watch(log)
	client := ""
	if clientInfo != nil {
		client = clientInfo.Name
	}
	log.Info("mcp session opened", "client", client, "pids", bs.PIDs(), "duration", time.Since(start).Round(time.Millisecond))
	return ir, nil
}

// watch ties the front session and the backend session together: either
// ending ends the other.
func (fs *frontSession) watch(log *slog.Logger) {
	frontDone := make(chan struct{})
	go func() {
		fs.ss.Wait()
		close(frontDone)
	}()
	select {
	case <-frontDone:
		fs.bs.Close()
		log.Info("mcp session closed")
	case <-fs.bs.Done():
		// The child is gone. New requests get 404 at once, so the client
		// starts a new session; calls in flight first get the error that
		// names the child, then the session closes.
		fs.ended.Store(true)
		deadline := time.Now().Add(2 * time.Second)
		for fs.inflight.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond) // the last error response is written after the middleware returns
		fs.ss.Close()
		log.Warn("mcp session ended by its backend", "err", fs.bs.Err())
	}
	fs.f.mu.Lock()
	delete(fs.f.sessions, fs.ss.ID())
	fs.f.mu.Unlock()
}

func errString(err error) string {
	if err == nil {
		return "closed"
	}
	return err.Error()
}

// authorizer applies a front's mcpAuthorization to one request of a
// session.
type authorizer struct {
	fs  *frontSession
	bs  *mcpstdio.Session
	req *policy.Request
}

func (fs *frontSession) authorizer(bs *mcpstdio.Session, req mcp.Request) authorizer {
	var header map[string][]string
	if extra := req.GetExtra(); extra != nil {
		header = extra.Header
	}
	return authorizer{fs: fs, bs: bs, req: requestInput(fs.method, fs.path, fs.host, header)}
}

func (a authorizer) decide(m *policy.MCP) policy.Decision {
	rs := a.fs.f.authz.Load()
	if rs == nil {
		return policy.Decision{Allow: true}
	}
	return rs.Evaluate(policy.Input{Source: a.fs.src, Request: a.req, MCP: m})
}

// tool decides whether the caller may call the tool with front name name.
// Lists are filtered with the same question, so a list shows exactly what
// the caller may use.
func (a authorizer) tool(ctx context.Context, name string) policy.Decision {
	target, n, ok := a.bs.Resolve(ctx, name, "tool")
	if !ok {
		return policy.Decision{Allow: true} // the target answers "unknown tool"
	}
	return a.decide(&policy.MCP{Method: "tools/call", Tool: policy.Tool{Name: n, Target: target}})
}

func (a authorizer) prompt(ctx context.Context, name string) policy.Decision {
	target, n, ok := a.bs.Resolve(ctx, name, "prompt")
	if !ok {
		return policy.Decision{Allow: true}
	}
	return a.decide(&policy.MCP{Method: "prompts/get", Prompt: policy.Prompt{Name: n, Target: target}})
}

func (a authorizer) resource(uri, name string) policy.Decision {
	target, u, ok := a.bs.ResolveURI(uri)
	if !ok {
		return policy.Decision{Allow: true} // the backend answers "unknown resource"
	}
	return a.decide(&policy.MCP{Method: "resources/read", Resource: policy.Resource{URI: u, Name: name, Target: target}})
}

// check turns a denial into the MCP error the client shows, and logs it.
func (a authorizer) check(method, kind, name string, d policy.Decision) error {
	if d.Allow {
		return nil
	}
	args := append([]any{"session", a.fs.id(), "method", method, kind, name}, sourceAttrs(a.fs.src)...)
	args = append(args, "rule", d.Rule, "reason", d.Reason())
	a.fs.f.log.Warn("mcp call denied", args...)
	return &deniedError{wire: &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("%s %q: not permitted by tailgate policy", kind, name)}}
}

// deniedError is a call refused by mcpAuthorization. It unwraps to the
// JSON-RPC error the client gets.
type deniedError struct{ wire *jsonrpc.Error }

func (e *deniedError) Error() string { return e.wire.Error() }
func (e *deniedError) Unwrap() error { return e.wire }

func (fs *frontSession) id() string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.ss == nil {
		return ""
	}
	return fs.ss.ID()
}

// openStateless opens a backend session for one stateless request.
func (fs *frontSession) openStateless(ctx context.Context, req mcp.Request) (*mcpstdio.Session, error) {
	ss, _ := req.GetSession().(*mcp.ServerSession)
	if ss == nil {
		return nil, errNotInitialized
	}
	var caps *mcp.ClientCapabilities
	var info *mcp.Implementation
	if p := ss.InitializeParams(); p != nil {
		caps, info = p.Capabilities, p.ClientInfo
	}
	return fs.f.backend.Open(ctx, mcpstdio.OpenParams{ID: "stateless", Peer: frontPeer{ss, fs}, ClientInfo: info, Capabilities: caps, Identity: identityEnv(fs.src)})
}

// frontPeer is where a backend session's notifications and requests go:
// the front session, and for what go-sdk's ServerSession has no method
// for, the session's own server.
type frontPeer struct {
	*mcp.ServerSession
	fs *frontSession
}

func (p frontPeer) ResourceUpdated(ctx context.Context, params *mcp.ResourceUpdatedNotificationParams) error {
	return p.fs.server.ResourceUpdated(ctx, params)
}

// listChangedMarker is registered and unregistered on the session's own
// server to make go-sdk send a list_changed notification: go-sdk sends
// those only when a server's features change. tailgate answers lists
// itself, so the marker is never listed.
const listChangedMarker = "tailgate.list-changed"

func (p frontPeer) ListChanged(kind mcpstdio.ListKind) {
	fs := p.fs
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.markers == nil {
		fs.markers = make(map[mcpstdio.ListKind]bool)
	}
	fs.markers[kind] = !fs.markers[kind]
	on, srv := fs.markers[kind], fs.server
	switch kind {
	case mcpstdio.ListTools:
		if on {
			srv.AddTool(&mcp.Tool{Name: listChangedMarker, InputSchema: map[string]any{"type": "object"}}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				return nil, errNotInitialized
			})
		} else {
			srv.RemoveTools(listChangedMarker)
		}
	case mcpstdio.ListPrompts:
		if on {
			srv.AddPrompt(&mcp.Prompt{Name: listChangedMarker}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
				return nil, errNotInitialized
			})
		} else {
			srv.RemovePrompts(listChangedMarker)
		}
	case mcpstdio.ListResources:
		const uri = "tailgate://list-changed"
		if on {
			srv.AddResource(&mcp.Resource{URI: uri, Name: listChangedMarker}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
				return nil, errNotInitialized
			})
		} else {
			srv.RemoveResources(uri)
		}
	}
}

func paramsOf(req mcp.Request) mcp.Params {
	if req == nil {
		return nil
	}
	return req.GetParams()
}
