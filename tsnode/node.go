// Package tsnode owns tailgate's tailnet node: the tsnet lifecycle (auth
// key, ephemeral registration, tags, state, control server), listening on
// the node's tailnet addresses only, and turning a peer address into an
// Identity. It knows nothing of MCP or CEL.
package tsnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tailscale.com/envknob"
	"tailscale.com/ipn"
	"tailscale.com/ipn/store/mem"
	"tailscale.com/tailcfg"
	"tailscale.com/tsnet"
)

// Config describes the node.
type Config struct {
	// Hostname is the node's name on the tailnet; default "tailgate".
	Hostname string
	// ControlURL is the coordination server; empty is Tailscale's.
	ControlURL string
	// AuthKey registers the node; empty means interactive login (the
	// login URL is logged) unless the state already holds a node key.
	AuthKey string
	// Ephemeral registers an ephemeral node, logged out on Close.
	Ephemeral bool
	// StateDir holds the node's state; default
	// $XDG_CONFIG_HOME/tailgate/<hostname>. It is created 0700.
	StateDir string
	// MemoryState keeps the node's keys in memory only (ephemeral nodes).
	MemoryState bool
	// AdvertiseTags are requested for the node.
	AdvertiseTags []string
	// StartTimeout bounds Start; default 60s, or 10m when the node must be
	// logged in interactively.
	StartTimeout time.Duration
	// LogUpload lets the node upload its client logs to Tailscale's log
	// service. Off by default.
	LogUpload bool
	// Logger receives the node's events. tsnet's own chatter goes to it at
	// debug level.
	Logger *slog.Logger
	// Verbose also passes tsnet's backend logs (magicsock, netmap, ...) to
	// Logger at debug level.
	Verbose bool
	// ControlReport is how long Start waits for the control server before
	// it says that the node has not reached it, and why; default 10s. An
	// error from the control server is logged as soon as it happens.
	ControlReport time.Duration
}

// DefaultHostname is the node's name when the config gives none.
const DefaultHostname = "tailgate"

// Node is tailgate's tailnet node.
type Node struct {
	cfg    Config
	log    *slog.Logger
	srv    *tsnet.Server
	tmpDir string // removed on Close; set when state is in memory only

	// controlErr is the last error talking to the control server that
	// tsnet reported; controlErrs is told of each.
	controlMu   sync.Mutex
	controlErr  string
	controlErrs chan string

	started atomic.Bool // tsnet.Server.Close panics on a server never started
	// srvStarted is closed once tsnet.Server.Start has returned: its Close
	// must not run while Start still sets the server up (they race).
	srvStarted chan struct{}
	// closeOnce makes Close once: a second tsnet Close would wait for a
	// first that does not return.
	closeOnce sync.Once
	closeErr  error
	up        atomic.Bool // Start succeeded
	// resolver is set once Start has succeeded.
	resolver  *Resolver
	stopWatch context.CancelFunc
	watchDone chan struct{}

	self
}

// New prepares a node; Start joins the tailnet.
func New(cfg Config) (*Node, error) {
	if cfg.Hostname == "" {
		cfg.Hostname = DefaultHostname
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MemoryState && !cfg.Ephemeral {
		return nil, errors.New("tailnet: in-memory state needs an ephemeral node")
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("hostname", cfg.Hostname), controlErrs: make(chan string, 1)}
	dir := cfg.StateDir
	switch {
	case dir == "" && cfg.MemoryState:
		// tsnet still wants a directory (for its log buffers); a private
		// temporary one keeps the state off the host.
		tmp, err := os.MkdirTemp("", "tailgate-"+cfg.Hostname+"-")
		if err != nil {
			return nil, fmt.Errorf("tailnet: state dir: %w", err)
		}
		dir, n.tmpDir = tmp, tmp
	case dir == "":
		var err error
		if dir, err = DefaultStateDir(cfg.Hostname, os.Geteuid()); err != nil {
			return nil, err
		}
	}
	if err := ensurePrivateDir(dir); err != nil {
		return nil, fmt.Errorf("tailnet: state dir %s: %w", dir, err)
	}
	n.cfg.StateDir = dir
	n.srv = &tsnet.Server{
		Dir:           dir,
		Hostname:      cfg.Hostname,
		ControlURL:    cfg.ControlURL,
		AuthKey:       cfg.AuthKey,
		Ephemeral:     cfg.Ephemeral,
		AdvertiseTags: cfg.AdvertiseTags,
		UserLogf:      n.userLogf,
		Logf:          n.backendLogf,
	}
	if cfg.MemoryState {
		n.srv.Store = new(mem.Store)
	}
	return n, nil
}

// SystemStateDir is where root's nodes keep their state by default.
const SystemStateDir = "/var/lib/tailgate"

// DefaultStateDir is a node's state dir when the config names none:
// $STATE_DIRECTORY/<hostname> when set (systemd's StateDirectory= sets
// it). Else, for root, SystemStateDir/<hostname>, outside any home
// directory: the
// gateway hides its state dir from stdio children, and Landlock can only
// do that by denying them new entries in the dir's ancestors (a right on
// a directory holds for all beneath it), which under HOME would break
// npx's first ~/.npm; nothing creates entries directly in /var/lib. A
// node that already has state at the older default,
// ~/.config/tailgate/<hostname>, keeps it (moving it would change the
// node's identity on the tailnet). For other users it is that older
// default, the only persistent place they can write.
func DefaultStateDir(hostname string, euid int) (string, error) {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		// systemd may list several, colon-separated: the first is ours.
		d, _, _ = strings.Cut(d, ":")
		return filepath.Join(d, hostname), nil
	}
	base, err := os.UserConfigDir()
	home := ""
	if err == nil {
		home = filepath.Join(base, "tailgate", hostname)
	}
	if euid == 0 {
		if _, serr := os.Stat(home); home == "" || serr != nil {
			return filepath.Join(SystemStateDir, hostname), nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("tailnet: no stateDir configured and no user config dir: %w", err)
	}
	return home, nil
}

// ensurePrivateDir creates dir 0700, or tightens an existing one to 0700:
// it holds the node's private keys.
func ensurePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return errors.New("not a directory")
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return err
		}
	}
	// Fail now, with the path in the message, rather than deep in tsnet.
	probe, err := os.CreateTemp(dir, ".writable-")
	if err != nil {
		return fmt.Errorf("not writable: %w", err)
	}
	probe.Close()
	return os.Remove(probe.Name())
}

// userLogf takes tsnet's user-facing lines. The login URL is logged by
// Start, once; tsnet would repeat it every few seconds.
func (n *Node) userLogf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if strings.HasPrefix(msg, "To start this tsnet server") || strings.HasPrefix(msg, "AuthLoop:") {
		return
	}
	n.log.Debug("tsnet", "msg", strings.TrimSpace(msg))
}

func (n *Node) backendLogf(format string, args ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	// The backend reports every failed exchange with the control server
	// (an unknown host, a refused connection, a TLS error) this way, and
	// nowhere else.
	if err, ok := strings.CutPrefix(msg, "Received error: "); ok && !isAuthKeyError(err) {
		n.controlMu.Lock()
		n.controlErr = err
		n.controlMu.Unlock()
		select {
		case n.controlErrs <- err:
		default:
		}
	}
	if n.cfg.Verbose {
		n.log.Debug("tsnet backend", "msg", msg)
	}
}

// lastControlErr is the last error talking to the control server.
func (n *Node) lastControlErr() string {
	n.controlMu.Lock()
	defer n.controlMu.Unlock()
	return n.controlErr
}

// ErrAuthKey is returned by Start when the control server refuses the
// auth key.
var ErrAuthKey = errors.New("the control server rejected the auth key")

// Start joins the tailnet and waits until the node is Running, for up to
// StartTimeout. It logs the node's tailnet addresses and MagicDNS name
// once, and, when the node needs an interactive login, the login URL once.
func (n *Node) Start(ctx context.Context) error {
	if !n.cfg.LogUpload {
		// tsnet uploads client logs to log.tailscale.com unless this
		// process-wide knob is set before the node starts.
		envknob.SetNoLogsNoSupport()
	}
	timeout := n.cfg.StartTimeout
	interactive := n.cfg.AuthKey == "" && !n.hasState()
	if timeout <= 0 {
		timeout = 60 * time.Second
		if interactive {
			timeout = 10 * time.Minute
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	n.srvStarted = make(chan struct{})
	n.started.Store(true)
	err := n.srv.Start()
	close(n.srvStarted)
	if err != nil {
		return fmt.Errorf("tailnet: start: %w", err)
	}
	lc, err := n.srv.LocalClient()
	if err != nil {
		return fmt.Errorf("tailnet: start: %w", err)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	var lastState ipn.State
	var stateMu sync.Mutex
	var loginURL atomic.Bool
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		n.reportControl(watchCtx, &loginURL)
	}()
	// Whatever Start returns is the last word on the start: the reporter
	// says nothing after it.
	defer func() {
		stopWatch()
		<-reported
	}()
	go func() {
		w, err := lc.WatchIPNBus(watchCtx, ipn.NotifyInitialState)
		if err != nil {
			return
		}
		defer w.Close()
		loggedURL := ""
		for {
			note, err := w.Next()
			if err != nil {
				return
			}
			if note.State != nil {
				stateMu.Lock()
				lastState = *note.State
				stateMu.Unlock()
			}
			if u := note.BrowseToURL; u != nil && *u != "" && *u != loggedURL {
				loggedURL = *u
				loginURL.Store(true)
				n.log.Warn("tailnet login required: open this URL to add the node, or set an auth key", "url", *u)
			}
		}
	}()

	st, err := n.srv.Up(ctx)
	if err != nil {
		stateMu.Lock()
		state := lastState
		stateMu.Unlock()
		switch {
		case isAuthKeyError(err.Error()):
			return fmt.Errorf("tailnet: %w (control %s): %v", ErrAuthKey, n.controlName(), trimUp(err))
		case ctx.Err() != nil && n.lastControlErr() != "":
			return fmt.Errorf("tailnet: node not running after %s (state %v): cannot reach the control server %s: %s", timeout, state, n.controlName(), n.lastControlErr())
		case ctx.Err() != nil:
			return fmt.Errorf("tailnet: node not running after %s (state %v, control %s)", timeout, state, n.controlName())
		}
		return fmt.Errorf("tailnet: start (control %s): %v", n.controlName(), trimUp(err))
	}
	var dnsName string
	if st.Self != nil {
		dnsName = st.Self.DNSName
	}
	n.set(st.TailscaleIPs, dnsName)
	ips, name := n.IPs(), n.DNSName()
	n.up.Store(true)
	n.startIdentity(lc.WhoIs)
	n.log.Info("tailnet node up", "ips", ips, "name", name, "control", n.controlName(), "ephemeral", n.cfg.Ephemeral, "tags", n.cfg.AdvertiseTags)
	return nil
}

// reportControl says, while the node starts, when it cannot reach the
// control server and why: each new error at once, and after
// ControlReport a line if the server has not answered at all (a
// blackholed address, a slow DNS) — unless a login URL has come, which is
// an answer.
func (n *Node) reportControl(ctx context.Context, loginURL *atomic.Bool) {
	wait := n.cfg.ControlReport
	if wait <= 0 {
		wait = 10 * time.Second
	}
	silent := time.NewTimer(wait)
	defer silent.Stop()
	logged := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.controlErrs:
			if err := n.lastControlErr(); err != logged {
				logged = err
				n.log.Warn("tailnet: cannot reach the control server; retrying", "control", n.controlName(), "err", err)
			}
		case <-silent.C:
			if n.up.Load() || loginURL.Load() {
				return
			}
			if err := n.lastControlErr(); err != "" {
				n.log.Warn("tailnet: still cannot reach the control server; retrying", "control", n.controlName(), "err", err, "waited", wait.String())
			} else if err := probeControl(ctx, n.controlName()); ctx.Err() != nil {
				return
			} else if err != nil {
				// tsnet is still waiting on its first attempt; a plain
				// request says why it will not get far.
				n.log.Warn("tailnet: cannot reach the control server; still trying", "control", n.controlName(), "err", err.Error(), "waited", wait.String())
			} else {
				n.log.Warn("tailnet: no answer from the control server yet; still trying", "control", n.controlName(), "waited", wait.String(),
					"probe", "the server answers a plain request for its key")
			}
		}
	}
}

// probeTimeout bounds probeControl, so that its answer comes within
// seconds of the report that needs it.
const probeTimeout = 4 * time.Second

// probeControl asks the control server for its public key as tsnet's
// first request does, through the host's network and proxy settings, and
// says what stops it: an unknown host, a refused connection, a
// certificate, a proxy, or no answer at all.
func probeControl(ctx context.Context, controlURL string) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	u := strings.TrimSuffix(controlURL, "/") + "/key?v=" + strconv.Itoa(int(tailcfg.CurrentCapabilityVersion))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no HTTP answer within %v (a blackholed address, a firewall or a proxy in the way)", probeTimeout)
	}
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /key: HTTP %d (is this a Tailscale or headscale control server?)", resp.StatusCode)
	}
	return nil
}

// isAuthKeyError reports whether a control server's error is a refused
// auth key: not a reachability problem, and Start says it.
func isAuthKeyError(msg string) bool {
	return strings.Contains(msg, "invalid authkey") || strings.Contains(msg, "invalid key")
}

func trimUp(err error) string {
	s := strings.TrimPrefix(err.Error(), "tsnet.Up: ")
	return strings.TrimPrefix(s, "backend: ")
}

func (n *Node) controlName() string { return n.ControlURL() }

// ControlURL is the control server the node uses: the configured one, or
// Tailscale's.
func (n *Node) ControlURL() string {
	if n.cfg.ControlURL == "" {
		return ipn.DefaultControlURL
	}
	return n.cfg.ControlURL
}

func (n *Node) hasState() bool {
	if n.cfg.MemoryState {
		return false
	}
	_, err := os.Stat(filepath.Join(n.cfg.StateDir, "tailscaled.state"))
	return err == nil
}

// startIdentity sets up WhoIs with a cache that a watcher of the IPN bus
// clears on every netmap change.
func (n *Node) startIdentity(whois WhoIsFunc) {
	n.resolver = NewResolver(whois)
	ctx, cancel := context.WithCancel(context.Background())
	n.stopWatch, n.watchDone = cancel, make(chan struct{})
	lc, _ := n.srv.LocalClient()
	go func() {
		defer close(n.watchDone)
		watchNetmap(ctx, lc, n.resolver)
	}()
}

// Identify returns the identity of the tailnet peer at addr, from WhoIs,
// cached until the netmap changes. It fails for an address that is not a
// peer, and before Start has succeeded.
func (n *Node) Identify(ctx context.Context, addr netip.AddrPort) (*Identity, error) {
	if n.resolver == nil {
		return nil, errors.New("tailnet: node not started")
	}
	return n.resolver.Identify(ctx, addr)
}

// Listen listens on the node's tailnet addresses only; addr is ":port".
func (n *Node) Listen(network, addr string) (net.Listener, error) {
	return n.srv.Listen(network, addr)
}

// StateDir is the directory holding the node's state.
func (n *Node) StateDir() string { return n.cfg.StateDir }

// CloseTimeout bounds a node's Close. tsnet.Server.Close can block for
// good (tailscale.com v1.102.5, see tsnode/upstreamrepro): netstack's
// Close stops the goroutine that drains its outbound packet queue (512
// packets), then gVisor's Stack.Close resets every TCP connection in a
// connected state, TIME_WAIT included, and with more than the queue holds
// the reset that does not fit waits for room that never comes. A busy
// gateway has that many: closing its connections first does not help, as
// each closed one waits in TIME_WAIT and is reset too.
const CloseTimeout = 5 * time.Second

// ErrCloseTimeout is what CloseWithin returns when close has not
// returned in time.
var ErrCloseTimeout = errors.New("tailnet node still closing; gave up waiting (tsnet's Close can block with many connections)")

// CloseWithin runs close, a tsnet node's Close, and waits for it at most
// d: past that it returns ErrCloseTimeout and leaves close running, so
// that the process can exit anyway.
func CloseWithin(close func() error, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- close() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("%w after %v", ErrCloseTimeout, d)
	}
}

// Close leaves the tailnet. An ephemeral node is logged out, so the
// control server removes it at once. It returns within CloseTimeout
// (ErrCloseTimeout if tsnet's Close did not); later calls return what the
// first did, at once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { n.closeErr = n.close() })
	return n.closeErr
}

func (n *Node) close() error {
	var err error
	if n.stopWatch != nil {
		n.stopWatch()
	}
	switch {
	case n.up.Load():
		err = CloseWithin(n.srv.Close, CloseTimeout)
	case n.started.Load():
		// A node that never came up has nothing to log out, but tsnet still
		// tries for seconds; do not hold up an exit for that. It may still
		// be starting (Close from another goroutine, on a signal).
		done := make(chan error, 1)
		go func() {
			<-n.srvStarted
			done <- n.srv.Close()
		}()
		select {
		case err = <-done:
		case <-time.After(time.Second):
		}
	}
	if n.watchDone != nil {
		select {
		case <-n.watchDone:
		case <-time.After(2 * time.Second):
		}
	}
	if n.tmpDir != "" {
		os.RemoveAll(n.tmpDir)
	}
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Hostname is the node's requested name on the tailnet.
func (n *Node) Hostname() string { return n.cfg.Hostname }

// ListenTLS listens on the node's tailnet addresses with the tailnet's own
// HTTPS certificate for the node's MagicDNS name. It fails clearly when the
// control server offers no certificates (HTTPS disabled in the tailnet, or
// headscale).
func (n *Node) ListenTLS(network, addr string) (net.Listener, error) {
	if len(n.srv.CertDomains()) == 0 {
		return nil, fmt.Errorf("tailnet: HTTPS listener on %s: the control server (%s) offers no TLS certificate for this node; enable MagicDNS and HTTPS certificates in the tailnet (headscale offers none), or use protocol: HTTP", addr, n.controlName())
	}
	ln, err := n.srv.ListenTLS(network, addr)
	if err != nil {
		return nil, fmt.Errorf("tailnet: HTTPS listener on %s: %w", addr, err)
	}
	return ln, nil
}

// ListenService serves port of the Tailscale Service name ("svc:mcp") from
// this node, so that several replicas stand behind one tailnet name. The
// node must be tagged, and the Service approved for it in the tailnet.
func (n *Node) ListenService(name string, port int) (net.Listener, error) {
	// tsnet hands Service connections over a loopback socket; the PROXY
	// header it sends first says who the peer is.
	ln, err := n.srv.ListenService(name, tsnet.ServiceModeTCP{Port: uint16(port), PROXYProtocolVersion: 1})
	if errors.Is(err, tsnet.ErrUntaggedServiceHost) {
		return nil, fmt.Errorf("tailnet: service %s: a Service host must be a tagged node; set tailscale.advertiseTags", name)
	}
	if err != nil {
		return nil, fmt.Errorf("tailnet: service %s port %d: %w", name, port, err)
	}
	// tsnet forwards from inside this process: a connection from any other
	// is refused.
	return newProxyListener(ln, ownedBySelf, n.log.With("service", name)), nil
}

// ServiceAddrs are the virtual IPs that the tailnet gives the Service name
// ("svc:mcp") on this node, as the node's netmap says; none until an
// admin maps and approves it.
func (n *Node) ServiceAddrs(ctx context.Context, name string) ([]netip.Addr, error) {
	lc, err := n.srv.LocalClient()
	if err != nil {
		return nil, err
	}
	st, err := lc.StatusWithoutPeers(ctx)
	if err != nil {
		return nil, err
	}
	if st.Self == nil {
		return nil, nil
	}
	var addrs []netip.Addr
	for _, raw := range st.Self.CapMap[tailcfg.NodeAttrServiceHost] {
		var m tailcfg.ServiceIPMappings
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			return nil, fmt.Errorf("tailnet: service mappings: %w", err)
		}
		addrs = append(addrs, m[tailcfg.ServiceName(name)]...)
	}
	return addrs, nil
}

// TSNet is the node's tsnet server, for tests and tools that need tsnet
// itself (e.g. tsnet.TestHooks).
func (n *Node) TSNet() *tsnet.Server { return n.srv }

// Dial connects to addr on the tailnet through the node (MagicDNS names
// resolve), so the peer sees the gateway as a tailnet node.
func (n *Node) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return n.srv.Dial(ctx, network, addr)
}
