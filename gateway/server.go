// Package gateway owns tailgate's config model and loading, and serving
// it: binds, listeners and routes over HTTP, the authorization hooks, and
// the MCP front that hands each session to mcpstdio. It knows nothing of
// tsnet internals or child processes: a Network gives it listeners and an
// IdentifyFunc tells it who a peer is.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tailgate-dev/tailgate/mcpstdio"
	"github.com/tailgate-dev/tailgate/policy"
)

// Network is where the gateway listens. tsnode.Node is one: its listeners
// accept only tailnet connections on the node's own addresses.
type Network interface {
	Listen(network, addr string) (net.Listener, error)
}

// Options configure a Server. The zero value is usable.
type Options struct {
	// Logger receives the gateway's events. Default: slog.Default().
	Logger *slog.Logger
	// Identify resolves a connection's peer; default: address only.
	Identify IdentifyFunc
	// DropEnv and Secrets are kept from every child (see mcpstdio.Options):
	// the gateway's auth key variables and the auth key itself.
	DropEnv []string
	Secrets []string
	// SessionTTL closes MCP sessions idle this long; default 30m, as
	// agentgateway's config.mcp.sessionTtl.
	SessionTTL time.Duration
	// StopGrace is how long a child gets to exit after its stdin closes,
	// and again after SIGTERM; default 2s.
	StopGrace time.Duration
	// DrainTimeout is how long Shutdown lets MCP calls in flight finish
	// before it closes their sessions; default 3s.
	DrainTimeout time.Duration
	// ReadHeaderTimeout bounds reading a request's headers; default 10s.
	ReadHeaderTimeout time.Duration
}

// Server serves a Config: one HTTP server per bind.
type Server struct {
	cfg  *Config
	opts Options
	log  *slog.Logger

	binds  []*bind
	fronts []*mcpFront

	deniedConns atomic.Uint64

	mu      sync.Mutex
	serving []*http.Server
	lns     []net.Listener
}

type bind struct {
	port      int
	listeners []*listener
}

type listener struct {
	name     string
	hostname string
	routes   []*route
}

type route struct {
	name      string
	hostnames []string
	matches   []Match
	authz     *policy.RuleSet
	handler   http.Handler
	log       *slog.Logger
}

// New builds a server for cfg. It starts nothing: children start per
// session, listeners in Start.
func New(cfg *Config, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Identify == nil {
		opts.Identify = addressOnly
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = 30 * time.Minute
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 3 * time.Second
	}
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = 10 * time.Second
	}
	s := &Server{cfg: cfg, opts: opts, log: opts.Logger}
	for i, b := range cfg.Binds {
		sb := &bind{port: b.Port}
		for j, l := range b.Listeners {
			sl := &listener{name: l.Name, hostname: l.Hostname}
			for k, r := range l.Routes {
				name := r.Name
				if name == "" {
					name = fmt.Sprintf("binds[%d].listeners[%d].routes[%d]", i, j, k)
				}
				front, err := s.newFront(name, r.Backends[0].MCP, r.mcpAuthz)
				if err != nil {
					return nil, err
				}
				sl.routes = append(sl.routes, &route{name: name, hostnames: r.Hostnames, matches: r.Matches, authz: r.authz, handler: front, log: s.log.With("route", name)})
			}
			sb.listeners = append(sb.listeners, sl)
		}
		s.binds = append(s.binds, sb)
	}
	if m := cfg.MCP; m != nil {
		port := m.Port
		if port == 0 {
			port = DefaultMCPPort
		}
		front, err := s.newFront("mcp", &MCPBackend{Targets: m.Targets, StatefulMode: m.StatefulMode, PrefixMode: m.PrefixMode, FailureMode: m.FailureMode}, m.mcpAuthz)
		if err != nil {
			return nil, err
		}
		s.binds = append(s.binds, &bind{port: port, listeners: []*listener{{
			name: "mcp",
			routes: []*route{{name: "mcp", handler: front, authz: m.authz, log: s.log.With("route", "mcp"), matches: []Match{
				{Path: &PathMatch{Exact: "/mcp"}},
				{Path: &PathMatch{Exact: "/sse"}},
			}}},
		}}})
	}
	return s, nil
}

func (s *Server) newFront(name string, m *MCPBackend, mcpAuthz *policy.RuleSet) (*mcpFront, error) {
	targets := make([]mcpstdio.Target, len(m.Targets))
	for i, t := range m.Targets {
		targets[i] = mcpstdio.Target{
			Name: t.Name, Command: t.Stdio.Cmd, Args: t.Stdio.Args, Env: t.Stdio.Env, ClearEnv: t.Stdio.ClearEnv,
			IdentityEnv: t.Stdio.IdentityEnv, Pool: t.Stdio.Pool,
			InitializeTimeout: time.Duration(t.Stdio.InitializeTimeout), RequestTimeout: time.Duration(t.Stdio.RequestTimeout),
		}
	}
	backend, err := mcpstdio.NewBackend(name, targets, mcpstdio.Options{
		Logger:      s.log,
		SDKLogger:   quiet(s.log, slog.LevelWarn),
		PrefixMode:  mcpstdio.PrefixMode(m.PrefixMode),
		FailureMode: mcpstdio.FailureMode(m.FailureMode),
		StopGrace:   s.opts.StopGrace,
		DropEnv:     s.opts.DropEnv,
		Secrets:     s.opts.Secrets,
	})
	if err != nil {
		return nil, fmt.Errorf("route %q: %w", name, err)
	}
	ttl, maxSessions := s.opts.SessionTTL, 0
	if g := s.cfg.Global.MCP; g != nil {
		if g.SessionTTL > 0 {
			ttl = time.Duration(g.SessionTTL)
		}
		maxSessions = g.MaxSessions
	}
	front := newMCPFront(name, backend, frontOptions{
		Logger: s.log, SessionTTL: ttl, Authz: mcpAuthz,
		Stateless: m.StatefulMode == "stateless", MaxSessions: maxSessions,
	})
	s.fronts = append(s.fronts, front)
	return front, nil
}

// Ports are the ports the config binds.
func (s *Server) Ports() []int {
	ports := make([]int, len(s.binds))
	for i, b := range s.binds {
		ports[i] = b.port
	}
	return ports
}

// Start listens on every bind's port on network and serves in the
// background until Shutdown.
func (s *Server) Start(network Network) error {
	for _, b := range s.binds {
		ln, err := network.Listen("tcp", fmt.Sprintf(":%d", b.port))
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("bind port %d: %w", b.port, err)
		}
		s.Serve(b.port, ln)
	}
	return nil
}

// Serve serves the bind on port on ln, which it takes over, in the
// background until Shutdown. Start uses it; tests and benchmarks use it to
// serve on loopback.
func (s *Server) Serve(port int, ln net.Listener) error {
	var b *bind
	for _, cand := range s.binds {
		if cand.port == port {
			b = cand
		}
	}
	if b == nil {
		return fmt.Errorf("no bind on port %d", port)
	}
	al := newAuthListener(ln, s.cfg.networkAuthz, s.opts.Identify, s.log.With("port", port), func(policy.Decision) {
		s.deniedConns.Add(1)
	})
	hs := &http.Server{
		Handler:           b,
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		// Idle keep-alive connections cost a goroutine each; event streams
		// are not idle and are not affected.
		IdleTimeout: 2 * time.Minute,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*peerConn); ok {
				return withSource(ctx, pc.src)
			}
			return ctx
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	s.serving = append(s.serving, hs)
	s.lns = append(s.lns, al)
	s.mu.Unlock()
	s.log.Info("listening", "port", port, "addr", ln.Addr().String())
	go func() {
		if err := hs.Serve(al); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.log.Error("serve", "port", port, "err", err)
		}
	}()
	return nil
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ln := range s.lns {
		ln.Close()
	}
}

// Stats is a snapshot of the server's activity.
type Stats struct {
	// DeniedConnections counts connections refused by
	// networkAuthorization or because their peer could not be identified.
	DeniedConnections uint64
	// Sessions is the number of open MCP sessions.
	Sessions int
	// ChildrenStarted counts child processes started.
	ChildrenStarted uint64
	// ChildrenRunning is the number of child processes not yet reaped.
	ChildrenRunning int64
}

// Stats reports the server's activity.
func (s *Server) Stats() Stats {
	st := Stats{DeniedConnections: s.deniedConns.Load()}
	for _, f := range s.fronts {
		bs := f.backend.Stats()
		st.Sessions += bs.Sessions
		st.ChildrenStarted += bs.ChildrenStarted
		st.ChildrenRunning += bs.ChildrenRunning
	}
	return st
}

// Shutdown stops accepting connections, lets MCP calls in flight finish
// for up to DrainTimeout, then closes every session, reaps every child and
// closes the HTTP servers. It returns when all of that is done or ctx
// expires.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeListeners()
	drain := time.NewTimer(s.opts.DrainTimeout)
	defer drain.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
wait:
	for s.inflight() > 0 {
		select {
		case <-tick.C:
		case <-drain.C:
			s.log.Warn("shutdown: calls still in flight after drain timeout; closing their sessions", "inflight", s.inflight())
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	var wg sync.WaitGroup
	for _, f := range s.fronts {
		wg.Go(f.close)
	}
	wg.Wait()
	s.mu.Lock()
	servers := s.serving
	s.mu.Unlock()
	var errs []error
	for _, hs := range servers {
		if err := hs.Shutdown(ctx); err != nil {
			hs.Close()
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Server) inflight() int64 {
	var n int64
	for _, f := range s.fronts {
		n += f.inflight()
	}
	return n
}

// ServeHTTP routes a request to a listener by Host, then to the first
// route that matches.
func (b *bind) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	var l *listener
	for _, cand := range b.listeners {
		if cand.hostname == "" && l == nil {
			l = cand
		}
		if cand.hostname != "" && strings.EqualFold(cand.hostname, host) {
			l = cand
			break
		}
	}
	if l == nil {
		http.Error(w, "no listener for host "+host, http.StatusNotFound)
		return
	}
	for _, rt := range l.routes {
		if rt.matchesRequest(host, r) {
			rt.serve(w, r, host)
			return
		}
	}
	http.NotFound(w, r)
}

// serve runs the route's authorization, then its backend.
func (rt *route) serve(w http.ResponseWriter, r *http.Request, host string) {
	if rt.authz != nil {
		src := sourceFrom(r.Context())
		d := rt.authz.Evaluate(policy.Input{Source: src, Request: requestInput(r.Method, r.URL.Path, host, r.Header)})
		if !d.Allow {
			args := append(sourceAttrs(src), "method", r.Method, "path", r.URL.Path, "rule", d.Rule, "reason", d.Reason())
			rt.log.Warn("request denied", args...)
			http.Error(w, "forbidden by tailgate policy", http.StatusForbidden)
			return
		}
	}
	rt.handler.ServeHTTP(w, r)
}

func (rt *route) matchesRequest(host string, r *http.Request) bool {
	if len(rt.hostnames) > 0 && !containsFold(rt.hostnames, host) {
		return false
	}
	if len(rt.matches) == 0 {
		return true
	}
	for _, m := range rt.matches {
		if m.matches(r) {
			return true
		}
	}
	return false
}

func (m Match) matches(r *http.Request) bool {
	if m.Method != "" && !strings.EqualFold(m.Method, r.Method) {
		return false
	}
	if p := m.Path; p != nil {
		switch {
		case p.Exact != "":
			return r.URL.Path == p.Exact
		case p.PathPrefix != "":
			return pathHasPrefix(r.URL.Path, p.PathPrefix)
		}
	}
	return true
}

// pathHasPrefix matches whole path elements, as Gateway API's PathPrefix:
// "/mcp" matches "/mcp" and "/mcp/x", not "/mcpx".
func pathHasPrefix(path, prefix string) bool {
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix == "" {
		return true
	}
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}
