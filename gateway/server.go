// Package gateway owns tailgate's config model and loading, and serving
// it: binds, listeners and routes over HTTP, the authorization hooks, the
// MCP front that hands each session to the relay (gateway/relay), the
// access log, metrics, health and hot reload. It knows nothing of tsnet internals or child
// processes: a Network gives it listeners and an IdentifyFunc tells it who
// a peer is.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/audit"
	"github.com/tailgate-dev/tailgate/gateway/idtoken"
	"github.com/tailgate-dev/tailgate/mcpstdio/buffers"
	"github.com/tailgate-dev/tailgate/policy"
)

// This file holds Server: its options, New, Start and the listeners of
// its binds, Warm, and Shutdown. Building the routing is in build.go,
// routing a request in routing.go, reload in reload.go and the admin
// handler in admin.go.

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
	// DropEnv and Secrets are kept from every child (see relay.Options):
	// the gateway's auth key variables and the auth key itself.
	DropEnv []string
	Secrets []string
	// HidePaths are paths no stdio child may reach, besides the config's
	// tailscale.stateDir and authKeyFile: the node's state dir when it is
	// tsnode's default one (see relay.Options.HidePaths).
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
	// KeyDir holds the keys the gateway signs identity tokens with
	// (created 0700 if missing, and hidden from stdio children); "" keeps
	// them in memory, new at each start.
	KeyDir string
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
	buffers *buffers.Bound
	// warming is set while Warm starts the targets: MCP requests get 503
	// and a line that says so.
	warming atomic.Bool

	// signer signs identity tokens, once the gateway knows its tailnet
	// name (Start); stopSigner ends its key rotation.
	signer     atomic.Pointer[idtoken.Signer]
	stopSigner context.CancelFunc
	// audit is the audit trail (config.audit), opened at New; nil: none.
	audit *audit.Log
	// tracing is the tracer (config.tracing), opened at New; nil: off.
	tracing *tracing
	// explains lets one policy explanation run at a time (explain.go).
	explains explainGate
	// status is the status page's book: denials and per-tool calls.
	status *statusBook

	// state is the routing of the current config.
	state atomic.Pointer[state]
	// self are the names of the node the server runs on, from Start.
	self atomic.Pointer[selfNames]
	// oauth are the backendAuth.oauth targets' connectors (connectors.go).
	oauth connectors
	// localhost are the peers that may name the gateway localhost.
	localhost localhostPeers
	// serviceIPs are the Service's virtual IPs, when there is a Service.
	serviceIPs atomic.Pointer[[]netip.Addr]
	// serviceIPsAsked is when a request last had them learnt again
	// (unix nanoseconds; refreshServiceAddrsNow).
	serviceIPsAsked atomic.Int64

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
	// limits are the config's limits and what they count (limits.go).
	limits limitRegistry
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
	// status is set for a route that serves the status page (its backend
	// is `status: {}`); front is nil then.
	status bool
	log    *slog.Logger
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
	if opts.KeyDir != "" {
		// It exists before any child starts, so that it can be hidden.
		if err := os.MkdirAll(opts.KeyDir, 0o700); err != nil {
			return nil, fmt.Errorf("identity token keys: %w", err)
		}
		opts.HidePaths = append(slices.Clip(opts.HidePaths), opts.KeyDir)
	}
	s := &Server{
		opts:    opts,
		log:     opts.Logger,
		budget:  newBudget(),
		buffers: buffers.New(0),
		fronts:  make(map[string]*mcpFront),
		serving: make(map[int]*bindServer),
		status:  newStatusBook(),
	}
	s.metrics = newMetrics(s)
	trail, err := openAudit(cfg)
	if err != nil {
		return nil, err
	}
	s.audit = trail
	if s.tracing, err = openTracing(cfg, s.log); err != nil {
		return nil, err
	}
	st, fronts, err := s.build(cfg, nil)
	if err != nil {
		s.tracing.shutdown(context.Background())
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
		s.audit.SetGateway(nn.DNSName())
	}
	go s.housekeep(context.Background())
	for _, port := range s.Ports() {
		if err := s.listen(network, port); err != nil {
			s.closeListeners()
			return err
		}
	}
	if nn, ok := network.(NodeNames); ok {
		if issuer := s.issuerURL(nn.DNSName()); issuer != "" {
			ctx, cancel := context.WithCancel(context.Background())
			s.mu.Lock()
			s.stopSigner = cancel
			s.mu.Unlock()
			if err := s.openSigner(ctx, issuer); err != nil {
				s.closeListeners()
				return err
			}
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

// connState counts, and logs, a connection closed before a request came
// whole on it: its headers not read within readHeaderTimeout (a path to
// the peer that loses or delays packets, a gateway starved of CPU), or a
// client that connected and left. net/http closes those without a word.
func (s *Server) connState(port int) func(net.Conn, http.ConnState) {
	portLabel := strconv.Itoa(port)
	return func(c net.Conn, st http.ConnState) {
		if pc, ok := c.(*peerConn); ok && st == http.StateClosed && !pc.served.Load() {
			s.metrics.unused.WithLabelValues(portLabel).Inc()
			s.log.Debug("connection closed before a request came whole on it", append([]any{"port", port}, sourceAttrs(pc.src)...)...)
		}
	}
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
		ErrorLog:  slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnState: s.connState(port),
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
	return newAuthListener(ln, func() *policy.RuleSet { return s.state.Load().cfg.networkAuthz }, func() bool { return s.state.Load().cfg.deniedReply() }, s.opts.Identify, s.log.With("port", port), func(src *policy.Source, remote netip.AddrPort, d policy.Decision, took time.Duration) {
		s.auditConnection(src, remote, d)
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

// answerLinger is how long Shutdown waits, once the calls in flight have
// answered, before it closes their sessions' streams.
const answerLinger = 250 * time.Millisecond

// Shutdown stops accepting connections, lets MCP calls in flight finish
// for up to DrainTimeout, then closes every session, reaps every child and
// closes the HTTP servers. It returns when all of that is done or ctx
// expires.
func (s *Server) Shutdown(ctx context.Context) error {
	s.SetReady(false)
	s.mu.Lock()
	s.closed = true
	if s.stopSigner != nil {
		s.stopSigner()
	}
	s.mu.Unlock()
	s.closeListeners()
	drain := time.NewTimer(s.opts.DrainTimeout)
	defer drain.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	answered := s.inflight() > 0
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
	if answered && s.inflight() == 0 {
		// The last answers are written, not yet read: a Streamable HTTP
		// client that sees its standalone stream end first fails the call
		// whose answer it was about to read. Give it a moment.
		select {
		case <-time.After(answerLinger):
		case <-ctx.Done():
		}
	}
	var wg sync.WaitGroup
	for _, f := range s.allFronts() {
		// Nobody waits for a graceful end of each child any more: a
		// server that outlives its input is SIGTERMed at once.
		f.backend.ShuttingDown()
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
	// Every call has ended: its spans are flushed, for a bounded time.
	s.tracing.shutdown(ctx)
	if err := s.audit.Close(); err != nil {
		errs = append(errs, err)
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
