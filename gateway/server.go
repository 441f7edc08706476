// Package gateway owns tailgate's config model and loading, and serving
// it: binds, listeners and routes over HTTP, the authorization hooks, the
// MCP front that hands each session to mcpstdio, the access log, metrics,
// health and hot reload. It knows nothing of tsnet internals or child
// processes: a Network gives it listeners and an IdentifyFunc tells it who
// a peer is.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
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

// TLSNetwork is a Network that can serve HTTPS with its own certificates
// (the tailnet's, for protocol: HTTPS).
type TLSNetwork interface {
	ListenTLS(network, addr string) (net.Listener, error)
}

// ServiceNetwork is a Network that can serve a port of a Tailscale Service
// (tailscale.service).
type ServiceNetwork interface {
	ListenService(name string, port int) (net.Listener, error)
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
	// HidePaths are paths no stdio child may reach, besides the config's
	// tailscale.stateDir and authKeyFile: the node's state dir when it is
	// tsnode's default one (see mcpstdio.Options.HidePaths).
	HidePaths []string
	// SessionTTL closes MCP sessions idle this long, unless the config's
	// config.mcp.sessionTtl says otherwise; default 30m, as agentgateway.
	SessionTTL time.Duration
	// StopGrace is how long a child gets to exit after its stdin closes,
	// and again after SIGTERM; default 2s.
	StopGrace time.Duration
	// DrainTimeout is how long Shutdown lets MCP calls in flight finish
	// before it closes their sessions; default 3s.
	DrainTimeout time.Duration
	// ReadHeaderTimeout bounds reading a request's headers; default 10s.
	ReadHeaderTimeout time.Duration
	// BodyReadTimeout bounds reading an MCP request's body; default 30s.
	BodyReadTimeout time.Duration
	// WriteStallTimeout abandons an answer whose write to the client makes
	// no progress this long (the access log says write_error); default
	// 30s.
	WriteStallTimeout time.Duration
	// SSEInitTimeout closes a legacy SSE stream whose session is not
	// initialized in time; default 30s.
	SSEInitTimeout time.Duration
	// Hosts are names or addresses the gateway answers to (in the Host
	// header) besides those it knows: its node's MagicDNS names and tailnet
	// addresses (from a Network that is a NodeNames), the address a
	// connection was made to, listener and route hostnames, and the
	// Service's name. Requests naming any other host get 403. A server
	// served on loopback adds "127.0.0.1".
	Hosts []string
}

// Server serves a Config: one HTTP server per bind, with routes and
// policies that Reload swaps atomically.
type Server struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics
	ready   atomic.Bool
	denied  atomic.Uint64 // connections refused, for Stats
	// budget bounds sessions and requests in flight, for every route.
	budget *budget
	// buffers bound what every route's backend holds of messages being
	// read from remote targets.
	buffers *mcpstdio.Buffers
	// warming is set while Warm starts the targets: MCP requests get 503
	// and a line that says so.
	warming atomic.Bool

	// state is the routing of the current config.
	state atomic.Pointer[state]
	// self are the names of the node the server runs on, from Start.
	self atomic.Pointer[selfNames]
	// localhost are the peers that may name the gateway localhost.
	localhost localhostPeers
	// serviceIPs are the Service's virtual IPs, when there is a Service.
	serviceIPs atomic.Pointer[[]netip.Addr]

	mu       sync.Mutex
	network  Network
	fronts   map[string]*mcpFront // live, by route key and backend
	draining []*mcpFront          // replaced by a reload; serve their sessions until they end
	serving  map[int]*bindServer  // by port
	closed   bool
}

// state is one config's routing: binds → listeners → routes → fronts.
type state struct {
	cfg   *Config
	binds map[int]*bind
	ports []int
	hosts hostRules
}

type bind struct {
	port      int
	https     bool
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
	cors      *corsPolicy
	front     *mcpFront
	log       *slog.Logger
}

// bindServer is a port's listener and HTTP server; it outlives reloads.
type bindServer struct {
	port int
	ln   *authListener
	hs   *http.Server
	// svc serves the port as a Tailscale Service too.
	svc *authListener
}

// New builds a server for cfg. It starts nothing: children start per
// session (or in pools), listeners in Start.
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
	s := &Server{
		opts:    opts,
		log:     opts.Logger,
		budget:  newBudget(),
		buffers: mcpstdio.NewBuffers(0),
		fronts:  make(map[string]*mcpFront),
		serving: make(map[int]*bindServer),
	}
	s.metrics = newMetrics(s)
	st, fronts, err := s.build(cfg, nil)
	if err != nil {
		return nil, err
	}
	s.fronts = fronts
	s.setState(st)
	s.logWarnings(cfg)
	return s, nil
}

// setState makes st the current routing, and its config's session caps
// the gateway's.
func (s *Server) setState(st *state) {
	var max, perPeer int
	if g := st.cfg.Global.MCP; g != nil {
		max, perPeer = g.MaxSessions, g.MaxSessionsPerPeer
	}
	s.budget.setSessionCaps(max, perPeer)
	s.state.Store(st)
}

// logWarnings logs each of the config's warnings, one line each.
func (s *Server) logWarnings(cfg *Config) {
	for _, w := range cfg.Warnings {
		s.log.Warn("config warning", "at", fmt.Sprintf("%s:%d", w.File, w.Line), "rule", w.Path, "warning", w.Msg)
	}
}

// build turns cfg into routing, reusing the fronts of old whose backend is
// unchanged (their sessions and children carry on) and creating the rest.
func (s *Server) build(cfg *Config, old map[string]*mcpFront) (*state, map[string]*mcpFront, error) {
	st := &state{cfg: cfg, binds: make(map[int]*bind), hosts: newHostRules(cfg)}
	fronts := make(map[string]*mcpFront)
	var created []*mcpFront
	fail := func(err error) (*state, map[string]*mcpFront, error) {
		for _, f := range created {
			f.close()
		}
		return nil, nil, err
	}
	front := func(key, name string, m *MCPBackend, authz *policy.RuleSet) (*mcpFront, error) {
		routeKey := key
		key += "|" + backendSignature(cfg, m)
		if f, ok := fronts[key]; ok {
			return f, nil
		}
		if f, ok := old[key]; ok {
			f.setAuthz(authz)
			fronts[key] = f
			return f, nil
		}
		f, err := s.newFront(cfg, name, m, authz)
		if err != nil {
			return nil, err
		}
		f.routeKey = routeKey
		created = append(created, f)
		fronts[key] = f
		return f, nil
	}
	for i, b := range cfg.Binds {
		sb := &bind{port: b.Port, https: len(b.Listeners) > 0 && protocolOf(b.Listeners[0]) == "HTTPS"}
		for j, l := range b.Listeners {
			sl := &listener{name: l.Name, hostname: l.Hostname}
			for k, r := range l.Routes {
				name := r.Name
				if name == "" {
					name = fmt.Sprintf("binds[%d].listeners[%d].routes[%d]", i, j, k)
				}
				f, err := front(fmt.Sprintf("%d/%s/%s", b.Port, l.Name, name), name, r.Backends[0].MCP, r.mcpAuthz)
				if err != nil {
					return fail(err)
				}
				sl.routes = append(sl.routes, &route{name: name, hostnames: r.Hostnames, matches: r.Matches, authz: r.authz, cors: corsOf(r.Policies), front: f, log: s.log.With("route", name)})
			}
			sb.listeners = append(sb.listeners, sl)
		}
		st.binds[b.Port] = sb
		st.ports = append(st.ports, b.Port)
	}
	if m := cfg.MCP; m != nil {
		port := m.Port
		if port == 0 {
			port = DefaultMCPPort
		}
		f, err := front(fmt.Sprintf("%d/mcp", port), "mcp", &MCPBackend{Targets: m.Targets, StatefulMode: m.StatefulMode, PrefixMode: m.PrefixMode, FailureMode: m.FailureMode}, m.mcpAuthz)
		if err != nil {
			return fail(err)
		}
		st.binds[port] = &bind{port: port, listeners: []*listener{{
			name: "mcp",
			routes: []*route{{name: "mcp", front: f, authz: m.authz, cors: corsOf(m.Policies), log: s.log.With("route", "mcp"), matches: []Match{
				{Path: &PathMatch{Exact: "/mcp"}},
				{Path: &PathMatch{Exact: "/sse"}},
			}}},
		}}}
		st.ports = append(st.ports, port)
	}
	return st, fronts, nil
}

// corsOf is the cors policy of a route's policies, if any.
func corsOf(rp *RoutePolicies) *corsPolicy {
	if rp == nil {
		return nil
	}
	return newCORSPolicy(rp.CORS)
}

// maxMessageBytes is config.mcp.maxMessageBytes; 0 is mcpstdio's default.
func maxMessageBytes(cfg *Config) int {
	if g := cfg.Global.MCP; g != nil {
		return g.MaxMessageBytes
	}
	return 0
}

// backendSignature is what makes a route's backend the same across a
// reload: its targets and modes, and the session settings.
func backendSignature(cfg *Config, m *MCPBackend) string {
	b, _ := json.Marshal(struct {
		M *MCPBackend
		G *GlobalMCP
		// A secret another target gained must be kept from these
		// children too.
		S childSecrets
	}{m, cfg.Global.MCP, cfg.secrets})
	return string(b)
}

// npxEnv is a stdio target's Env, with npm_config_yes=true added for an
// npx target unless the target's Env or (without clear_env) the gateway's
// environment sets it. npm 7 and later ask before installing a package
// that is not in the cache, and with no terminal to answer, npm 11 gives
// up ("npx canceled due to missing packages and no YES option"): the seed
// config's `npx @modelcontextprotocol/server-everything` would fail on
// every machine that has not run it before.
func npxEnv(t *StdioTarget, lookup func(string) (string, bool)) map[string]string {
	if base := filepath.Base(t.Command()); base != "npx" && base != "npx.cmd" {
		return t.Env
	}
	for k := range t.Env {
		if strings.EqualFold(k, "npm_config_yes") {
			return t.Env
		}
	}
	if !t.ClearEnv {
		for _, k := range []string{"npm_config_yes", "NPM_CONFIG_YES"} {
			if _, ok := lookup(k); ok {
				return t.Env
			}
		}
	}
	env := make(map[string]string, len(t.Env)+1)
	maps.Copy(env, t.Env)
	env["npm_config_yes"] = "true"
	return env
}

func (s *Server) newFront(cfg *Config, name string, m *MCPBackend, mcpAuthz *policy.RuleSet) (*mcpFront, error) {
	targets := make([]mcpstdio.Target, len(m.Targets))
	for i, t := range m.Targets {
		if r, kind := t.remote(); r != nil {
			targets[i] = s.remoteTarget(t.Name, r)
			targets[i].Remote.SSE = kind == "sse"
			continue
		}
		targets[i] = mcpstdio.Target{
			Name: t.Name, Command: t.Stdio.Command(), Args: t.Stdio.Args, Env: npxEnv(t.Stdio, os.LookupEnv), ClearEnv: t.Stdio.ClearEnv,
			IdentityEnv: t.Stdio.IdentityEnv, Pool: t.Stdio.Pool,
			InitializeTimeout: time.Duration(t.Stdio.InitializeTimeout), RequestTimeout: time.Duration(t.Stdio.RequestTimeout),
		}
		if t.Stdio.User != "" {
			u, err := childUser(t.Stdio.User)
			if err != nil {
				return nil, fmt.Errorf("route %q: target %q: %w", name, t.Name, err)
			}
			targets[i].User = u
		}
	}
	backend, err := mcpstdio.NewBackend(name, targets, mcpstdio.Options{
		TailnetDial:     s.dialTailnet,
		Logger:          s.log,
		Version:         Version,
		PrefixMode:      mcpstdio.PrefixMode(m.PrefixMode),
		FailureMode:     mcpstdio.FailureMode(m.FailureMode),
		StopGrace:       s.opts.StopGrace,
		DropEnv:         slices.Concat(s.opts.DropEnv, cfg.secrets.Env),
		Secrets:         slices.Concat(s.opts.Secrets, secretValues(cfg.secrets.Values)),
		HidePaths:       slices.Concat(hiddenFromChildren(cfg.Tailscale), s.opts.HidePaths),
		Buffers:         s.buffers,
		MaxMessageBytes: maxMessageBytes(cfg),
	})
	if err != nil {
		return nil, fmt.Errorf("route %q: %w", name, err)
	}
	ttl := s.opts.SessionTTL
	if g := cfg.Global.MCP; g != nil && g.SessionTTL > 0 {
		ttl = time.Duration(g.SessionTTL)
	}
	return newMCPFront(name, backend, frontOptions{
		Logger: s.log, SessionTTL: ttl, Authz: mcpAuthz, Metrics: s.metrics, Budget: s.budget,
		Stateless:       m.StatefulMode == "stateless",
		BodyReadTimeout: s.opts.BodyReadTimeout, SSEInitTimeout: s.opts.SSEInitTimeout,
		WriteStallTimeout: s.opts.WriteStallTimeout,
	}), nil
}

// remoteTarget is the mcpstdio target of an mcp: {host: …} target.
func (s *Server) remoteTarget(name string, r *RemoteTarget) mcpstdio.Target {
	u := r.URL()
	headers := make(map[string]string, len(r.Headers))
	for k, v := range r.Headers {
		headers[k] = v.Value
	}
	host := u
	if pu, err := url.Parse(u); err == nil {
		host = pu.Hostname()
	}
	tailnet := isTailnetHost(host)
	if r.Tailnet != nil {
		tailnet = *r.Tailnet
	}
	return mcpstdio.Target{
		Name:              name,
		InitializeTimeout: time.Duration(r.InitializeTimeout),
		RequestTimeout:    time.Duration(r.RequestTimeout),
		Remote: &mcpstdio.Remote{
			URL: u, Tailnet: tailnet, Headers: headers, IdentityHeaders: r.IdentityHeaders,
			CAFile: r.CAFile, ConnectTimeout: time.Duration(r.ConnectTimeout),
		},
	}
}

// isTailnetHost reports whether a target's host is on the tailnet: a
// tailnet address (100.64.0.0/10, fd7a:115c:a1e0::/48), a MagicDNS short
// name (no dot) or a name under .ts.net. Those are dialled through
// tailgate's own node; anything else through the host's network.
func isTailnetHost(host string) bool {
	if ip, err := netip.ParseAddr(host); err == nil {
		return tailnetV4.Contains(ip) || tailnetV6.Contains(ip)
	}
	return host != "localhost" && !strings.Contains(host, ".") || strings.HasSuffix(host, ".ts.net")
}

var (
	tailnetV4 = netip.MustParsePrefix("100.64.0.0/10")
	tailnetV6 = netip.MustParsePrefix("fd7a:115c:a1e0::/48")
)

// DialNetwork is a Network that can dial tailnet hosts (a tsnet node).
type DialNetwork interface {
	Dial(ctx context.Context, network, addr string) (net.Conn, error)
}

// dialTailnet dials a tailnet host through the network the server was
// started on.
func (s *Server) dialTailnet(ctx context.Context, network, addr string) (net.Conn, error) {
	s.mu.Lock()
	n := s.network
	s.mu.Unlock()
	if d, ok := n.(DialNetwork); ok {
		return d.Dial(ctx, network, addr)
	}
	return nil, errors.New("not on a tailnet: tailgate has no node to dial tailnet hosts through")
}

// Config is the config being served.
func (s *Server) Config() *Config { return s.state.Load().cfg }

// Ports are the ports the config binds.
func (s *Server) Ports() []int { return append([]int(nil), s.state.Load().ports...) }

// Start listens on every bind's port on network and serves in the
// background until Shutdown. Reload listens on ports it adds the same way.
// A network that is a NodeNames (a running tailnet node) tells the server
// the names and addresses it answers to in the Host header.
func (s *Server) Start(network Network) error {
	s.mu.Lock()
	s.network = network
	s.mu.Unlock()
	if nn, ok := network.(NodeNames); ok {
		s.self.Store(newSelfNames(nn))
	}
	go s.housekeep(context.Background())
	for _, port := range s.Ports() {
		if err := s.listen(network, port); err != nil {
			s.closeListeners()
			return err
		}
	}
	return nil
}

// listen listens on port on network (with TLS for an HTTPS bind, and as
// the config's Tailscale Service too if it names one) and serves it.
func (s *Server) listen(network Network, port int) error {
	st := s.state.Load()
	addr := fmt.Sprintf(":%d", port)
	var ln net.Listener
	var err error
	if st.binds[port].https {
		tn, ok := network.(TLSNetwork)
		if !ok {
			return fmt.Errorf("bind port %d: HTTPS needs a network with certificates", port)
		}
		ln, err = tn.ListenTLS("tcp", addr)
	} else {
		ln, err = network.Listen("tcp", addr)
	}
	if err != nil {
		return fmt.Errorf("bind port %d: %w", port, err)
	}
	if err := s.Serve(port, ln); err != nil {
		return err
	}
	if svc := st.cfg.Tailscale.Service; svc != "" {
		sn, ok := network.(ServiceNetwork)
		if !ok {
			return fmt.Errorf("bind port %d: tailscale.service needs a tailnet node", port)
		}
		sln, err := sn.ListenService(svc, port)
		if err != nil {
			return err
		}
		s.serveService(port, sln)
		s.refreshServiceAddrs(network)
		s.log.Info("serving as a Tailscale Service", "service", svc, "port", port)
	}
	return nil
}

// Serve serves the bind on port on ln, which it takes over, in the
// background until Shutdown. Start uses it; tests and benchmarks use it to
// serve on loopback.
func (s *Server) Serve(port int, ln net.Listener) error {
	if _, ok := s.state.Load().binds[port]; !ok {
		ln.Close()
		return fmt.Errorf("no bind on port %d", port)
	}
	al := s.authListener(port, ln)
	hs := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveHTTP(port, w, r) }),
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		// Idle keep-alive connections cost a goroutine each; event streams
		// are not idle and are not affected.
		IdleTimeout: 2 * time.Minute,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*peerConn); ok {
				return withPeerConn(withSource(ctx, pc.src), pc)
			}
			return ctx
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		al.Close()
		return errors.New("server shut down")
	}
	s.serving[port] = &bindServer{port: port, ln: al, hs: hs}
	s.mu.Unlock()
	s.log.Info("listening", "port", port, "addr", ln.Addr().String())
	go func() {
		if err := hs.Serve(al); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.log.Error("serve", "port", port, "err", err)
		}
	}()
	return nil
}

// authListener wraps ln with networkAuthorization and its metrics.
func (s *Server) authListener(port int, ln net.Listener) *authListener {
	portLabel := strconv.Itoa(port)
	return newAuthListener(ln, func() *policy.RuleSet { return s.state.Load().cfg.networkAuthz }, func() bool { return s.state.Load().cfg.deniedReply() }, s.opts.Identify, s.log.With("port", port), func(d policy.Decision, took time.Duration) {
		s.metrics.identify.Observe(took.Seconds())
		outcome := "accepted"
		if !d.Allow {
			outcome = "denied"
			s.denied.Add(1)
		}
		s.metrics.connections.WithLabelValues(portLabel, outcome, d.Rule).Inc()
	})
}

// serveService serves the Service listener of port with the port's HTTP
// server.
func (s *Server) serveService(port int, ln net.Listener) {
	al := s.authListener(port, ln)
	s.mu.Lock()
	bs := s.serving[port]
	if bs == nil || s.closed {
		s.mu.Unlock()
		al.Close()
		return
	}
	bs.svc = al
	s.mu.Unlock()
	go bs.hs.Serve(al)
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, bs := range s.serving {
		bs.ln.Close()
		if bs.svc != nil {
			bs.svc.Close()
		}
	}
}

// Warm starts the stdio targets of every MCP backend once (remote ones
// have nothing to install) and waits for them, so that a
// first start's cost (npx fetching a package: 20 s and more) is paid
// before a client waits for it, not by the first client, whose connect
// timeout may be shorter (the MCP Inspector's is 15 s). Each target's
// initializeTimeout bounds it. While it runs, MCP requests get 503 with
// Retry-After and a line naming what is starting; what fails to start is
// logged, and will be tried again for the first client.
func (s *Server) Warm(ctx context.Context) {
	s.mu.Lock()
	fronts := make([]*mcpFront, 0, len(s.fronts))
	for _, f := range s.fronts {
		fronts = append(fronts, f)
	}
	s.mu.Unlock()
	if len(fronts) == 0 {
		return
	}
	s.warming.Store(true)
	defer s.warming.Store(false)
	var wg sync.WaitGroup
	for _, f := range fronts {
		wg.Go(func() {
			begin := time.Now()
			s.log.Info("starting the route's targets once before serving", "route", f.name)
			// Stdio targets only: a remote one has nothing to install.
			targets, err := f.backend.Warm(ctx)
			if err != nil {
				s.log.Warn("targets did not start; the first client will try again", "route", f.name, "started", targets, "err", err, "duration", time.Since(begin).Round(time.Millisecond))
				return
			}
			s.log.Info("targets started", "route", f.name, "targets", targets, "duration", time.Since(begin).Round(time.Millisecond))
		})
	}
	wg.Wait()
}

// SetReady marks the server ready (the node is running and the config
// loaded) or not, for /healthz/ready.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Ready reports what SetReady set.
func (s *Server) Ready() bool { return s.ready.Load() }

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
	var st Stats
	for _, f := range s.allFronts() {
		bs := f.backend.Stats()
		st.Sessions += bs.Sessions
		st.ChildrenStarted += bs.ChildrenStarted
		st.ChildrenRunning += bs.ChildrenRunning
	}
	st.DeniedConnections = s.denied.Load()
	return st
}

// allFronts are the live and draining fronts.
func (s *Server) allFronts() []*mcpFront {
	s.mu.Lock()
	defer s.mu.Unlock()
	fronts := make([]*mcpFront, 0, len(s.fronts)+len(s.draining))
	for _, f := range s.fronts {
		fronts = append(fronts, f)
	}
	return append(fronts, s.draining...)
}

// Shutdown stops accepting connections, lets MCP calls in flight finish
// for up to DrainTimeout, then closes every session, reaps every child and
// closes the HTTP servers. It returns when all of that is done or ctx
// expires.
func (s *Server) Shutdown(ctx context.Context) error {
	s.SetReady(false)
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
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
	for _, f := range s.allFronts() {
		wg.Go(f.close)
	}
	// Closing sessions reaps their children, each within the stop grace;
	// past ctx the shutdown goes on without waiting for the rest.
	closed := make(chan struct{})
	go func() { wg.Wait(); close(closed) }()
	select {
	case <-closed:
	case <-ctx.Done():
		s.log.Warn("shutdown: sessions still closing at the deadline; not waiting for them")
	}
	s.mu.Lock()
	servers := make([]*http.Server, 0, len(s.serving))
	for _, bs := range s.serving {
		servers = append(servers, bs.hs)
	}
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
	for _, f := range s.allFronts() {
		n += f.inflight()
	}
	return n
}

// serveHTTP routes a request on port to a listener by Host, then to the
// first route that matches, and counts it.
func (s *Server) serveHTTP(port int, w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w}
	routeName := "none"
	defer func() {
		code := sw.code
		if code == 0 {
			code = http.StatusOK
		}
		s.metrics.requests.WithLabelValues(routeName, strconv.Itoa(code)).Inc()
	}()
	st := s.state.Load()
	r, ok := s.reidentify(st, sw, r)
	if !ok {
		return
	}
	// Before routing: a page that rebinds a name of its own to the
	// gateway must not reach any route.
	if reason := s.hostProblem(st, r); reason != "" {
		s.refuse(sw, r, reason)
		return
	}
	b := st.binds[port]
	if b == nil {
		// The port was removed by a reload and is closing.
		http.Error(sw, "no bind on this port", http.StatusNotFound)
		return
	}
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
		http.Error(sw, "no listener for host "+host, http.StatusNotFound)
		return
	}
	// A preflight is routed as the request it asks about would be.
	mr := r
	if method, ok := preflightMethod(r); ok {
		asked := *r
		asked.Method = method
		mr = &asked
	}
	var match *route
	for _, rt := range l.routes {
		if rt.matchesRequest(host, mr) {
			match, routeName = rt, rt.name
			break
		}
	}
	// A browser page must not reach a route its origin is not allowed on
	// (the route's cors policy may allow more origins).
	if reason := originProblem(st, r, match.corsPolicy()); reason != "" {
		s.refuse(sw, r, reason)
		return
	}
	if match.corsPolicy().serve(sw, r) {
		return // a preflight, answered
	}
	// OAuth discovery: tailgate admits callers by their tailnet identity
	// and runs no authorization server. A clear 404 makes clients that
	// probe for one (mcp-remote, IDEs) go on without it, instead of
	// reaching an MCP route that would answer something else.
	if strings.HasPrefix(r.URL.Path, "/.well-known/") {
		serveWellKnown(sw, r)
		return
	}
	// A person (or curl) looking at the gateway's root gets a word on what
	// it is, unless a route claims "/" for itself by a path match.
	if r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead) && !acceptsEventStream(r) && (match == nil || len(match.matches) == 0) {
		serveRoot(sw, r, l)
		return
	}
	if match == nil {
		http.NotFound(sw, r)
		return
	}
	if s.warming.Load() {
		sw.Header().Set("Retry-After", "5")
		http.Error(sw, "tailgate is starting its MCP servers for the first time (npx may be fetching packages); try again in a few seconds", http.StatusServiceUnavailable)
		return
	}
	s.serveRoute(match, sw, r, host)
}

// acceptsEventStream reports whether r asks for an event stream (an MCP
// client's GET).
func acceptsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		if strings.Contains(v, "text/event-stream") {
			return true
		}
	}
	return false
}

// serveWellKnown answers /.well-known/*: nothing is there.
func serveWellKnown(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNotFound)
	if r.Method != http.MethodHead {
		io.WriteString(w, `{"error":"not_found","error_description":"tailgate uses no OAuth: callers are identified by their tailnet identity"}`+"\n")
	}
}

// serveRoot says what the gateway is and where its MCP endpoints are.
func serveRoot(w http.ResponseWriter, r *http.Request, l *listener) {
	paths := []string{}
	catchAll, sse := false, false
	for _, rt := range l.routes {
		if len(rt.matches) == 0 {
			catchAll, sse = true, true
		}
		for _, m := range rt.matches {
			switch p := m.describe(); {
			case p == "/sse":
				sse = true
			case p != "" && !slices.Contains(paths, p):
				paths = append(paths, p)
			}
		}
	}
	if catchAll && !slices.Contains(paths, "/mcp") {
		paths = append(paths, "/mcp")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "tailgate %s: an MCP gateway on the tailnet.\n", Version)
	if i := slices.Index(paths, "/mcp"); i > 0 {
		paths[0], paths[i] = paths[i], paths[0]
	}
	if len(paths) > 0 {
		fmt.Fprintf(&b, "MCP (Streamable HTTP): http://%s%s\n", r.Host, paths[0])
	}
	if len(paths) > 1 {
		fmt.Fprintf(&b, "Other routes: %s\n", strings.Join(paths[1:], " "))
	}
	if sse {
		fmt.Fprintf(&b, "Legacy SSE: http://%s/sse\n", r.Host)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodHead {
		io.WriteString(w, b.String())
	}
}

// serveRoute runs the route's authorization, then its front — or, for a
// session that a front replaced by a reload still holds, that front.
func (s *Server) serveRoute(rt *route, w http.ResponseWriter, r *http.Request, host string) {
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
	if id := sessionIDOf(r); id != "" && !rt.front.has(id) {
		s.mu.Lock()
		draining := append([]*mcpFront(nil), s.draining...)
		s.mu.Unlock()
		for _, f := range draining {
			// Only this route's own earlier front: a session is not
			// reachable through another route's path (and policy).
			if f.routeKey == rt.front.routeKey && f.has(id) {
				f.ServeHTTP(w, r)
				return
			}
		}
	}
	rt.front.ServeHTTP(w, r)
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

// describe is the path a match names ("/admin"), or "" if none.
func (m Match) describe() string {
	if p := m.Path; p != nil {
		if p.Exact != "" {
			return p.Exact
		}
		return p.PathPrefix
	}
	return ""
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

// Reload swaps in cfg: routes and policies change atomically for new
// requests; routes whose backend is unchanged keep their sessions and
// children; sessions of a changed backend carry on until they end; new
// ports are listened on and removed ones closed. A change to the tailscale
// block is logged as needing a restart. Reload never fails half-way: on
// error the running config stays.
func (s *Server) Reload(cfg *Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("server shut down")
	}
	old := s.state.Load()
	st, fronts, err := s.build(cfg, s.fronts)
	if err != nil {
		s.metrics.reloads.WithLabelValues("invalid").Inc()
		return err
	}
	s.logWarnings(cfg)
	if !reflect.DeepEqual(old.cfg.Tailscale, cfg.Tailscale) {
		s.log.Warn("config reload: the tailscale block changed; restart tailgate to apply it (the rest is applied now)")
	}
	retired := s.draining[:0:0]
	for key, f := range s.fronts {
		if fronts[key] != f {
			f.stopNewSessions()
			retired = append(retired, f)
		}
	}
	// The route's new rules apply to every running session of its earlier
	// fronts at once; a removed route's sessions end now.
	earlier := append(retired, s.draining...)
	s.draining = nil
	for _, f := range earlier {
		if nf := frontForRoute(fronts, f.routeKey); nf != nil {
			f.setAuthz(nf.authz.Load())
			s.draining = append(s.draining, f)
		} else {
			s.log.Info("config reload: route removed; closing its sessions", "route", f.name)
			go f.close()
		}
	}
	s.fronts = fronts
	s.setState(st)
	// Ports: listen on new ones, close removed ones.
	for port, bs := range s.serving {
		if _, ok := st.binds[port]; !ok {
			delete(s.serving, port)
			bs.ln.Close()
			if bs.svc != nil {
				bs.svc.Close()
			}
			go bs.hs.Shutdown(context.Background())
			s.log.Info("config reload: port closed", "port", port)
		}
	}
	var errs []error
	if s.network != nil {
		for _, port := range st.ports {
			if _, ok := s.serving[port]; ok {
				continue
			}
			s.mu.Unlock()
			err := s.listen(s.network, port)
			s.mu.Lock()
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	s.reapDrainedLocked()
	if err := errors.Join(errs...); err != nil {
		s.metrics.reloads.WithLabelValues("partial").Inc()
		return err
	}
	s.metrics.reloads.WithLabelValues("ok").Inc()
	s.log.Info("config reloaded", "file", cfg.File, "ports", st.ports, "routes", len(fronts))
	return nil
}

// frontForRoute is the front of fronts serving routeKey, if any.
func frontForRoute(fronts map[string]*mcpFront, routeKey string) *mcpFront {
	for _, f := range fronts {
		if f.routeKey == routeKey {
			return f
		}
	}
	return nil
}

// reapDrainedLocked closes the replaced fronts whose sessions have all
// ended: its backend's (a sessionless caller's children too) and its own
// (a legacy SSE stream not yet initialized has no backend session).
func (s *Server) reapDrainedLocked() {
	kept := s.draining[:0]
	for _, f := range s.draining {
		if f.backend.Sessions() == 0 && f.openSessions() == 0 {
			go f.close()
			continue
		}
		kept = append(kept, f)
	}
	s.draining = kept
}

// RecordReloadFailure counts a reload that did not get as far as Reload
// (the file did not parse).
func (s *Server) RecordReloadFailure() { s.metrics.reloads.WithLabelValues("invalid").Inc() }

// AdminHandler serves /metrics (Prometheus), /healthz/ready (200 once the
// node is running and the config is loaded, 503 before and while shutting
// down) and /healthz/live. Serve it on a loopback address: it is not
// behind the tailnet's policy.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.handler())
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, r *http.Request) {
		if !s.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /healthz/live", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "live")
	})
	return mux
}

// housekeep closes fronts that a reload replaced, once their sessions have
// ended.
func (s *Server) housekeep(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				return
			}
			s.reapDrainedLocked()
			network := s.network
			s.mu.Unlock()
			s.refreshServiceAddrs(network)
		}
	}
}

// secretValues are the config's secret values that are kept from
// children's environments by value: those of at least 8 bytes, as the log
// redaction's (a shorter one would remove every variable that happens to
// hold it; its variable is dropped by name all the same).
func secretValues(values []string) []string {
	var out []string
	for _, v := range values {
		if len(v) >= 8 {
			out = append(out, v)
		}
	}
	return out
}

// hiddenFromChildren are the paths no stdio child may reach
// (mcpstdio.Options.HidePaths): the configured state dir and auth key
// file. tsnode's default state dir is added by the caller
// (Options.HidePaths), which knows where the node put it.
func hiddenFromChildren(ts TailscaleConfig) []string {
	var paths []string
	if ts.StateDir != "" {
		paths = append(paths, ts.StateDir)
	}
	if ts.AuthKeyFile != "" {
		paths = append(paths, ts.AuthKeyFile)
	}
	return paths
}
