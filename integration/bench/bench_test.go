package bench

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The bench's knobs, all from the environment so that `make test` (which
// sets none of them) only compiles the bench.
const (
	// benchEnv must be 1 to run TestBench.
	benchEnv = "TAILGATE_BENCH"
	// outEnv is where results go; default ./results (integration/bench/results).
	outEnv = "TAILGATE_BENCH_OUT"
	// durationEnv is how long each round of a throughput point runs;
	// default 1s.
	durationEnv = "TAILGATE_BENCH_DURATION"
	// serversEnv limits the run to some servers ("demo", "everything").
	serversEnv = "TAILGATE_BENCH_SERVERS"
)

// Sizes of the set-up and memory measurements.
const (
	setupSequential = 8   // sessions opened one at a time
	setupParallel   = 20  // sessions opened at once
	poolSize        = 20  // stdio.pool of the pooled gateways
	rssSessions     = 100 // sessions open for the memory figure
	openParallelism = 4   // sessions opened at once while building up rssSessions
	rounds          = 3   // rounds of each throughput point
)

// protocolVersion is the MCP version every bench client asks for. go-sdk
// v1.8.0 otherwise tries 2026-07-28's stateless server/discover first,
// which servers and peers answer differently; the issue measures the
// stateful initialize handshake, the same everywhere.
const protocolVersion = "2025-11-25"

// stdioServer is an MCP server every system runs the same way.
type stdioServer struct {
	key, name string
	cmd       string
	args      []string
	tool      string
}

// system is one way to reach a stdio server.
type system struct {
	key string
	// proxy is the process between client and server; nil for direct.
	proxy *proxy
	// connect opens a session (initialize and initialized).
	connect func(ctx context.Context) (*mcp.ClientSession, error)
	// idleChildren is how many children the proxy has with no session
	// open (mcp-proxy keeps one for all sessions; a pool keeps its size).
	idleChildren int
	// last is set when nothing is measured on the system after its
	// set-up times, so there is no need to wait for it to settle.
	last bool
}

// TestBench runs the whole matrix (see the package doc and `make bench`):
// for each stdio server, every system's tool-call throughput and latency
// at each concurrency, session set-up times with and without tailgate's
// pool, proxy memory idle and with 100 sessions, and CPU per call. It
// writes results.md, results.json, bench.png and the gateway's CPU
// profiles to TAILGATE_BENCH_OUT.
func TestBench(t *testing.T) {
	if os.Getenv(benchEnv) != "1" {
		t.Skipf("the benchmark harness; run it with `make bench` (or %s=1 go test -run '^TestBench$' -v -timeout 30m ./integration/bench/)", benchEnv)
	}
	out := os.Getenv(outEnv)
	if out == "" {
		out = "results"
	}
	logDir := filepath.Join(out, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	duration := time.Second
	if v := os.Getenv(durationEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", durationEnv, v, err)
		}
		duration = d
	}
	peers := peerPaths(t)
	everything, err := filepath.Abs("../testdata/npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(everything); err != nil {
		t.Fatalf("server-everything missing (%v): run `make npm-deps` (make bench does)", err)
	}
	t.Cleanup(gatewaytest.RemoveDemoServer)
	servers := []stdioServer{
		{key: "demo", name: "demo server (Go)", cmd: gatewaytest.DemoServer(t), tool: "echo"},
		{key: "everything", name: "server-everything (Node)", cmd: "node", args: []string{everything, "stdio"}, tool: "echo"},
	}
	if only := os.Getenv(serversEnv); only != "" {
		var keep []stdioServer
		for _, s := range servers {
			if strings.Contains(","+only+",", ","+s.key+",") {
				keep = append(keep, s)
			}
		}
		servers = keep
	}

	rep := &Report{
		Started:       time.Now(),
		Machine:       machine(),
		Versions:      versions(t, peers),
		Command:       "make bench",
		PointDuration: Duration(duration),
		Rounds:        rounds,
		Notes: []string{
			"Throughput: one session per system, c calls of the tool in flight on it; each point is run in several rounds (all systems in turn, after a warm-up) and the round with the median calls/s is reported (results.json has the spread); p50 and p99 are per call.",
			"Set-up: initialize until the first tools/list answer. direct spawns the server; tailgate and supergateway spawn one per session; mcp-proxy runs one server for all its sessions, so its set-up never includes a spawn.",
			"RSS: the proxy process alone (tailgate runs in a process of its own, the same test binary re-run as TestGatewayHelper), its stdio children excluded; tailgate-tailnet includes its tsnet node.",
			"CPU, proxy: user+system time of the proxy process during the c=16 point (children excluded); client+proxy adds the bench process's own time (the go-sdk client and, over the tailnet, the client's tsnet node).",
			"The machine may be shared with other work while the bench runs; figures move a lot from run to run, ratios within a run much less.",
			"supergateway starts each child in a session of its own (setsid): with the kernel's autogroup scheduling that gives its children a CPU share of their own when other work is running, which favours it in the spawn-bound set-up figures of server-everything.",
			"tailgate runs with the integration harness's options and logger: one access-log line per call at info level, as the binary logs by default, is part of its CPU time.",
			"supergateway runs with --logLevel none (its default logs every message) and is bound to 127.0.0.1 by npm/loopback.cjs (it has no host flag); mcp-proxy runs with --host 127.0.0.1 --server stream.",
		},
	}

	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	tn := gatewaytest.NewTailnet(t)
	client := tn.Node(t, "bench-client")

	for _, srv := range servers {
		t.Run(srv.key, func(t *testing.T) {
			b := &serverBench{t: t, ctx: ctx, srv: srv, tn: tn, client: client, peers: peers, out: out, logDir: logDir, duration: duration}
			rep.Servers = append(rep.Servers, b.run())
		})
	}

	rep.Wall = Duration(time.Since(rep.Started))
	var md bytes.Buffer
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	fmt.Print("\n" + md.String())
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	var png bytes.Buffer
	if err := rep.WriteChart(&png); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"results.md": md.Bytes(), "results.json": js, "bench.png": png.Bytes()} {
		if err := os.WriteFile(filepath.Join(out, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("results in %s (results.md, results.json, bench.png, tailnet-c16-*.pprof, logs/)", out)
}

// peers are the installed peer entry points.
type peers struct {
	supergateway, mcpProxy, loopback string
}

func peerPaths(t *testing.T) peers {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node not found: %v", err)
	}
	p := peers{
		supergateway: "npm/node_modules/supergateway/dist/index.js",
		mcpProxy:     "npm/node_modules/mcp-proxy/dist/bin/mcp-proxy.mjs",
		loopback:     "npm/loopback.cjs",
	}
	for _, path := range []*string{&p.supergateway, &p.mcpProxy, &p.loopback} {
		abs, err := filepath.Abs(*path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(abs); err != nil {
			t.Fatalf("peer missing (%v): run `cd integration/bench/npm && npm ci` (make bench does)", err)
		}
		*path = abs
	}
	return p
}

// serverBench measures every system on one stdio server.
type serverBench struct {
	t        *testing.T
	ctx      context.Context
	srv      stdioServer
	tn       *gatewaytest.Tailnet
	client   *gatewaytest.Node
	peers    peers
	out      string
	logDir   string
	duration time.Duration
}

func (b *serverBench) logf(format string, args ...any) {
	b.t.Logf("%s %s: "+format, append([]any{time.Now().Format("15:04:05"), b.srv.key}, args...)...)
}

func (b *serverBench) run() *ServerResult {
	t := b.t
	res := &ServerResult{Server: b.srv.name, Tool: b.srv.tool}
	systems := []*system{
		b.direct(),
		b.gatewayHelper(Tailnet, 0),
		b.gatewayHelper(Loopback, 0),
		b.supergateway(),
		b.mcpProxy(),
	}
	byKey := make(map[string]*SystemResult)
	for _, s := range systems {
		r := &SystemResult{System: s.key}
		byKey[s.key] = r
		res.Systems = append(res.Systems, r)
	}

	// Idle memory first, before any session has touched the proxies.
	time.Sleep(time.Second)
	for _, s := range systems {
		if s.proxy != nil {
			rss, err := procRSS(s.proxy.pid())
			if err != nil {
				t.Fatal(err)
			}
			byKey[s.key].RSSIdleMB = &rss
		}
	}

	// Throughput: one session per system, kept for every concurrency and
	// round. Rounds, then concurrencies, are the outer loops so that a
	// burst of other work on the machine falls on every system alike; each
	// figure is the round with the median calls/s.
	sessions := make(map[string]*mcp.ClientSession)
	for _, s := range systems {
		cs, _, err := openSession(b.ctx, s)
		if err != nil {
			t.Fatalf("%s: open session: %v", s.key, err)
		}
		sessions[s.key] = cs
	}
	points := make(map[string]map[int][]*Throughput)
	for _, s := range systems {
		points[s.key] = make(map[int][]*Throughput)
	}
	for round := 1; round <= rounds; round++ {
		for _, c := range Concurrencies {
			for _, s := range systems {
				profile := ""
				if s.key == Tailnet && c == 16 && round == (rounds+1)/2 {
					profile = filepath.Join(b.out, "tailnet-c16-"+b.srv.key+".pprof")
				}
				tp, err := b.throughput(s, sessions[s.key], c, profile)
				if err != nil {
					// One lost point, not the rest of the run: the next
					// point gets a fresh session.
					t.Errorf("%s c=%d round %d: %v", s.key, c, round, err)
					sessions[s.key].Close()
					if sessions[s.key], _, err = openSession(b.ctx, s); err != nil {
						t.Fatalf("%s: reopen session: %v", s.key, err)
					}
					continue
				}
				b.logf("round %d %-18s c=%-3d %8.0f calls/s  p50 %6.2f ms  p99 %6.2f ms  proxy CPU %v", round, s.key, c, tp.CallsPerSec, tp.P50Ms, tp.P99Ms, time.Duration(tp.ProxyCPU))
				points[s.key][c] = append(points[s.key][c], tp)
			}
		}
	}
	for _, s := range systems {
		for _, c := range Concurrencies {
			if tp := medianRound(points[s.key][c]); tp != nil {
				byKey[s.key].Throughput = append(byKey[s.key].Throughput, tp)
			}
		}
	}
	for _, s := range systems {
		sessions[s.key].Close()
		b.settle(s)
	}

	// Session set-up, cold.
	for _, s := range systems {
		r := byKey[s.key]
		var err error
		if r.Setup1, r.SetupParallel, err = b.setup(s); err != nil {
			t.Errorf("%s: set-up: %v", s.key, err)
		}
	}

	// Memory with many sessions open.
	for _, s := range systems {
		if s.proxy == nil {
			continue
		}
		rss, err := b.rssWithSessions(s)
		if err != nil {
			t.Errorf("%s: %d sessions: %v", s.key, rssSessions, err)
			continue
		}
		byKey[s.key].RSSSessionsMB, byKey[s.key].Sessions = &rss, rssSessions
	}

	// Set-up with a pool, in gateways of their own, started now so that
	// their pools' spawning disturbs nothing else.
	for _, s := range systems {
		if s.key == Tailnet || s.key == Loopback {
			s.proxy.stop(t)
		}
	}
	for _, key := range []string{Tailnet, Loopback} {
		s := b.gatewayHelper(key, poolSize)
		s.last = true
		r := byKey[key]
		var err error
		if r.PoolSetup1, r.PoolSetupParallel, err = b.setup(s); err != nil {
			t.Errorf("%s with a pool: set-up: %v", key, err)
		}
		s.proxy.stop(t)
	}
	return res
}

// direct is the floor: the go-sdk client spawning the server itself and
// talking to it over stdio.
func (b *serverBench) direct() *system {
	return &system{key: Direct, connect: func(ctx context.Context) (*mcp.ClientSession, error) {
		cmd := exec.Command(b.srv.cmd, b.srv.args...)
		return newClient().Connect(ctx, &mcp.CommandTransport{Command: cmd, TerminateDuration: 2 * time.Second}, &mcp.ClientSessionOptions{ProtocolVersion: protocolVersion})
	}}
}

// gatewayHelper starts tailgate in a process of its own (see
// TestGatewayHelper), on the tailnet or on loopback, with a pool of pool
// children (0: none).
func (b *serverBench) gatewayHelper(key string, pool int) *system {
	t := b.t
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestGatewayHelper$", "-test.v", "-test.count=1", "-test.timeout=0")
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperConfigEnv+"="+gatewayConfig(b.srv, pool), "TS_NO_LOGS_NO_SUPPORT=true")
	dial := (&net.Dialer{}).DialContext
	if key == Tailnet {
		cmd.Env = append(cmd.Env, helperControlEnv+"="+b.tn.ControlURL)
		dial = b.client.Dial
	}
	name := fmt.Sprintf("%s-%s", key, b.srv.key)
	if pool > 0 {
		name += "-pool"
	}
	p := startProxy(t, name, cmd, b.logDir, "")
	hc := httpClient(dial)
	if key == Tailnet {
		// The client's netmap may not have the new node yet.
		if err := waitDial(b.ctx, dial, p.url); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	} else {
		_, port, _ := net.SplitHostPort(hostOf(p.url))
		n, _ := strconv.Atoi(port)
		checkLoopbackOnly(t, name, n)
	}
	s := &system{key: key, proxy: p, connect: streamable(p.url, hc), idleChildren: pool}
	if pool > 0 {
		if err := waitWarm(p.pid(), pool, time.Second, 3*time.Minute); err != nil {
			t.Fatalf("%s: pool: %v", name, err)
		}
	}
	return s
}

// gatewayConfig serves srv at /mcp on benchPort, without policies. The
// initialize timeout is longer than the default 30s: opening 100 sessions
// of a Node.js server at once on two cores can take longer than that, and
// the bench measures memory there, not patience. The bench's one client
// opens 100 sessions, past the default per-peer cap.
func gatewayConfig(srv stdioServer, pool int) string {
	args, _ := json.Marshal(srv.args)
	if srv.args == nil {
		args = []byte("[]")
	}
	return fmt.Sprintf(`config:
  mcp:
    maxSessionsPerPeer: 200
binds:
- port: %d
  listeners:
  - routes:
    - name: bench
      backends:
      - mcp:
          targets:
          - name: %s
            stdio:
              cmd: %q
              args: %s
              pool: %d
              initializeTimeout: 2m
`, benchPort, srv.key, srv.cmd, args, pool)
}

// supergateway bridges one child per session (stateful), as tailgate
// does.
func (b *serverBench) supergateway() *system {
	t := b.t
	port := freePort(t)
	stdio := shellQuote(append([]string{b.srv.cmd}, b.srv.args...))
	cmd := exec.Command("node", "--require", b.peers.loopback, b.peers.supergateway,
		"--stdio", stdio, "--outputTransport", "streamableHttp", "--stateful",
		"--port", strconv.Itoa(port), "--logLevel", "none")
	url := fmt.Sprintf("http://127.0.0.1:%d/mcp", port)
	p := startProxy(t, Supergateway+"-"+b.srv.key, cmd, b.logDir, url)
	checkLoopbackOnly(t, Supergateway, port)
	return &system{key: Supergateway, proxy: p, connect: streamable(url, httpClient((&net.Dialer{}).DialContext))}
}

// mcpProxy starts one child at start-up and serves every session with it.
func (b *serverBench) mcpProxy() *system {
	t := b.t
	port := freePort(t)
	args := []string{b.peers.mcpProxy, "--host", "127.0.0.1", "--port", strconv.Itoa(port), "--server", "stream", "--", b.srv.cmd}
	cmd := exec.Command("node", append(args, b.srv.args...)...)
	url := fmt.Sprintf("http://127.0.0.1:%d/mcp", port)
	p := startProxy(t, MCPProxy+"-"+b.srv.key, cmd, b.logDir, url)
	checkLoopbackOnly(t, MCPProxy, port)
	return &system{key: MCPProxy, proxy: p, connect: streamable(url, httpClient((&net.Dialer{}).DialContext)), idleChildren: 1}
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

func newClient() *mcp.Client {
	return mcp.NewClient(&mcp.Implementation{Name: "tailgate-bench", Version: "1"}, nil)
}

// httpClient is the same HTTP client for every system but for how it
// dials: enough idle connections kept that 64 calls in flight never
// redial (net/http keeps 2 per host by default).
func httpClient(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         dial,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
	}}
}

func streamable(url string, hc *http.Client) func(ctx context.Context) (*mcp.ClientSession, error) {
	return func(ctx context.Context) (*mcp.ClientSession, error) {
		return newClient().Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: hc}, &mcp.ClientSessionOptions{ProtocolVersion: protocolVersion})
	}
}

func hostOf(url string) string {
	host := strings.TrimPrefix(url, "http://")
	host, _, _ = strings.Cut(host, "/")
	return host
}

// waitDial waits until url's host accepts a connection through dial.
func waitDial(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := dial(dctx, "tcp", hostOf(url))
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s unreachable after 30s: %w", hostOf(url), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// openSession opens a session and waits for its first tools/list answer;
// the time is the session's set-up time.
func openSession(ctx context.Context, s *system) (*mcp.ClientSession, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	cs, err := s.connect(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("connect: %w", err)
	}
	if _, err := cs.ListTools(ctx, nil); err != nil {
		cs.Close()
		return nil, 0, fmt.Errorf("tools/list: %w", err)
	}
	return cs, time.Since(start), nil
}

// openMany opens n sessions, parallel at a time.
func openMany(ctx context.Context, s *system, n, parallel int) ([]*mcp.ClientSession, []time.Duration, error) {
	sessions := make([]*mcp.ClientSession, n)
	times := make([]time.Duration, n)
	errs := make([]error, n)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			sessions[i], times[i], errs[i] = openSession(ctx, s)
		})
	}
	wg.Wait()
	var open []*mcp.ClientSession
	for _, cs := range sessions {
		if cs != nil {
			open = append(open, cs)
		}
	}
	for _, err := range errs {
		if err != nil {
			return open, nil, err
		}
	}
	return open, times, nil
}

// closeAll closes sessions, 16 at a time.
func closeAll(sessions []*mcp.ClientSession) {
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, cs := range sessions {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			cs.Close()
		})
	}
	wg.Wait()
}

// settle waits until the proxy has reaped the children of closed
// sessions (and a pool has refilled and gone quiet).
func (b *serverBench) settle(s *system) {
	if s.proxy == nil {
		return
	}
	if err := waitChildren(s.proxy.pid(), s.idleChildren, time.Minute); err != nil {
		b.t.Logf("%s: %v", s.key, err)
	}
	if s.idleChildren > 0 {
		if err := waitWarm(s.proxy.pid(), s.idleChildren, time.Second, 2*time.Minute); err != nil {
			b.t.Logf("%s: %v", s.key, err)
		}
	}
}

// setup measures session set-up one at a time, then setupParallel at
// once.
func (b *serverBench) setup(s *system) (one, parallel *Setup, err error) {
	sessions, times, err := openMany(b.ctx, s, setupSequential, 1)
	closeAll(sessions)
	b.settle(s)
	if err != nil {
		return nil, nil, fmt.Errorf("one at a time: %w", err)
	}
	one = NewSetup(times)
	sessions, times, err = openMany(b.ctx, s, setupParallel, setupParallel)
	closeAll(sessions)
	if !s.last {
		b.settle(s)
	}
	if err != nil {
		return one, nil, fmt.Errorf("%d at once: %w", setupParallel, err)
	}
	parallel = NewSetup(times)
	b.logf("%-18s set-up one at a time p50 %v; %d at once p50 %v, last %v", s.key+poolLabel(s), ms2d(one.P50Ms), setupParallel, ms2d(parallel.P50Ms), ms2d(parallel.MaxMs))
	return one, parallel, nil
}

func poolLabel(s *system) string {
	if s.idleChildren > 0 && s.key != MCPProxy {
		return "+pool"
	}
	return ""
}

func ms2d(v float64) time.Duration {
	return time.Duration(v * float64(time.Millisecond)).Round(10 * time.Microsecond)
}

// rssWithSessions opens rssSessions sessions and reads the proxy's
// resident set once they are all idle.
func (b *serverBench) rssWithSessions(s *system) (float64, error) {
	start := time.Now()
	sessions, _, err := openMany(b.ctx, s, rssSessions, openParallelism)
	opened := time.Since(start)
	defer func() {
		start := time.Now()
		closeAll(sessions)
		closed := time.Since(start)
		b.settle(s)
		b.logf("%-18s %d sessions opened in %v, closed in %v, children reaped %v later", s.key, len(sessions), opened.Round(time.Millisecond), closed.Round(time.Millisecond), (time.Since(start) - closed).Round(time.Millisecond))
	}()
	if err != nil {
		return 0, err
	}
	time.Sleep(2 * time.Second)
	rss, err := procRSS(s.proxy.pid())
	if err == nil {
		b.logf("%-18s RSS with %d sessions %.1f MB", s.key, rssSessions, rss)
	}
	return rss, err
}

// throughput keeps c calls in flight on cs for the point's duration,
// after a warm-up, and measures calls/s, latency and CPU. With profile
// set, the gateway helper writes a CPU profile of the point there.
func (b *serverBench) throughput(s *system, cs *mcp.ClientSession, c int, profile string) (*Throughput, error) {
	params := &mcp.CallToolParams{Name: b.srv.tool, Arguments: map[string]any{"message": "hello from tailgate-bench"}}
	if _, err := load(b.ctx, cs, params, c, b.duration/5); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	if profile != "" {
		abs, err := filepath.Abs(profile)
		if err != nil {
			return nil, err
		}
		if err := s.proxy.command("cpuprofile " + abs); err != nil {
			return nil, err
		}
	}
	var proxy0 time.Duration
	if s.proxy != nil {
		proxy0, _ = procCPU(s.proxy.pid())
	}
	client0 := selfCPU()
	start := time.Now()
	lat, err := load(b.ctx, cs, params, c, b.duration)
	elapsed := time.Since(start)
	client := selfCPU() - client0
	var proxy time.Duration
	if s.proxy != nil {
		p1, _ := procCPU(s.proxy.pid())
		proxy = p1 - proxy0
	}
	if profile != "" {
		if err := s.proxy.command("stopprofile"); err != nil {
			return nil, err
		}
		b.pprofTop(profile)
	}
	if err != nil {
		return nil, err
	}
	return &Throughput{
		Concurrency: c,
		Calls:       len(lat),
		Seconds:     elapsed.Seconds(),
		CallsPerSec: float64(len(lat)) / elapsed.Seconds(),
		P50Ms:       ms(Percentile(lat, 50)),
		P99Ms:       ms(Percentile(lat, 99)),
		ProxyCPU:    Duration(proxy),
		ClientCPU:   Duration(client),
	}, nil
}

// medianRound returns the round with the median calls/s, with the
// spread of all rounds.
func medianRound(runs []*Throughput) *Throughput {
	if len(runs) == 0 {
		return nil
	}
	sorted := slices.Clone(runs)
	slices.SortFunc(sorted, func(a, b *Throughput) int { return cmp.Compare(a.CallsPerSec, b.CallsPerSec) })
	tp := *sorted[len(sorted)/2]
	tp.Rounds = len(sorted)
	tp.MinCallsPerSec, tp.MaxCallsPerSec = sorted[0].CallsPerSec, sorted[len(sorted)-1].CallsPerSec
	return &tp
}

// load keeps c calls in flight on cs for d and returns every call's
// latency. Calls in flight at the end are finished and counted.
func load(ctx context.Context, cs *mcp.ClientSession, params *mcp.CallToolParams, c int, d time.Duration) ([]time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	defer cancel()
	deadline := time.Now().Add(d)
	lat := make([][]time.Duration, c)
	errs := make([]error, c)
	var wg sync.WaitGroup
	for i := range c {
		wg.Go(func() {
			lat[i] = make([]time.Duration, 0, 4096)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				res, err := cs.CallTool(ctx, params)
				if err == nil && res.IsError {
					err = fmt.Errorf("tool error: %v", res.Content)
				}
				if err != nil {
					errs[i] = fmt.Errorf("call %d of worker %d: %w", len(lat[i])+1, i, err)
					cancel()
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		})
	}
	wg.Wait()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	for _, err := range errs {
		if err != nil {
			return all, err
		}
	}
	return all, nil
}

// pprofTop writes `go tool pprof -top` of a profile next to it.
func (b *serverBench) pprofTop(profile string) {
	out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=40", profile).CombinedOutput()
	if err != nil {
		b.t.Logf("pprof %s: %v\n%s", profile, err, out)
		return
	}
	if err := os.WriteFile(strings.TrimSuffix(profile, ".pprof")+"-top.txt", out, 0o644); err != nil {
		b.t.Logf("pprof: %v", err)
	}
}

// machine describes the machine for the report.
func machine() string {
	desc := fmt.Sprintf("%d cores, %s/%s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				desc += ", " + strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				desc += fmt.Sprintf(", %.0f GB RAM", kb/1024/1024)
			}
		}
	}
	return desc
}

// versions of what ran, for the report.
func versions(t *testing.T, p peers) map[string]string {
	v := map[string]string{"go": runtime.Version()}
	// The tree under test: other work may be in progress in it.
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		rev := strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain", "--", "../../gateway", "../../mcpstdio", "../../tsnode", "../../policy").Output(); err == nil && len(st) > 0 {
			rev += " with local changes"
		}
		v["tailgate"] = rev
	}
	if out, err := exec.Command("node", "--version").Output(); err == nil {
		v["node"] = strings.TrimSpace(string(out))
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range bi.Deps {
			if dep.Path == "github.com/modelcontextprotocol/go-sdk" {
				v["go-sdk"] = dep.Version
			}
		}
	}
	pkgs := map[string]string{
		"supergateway":      filepath.Join(filepath.Dir(p.supergateway), "..", "package.json"),
		"mcp-proxy":         filepath.Join(filepath.Dir(p.mcpProxy), "..", "..", "package.json"),
		"server-everything": "../testdata/npm/node_modules/@modelcontextprotocol/server-everything/package.json",
	}
	for name, file := range pkgs {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Logf("version of %s: %v", name, err)
			continue
		}
		var pkg struct{ Version string }
		if err := json.Unmarshal(data, &pkg); err == nil {
			v[name] = pkg.Version
		}
	}
	return v
}
