// Package gatewaytest runs tailgate in tests the way it runs for real, as
// setec's setectest does for setec: an in-process tailnet (a testcontrol
// control server and DERP/STUN on 127.0.0.1, from tsnode/devnet), tailgate
// as one tsnet node of it and clients as others, named and tagged as the
// test needs, talking over real WireGuard; the demo stdio MCP server
// (mcpstdio/demoserver, in its fault mode) built once per test binary;
// go-sdk MCP clients over the tailnet; the gateway's logs captured. Nothing
// leaves 127.0.0.1. The end-to-end tests (integration) and the benchmarks
// (integration/bench) use it; product packages must not import it.
package gatewaytest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"tailscale.com/ipn/store/mem"
	"tailscale.com/tsnet"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/logger"

	"github.com/tailgate-dev/tailgate/gateway"
	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
	"github.com/tailgate-dev/tailgate/policy"
	"github.com/tailgate-dev/tailgate/tsnode"
	"github.com/tailgate-dev/tailgate/tsnode/devnet"
)

// LegacySession pins a go-sdk client to MCP 2025-11-25: a session
// (initialize, Mcp-Session-Id, the GET stream). Without it go-sdk v1.8.0
// clients probe server/discover and, since tailgate answers it, speak
// 2026-07-28 without a session.
var LegacySession = &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"}

// Tailnet is an in-process tailnet for one test.
type Tailnet struct {
	Control    *testcontrol.Server
	ControlURL string
	Dev        *devnet.Tailnet
}

// TailnetOption configures NewTailnet.
type TailnetOption func(*testcontrol.Server)

// RequireAuthKey makes the control server accept only nodes that present
// key.
func RequireAuthKey(key string) TailnetOption {
	return func(c *testcontrol.Server) { c.RequireAuthKey = key }
}

// AllowTags lets nodes take the tags they advertise.
func AllowTags(tags ...string) TailnetOption {
	return func(c *testcontrol.Server) {
		if c.TagOwners == nil {
			c.TagOwners = make(map[string][]string)
		}
		for _, tag := range tags {
			c.TagOwners[tag] = nil
		}
	}
}

// NewTailnet starts a control server and DERP/STUN on 127.0.0.1 — the
// embedded tailnet of `tailgate dev` (tsnode/devnet) — stopped when the
// test ends.
func NewTailnet(t testing.TB, opts ...TailnetOption) *Tailnet {
	t.Helper()
	cfg := devnet.Config{}
	for _, o := range opts {
		cfg.Configure = append(cfg.Configure, o)
	}
	dn, err := devnet.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dn.Close() })
	return &Tailnet{Control: dn.Control, ControlURL: dn.ControlURL, Dev: dn}
}

// Logger returns a logger that writes to the test's log.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(demoserver.LogWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Gateway is tailgate running as a node of a Tailnet.
type Gateway struct {
	Node   *tsnode.Node
	Server *gateway.Server
	// Addr is the gateway's tailnet IPv4 address.
	Addr netip.Addr

	shutdownOnce sync.Once
}

// GatewayOption configures Tailnet.Gateway.
type GatewayOption func(*gatewaySetup)

type gatewaySetup struct {
	node        tsnode.Config
	opts        gateway.Options
	capture     *Logs
	beforeServe func(*tsnode.Node)
}

// ReadHeaderTimeout sets the gateway's bound on reading a request's
// headers (gateway.Options), for tests whose tailnet is slow to carry them.
func ReadHeaderTimeout(d time.Duration) GatewayOption {
	return func(s *gatewaySetup) { s.opts.ReadHeaderTimeout = d }
}

// BeforeServe runs f once the gateway's node is up, before the gateway
// listens (for tailnet set-up that listening needs, such as a Service).
func BeforeServe(f func(*tsnode.Node)) GatewayOption {
	return func(s *gatewaySetup) { s.beforeServe = f }
}

// GatewayTags makes the gateway node advertise tags.
func GatewayTags(tags ...string) GatewayOption {
	return func(s *gatewaySetup) { s.node.AdvertiseTags = tags }
}

// GatewayAuthKey registers the gateway node with key.
func GatewayAuthKey(key string) GatewayOption {
	return func(s *gatewaySetup) { s.node.AuthKey = key }
}

// Secrets are kept from the gateway's children.
func Secrets(secrets ...string) GatewayOption {
	return func(s *gatewaySetup) { s.opts.Secrets = secrets }
}

// NodeState keeps the gateway node's state in dir, not in memory, and
// the node not ephemeral: a gateway started again on the same dir is the
// same node (its name and address), as a real gateway restarted with its
// state directory is.
func NodeState(dir string) GatewayOption {
	return func(s *gatewaySetup) {
		s.node.StateDir, s.node.MemoryState, s.node.Ephemeral = dir, false, false
	}
}

// KeyDir keeps the gateway's identity token keys in dir (a gateway
// started again on the same dir signs with the same keys).
func KeyDir(dir string) GatewayOption {
	return func(s *gatewaySetup) { s.opts.KeyDir = dir }
}

// Gateway starts tailgate serving cfg as a node named "tailgate", shut down
// when the test ends.
func (tn *Tailnet) Gateway(t testing.TB, cfg *gateway.Config, opts ...GatewayOption) *Gateway {
	t.Helper()
	log := Logger(t)
	setup := &gatewaySetup{
		node: tsnode.Config{
			Hostname:    "tailgate",
			ControlURL:  tn.ControlURL,
			Ephemeral:   true,
			MemoryState: true,
			StateDir:    filepath.Join(t.TempDir(), "tailgate"),
			Logger:      log.With("component", "tailnet"),
		},
		opts: gateway.Options{Logger: log, DropEnv: tsnode.SecretEnv(), StopGrace: 500 * time.Millisecond},
	}
	for _, o := range opts {
		o(setup)
	}
	if setup.capture != nil {
		log = slog.New(slog.NewTextHandler(io.MultiWriter(demoserver.LogWriter(t), setup.capture), &slog.HandlerOptions{Level: slog.LevelDebug}))
		setup.opts.Logger = log
		setup.node.Logger = log.With("component", "tailnet")
	}
	node, err := tsnode.New(setup.node)
	if err != nil {
		t.Fatal(err)
	}
	setup.opts.Identify = gateway.IdentifyTailnet(node.Identify)
	srv, err := gateway.New(cfg, setup.opts)
	if err != nil {
		node.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := node.Start(ctx); err != nil {
		node.Close()
		t.Fatal(err)
	}
	if setup.beforeServe != nil {
		setup.beforeServe(node)
	}
	if err := srv.Start(node); err != nil {
		node.Close()
		t.Fatal(err)
	}
	gw := &Gateway{Node: node, Server: srv, Addr: node.IPs()[0]}
	t.Cleanup(func() { gw.Shutdown(t) })
	return gw
}

// Shutdown stops the gateway as cmd/tailgate does on SIGTERM.
func (gw *Gateway) Shutdown(t testing.TB) {
	gw.shutdownOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		begin := time.Now()
		if err := gw.Server.Shutdown(ctx); err != nil {
			t.Errorf("gateway shutdown: %v", err)
		}
		mid := time.Now()
		gw.Node.Close()
		t.Logf("gateway shut down in %v, node closed in %v", mid.Sub(begin), time.Since(mid))
	})
}

// URL is the gateway's MCP endpoint on port at path, by tailnet IP.
func (gw *Gateway) URL(port int, path string) string {
	return fmt.Sprintf("http://%s%s", netip.AddrPortFrom(gw.Addr, uint16(port)), path)
}

// Node is a client node on a Tailnet.
type Node struct {
	*tsnet.Server
	Name string

	clientOnce sync.Once
	client     *http.Client
}

// Client is the node's HTTP client over the tailnet, one per node, so that
// its connections are reused and can be closed (CloseIdleConnections).
func (n *Node) Client() *http.Client {
	n.clientOnce.Do(func() { n.client = n.HTTPClient() })
	return n.client
}

// NodeOption configures Tailnet.Node.
type NodeOption func(*tsnet.Server)

// Tags makes a node advertise tags (see AllowTags).
func Tags(tags ...string) NodeOption {
	return func(s *tsnet.Server) { s.AdvertiseTags = tags }
}

// AuthKey registers a node with key (see RequireAuthKey).
func AuthKey(key string) NodeOption {
	return func(s *tsnet.Server) { s.AuthKey = key }
}

// Node starts a client node named name.
func (tn *Tailnet) Node(t testing.TB, name string, opts ...NodeOption) *Node {
	t.Helper()
	s := &tsnet.Server{
		Dir:        filepath.Join(t.TempDir(), name),
		Hostname:   name,
		ControlURL: tn.ControlURL,
		Store:      new(mem.Store),
		Ephemeral:  true,
		Logf:       logger.Discard,
		UserLogf:   logger.Discard,
	}
	for _, o := range opts {
		o(s)
	}
	t.Cleanup(func() {
		begin := time.Now()
		// Bounded: tsnet's Close can block for good with many
		// connections open (tsnode.CloseTimeout).
		err := tsnode.CloseWithin(s.Close, tsnode.CloseTimeout)
		t.Logf("node %s closed in %v (%v)", name, time.Since(begin), err)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := s.Up(ctx); err != nil {
		t.Fatalf("node %s: %v", name, err)
	}
	return &Node{Server: s, Name: name}
}

// Login is the login name the control server gave the node's user: the
// caller's identity as tailgate's policy and logs see it.
func (n *Node) Login(t testing.TB) string {
	t.Helper()
	lc, err := n.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	st, err := lc.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.User[st.Self.UserID].LoginName
}

// IP is the node's tailnet IPv4 address.
func (n *Node) IP() netip.Addr {
	ip4, _ := n.TailscaleIPs()
	return ip4
}

// Connect opens an MCP session from n to url over the tailnet. The
// netmap may take a moment to reach a new node, so a refused first dial is
// retried for a few seconds.
func (n *Node) Connect(ctx context.Context, url string, opts *mcp.ClientOptions) (*mcp.ClientSession, error) {
	client := mcp.NewClient(&mcp.Implementation{Name: n.Name}, opts)
	var lastErr error
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: n.Client(), MaxRetries: -1}, LegacySession)
		if err == nil {
			return cs, nil
		}
		lastErr = err
		if ctx.Err() != nil || !Retryable(err) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, lastErr
}

// Retryable reports whether err is a dial that failed because the path to
// the peer is not up yet, as opposed to a refusal by the peer.
func Retryable(err error) bool {
	s := err.Error()
	return strings.Contains(s, "no route") || strings.Contains(s, "unknown peer") || strings.Contains(s, "no such host")
}

// MCP opens an MCP session from n to the gateway's route at port/path,
// closed when the test ends.
func (n *Node) MCP(t testing.TB, gw *Gateway, port int, path string) *mcp.ClientSession {
	t.Helper()
	return n.MCPWith(t, gw, port, path, nil)
}

// MCPWith is MCP with client options.
func (n *Node) MCPWith(t testing.TB, gw *Gateway, port int, path string, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := n.Connect(ctx, gw.URL(port, path), opts)
	if err != nil {
		t.Fatalf("%s: connect to %s: %v", n.Name, gw.URL(port, path), err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// HTTPGet is a plain HTTP GET from n, for tests of what is not MCP.
func (n *Node) HTTPGet(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return n.Client().Do(req)
}

// ParseConfig parses a config for a test: every $DEMO in yaml becomes the
// demo server's path.
func ParseConfig(t testing.TB, yaml string) *gateway.Config {
	t.Helper()
	env, err := policy.NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := gateway.Parse(t.Name()+".yaml", []byte(strings.ReplaceAll(yaml, "$DEMO", DemoServer(t))), env)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Forward listens on 127.0.0.1 and forwards each connection through n, over
// WireGuard, to addr on the tailnet, so that programs outside the test
// (a Node.js MCP client) reach the gateway as n. It returns the local
// address.
func (n *Node) Forward(t testing.TB, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go devnet.Forward(ln, n.Dial, addr)
	return ln.Addr().String()
}

// Bridge is n.Forward to the gateway's port, with the gateway accepting
// localhost names from n, as `tailgate dev`'s bridge: programs outside the
// test reach the gateway as n at the local address it returns.
func (gw *Gateway) Bridge(t testing.TB, n *Node, port int) string {
	t.Helper()
	ip4, ip6 := n.TailscaleIPs()
	gw.Server.AllowLocalhostFrom(ip4, ip6)
	return n.Forward(t, netip.AddrPortFrom(gw.Addr, uint16(port)).String())
}

// Logs collects a gateway's log records for assertions.
type Logs struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String is everything logged so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Len is how many bytes were logged so far.
func (l *Logs) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Len()
}

// Records parses the JSON log lines written so far.
func (l *Logs) Records(t testing.TB) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		if line == "" {
			continue // nothing logged yet
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

// Contains reports whether any log line contains s.
func (l *Logs) Contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.buf.String(), s)
}

// CaptureLogs also writes the gateway's log to logs.
func CaptureLogs(logs *Logs) GatewayOption {
	return func(s *gatewaySetup) { s.capture = logs }
}

// Progress is client options that hand each progress notification to the
// returned channel, for tests that must know a call is running in its
// child before they act.
func Progress() (*mcp.ClientOptions, <-chan *mcp.ProgressNotificationParams) {
	ch := make(chan *mcp.ProgressNotificationParams, 1024)
	return &mcp.ClientOptions{ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
		select {
		case ch <- r.Params:
		default:
		}
	}}, ch
}

// SlowCall calls the demo server's slow tool, which reports progress after
// each step.
func SlowCall(token any, steps, delayMS int) *mcp.CallToolParams {
	p := &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"steps": steps, "delayMs": delayMS}}
	p.SetProgressToken(token)
	return p
}

// AwaitProgress waits for n progress notifications on ch.
func AwaitProgress(t testing.TB, ch <-chan *mcp.ProgressNotificationParams, n int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for i := range n {
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%d of %d progress notifications within 30s", i, n)
		}
	}
}
