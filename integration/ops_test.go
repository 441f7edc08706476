package integration

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"tailscale.com/ipn"
	"tailscale.com/ipn/ipnlocal"
	"tailscale.com/tailcfg"
	"tailscale.com/tsnet"
	"tailscale.com/tstest/integration/testcontrol"

	"github.com/tailgate-dev/tailgate/gateway"
	"github.com/tailgate-dev/tailgate/tsnode"
)

// devProcess is a running `tailgate dev`.
type devProcess struct {
	cmd *exec.Cmd
	// url is the bridge's MCP URL, admin the admin listener's address,
	// both as the banner printed them.
	url, admin string
	exited     chan struct{}
	err        error
	stderr     *gatewaytest.Logs
}

// startDev runs `tailgate dev -f cfg args...` and waits for its banner.
func startDev(t *testing.T, name, cfg string, args ...string) *devProcess {
	t.Helper()
	return startDevEnv(t, name, cfg, os.Environ(), 45*time.Second, args...)
}

// startDevEnv is startDev with the process's environment, waiting up to
// timeout for the banner.
func startDevEnv(t *testing.T, name, cfg string, env []string, timeout time.Duration, args ...string) *devProcess {
	t.Helper()
	cmd := exec.Command(buildTailgate(t), append([]string{"dev", "-f", cfg}, args...)...)
	cmd.Env = append(env, "TS_NO_LOGS_NO_SUPPORT=true")
	stdout, _ := cmd.StdoutPipe()
	d := &devProcess{cmd: cmd, exited: make(chan struct{}), stderr: &gatewaytest.Logs{}}
	cmd.Stderr = io.MultiWriter(testLogWriter{t, name + ": "}, d.stderr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	banner := make(chan [2]string, 1)
	go func() {
		urlRE := regexp.MustCompile(`http://127\.0\.0\.1:\d+/mcp`)
		adminRE := regexp.MustCompile(`http://(127\.0\.0\.1:\d+)/metrics`)
		var url string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u := urlRE.FindString(sc.Text()); u != "" && url == "" {
				url = u
			}
			if m := adminRE.FindStringSubmatch(sc.Text()); m != nil {
				banner <- [2]string{url, m[1]}
			}
		}
	}()
	go func() {
		d.err = cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-d.exited
	})
	select {
	case b := <-banner:
		d.url, d.admin = b[0], b[1]
	case <-d.exited:
		t.Fatalf("%s exited (%v) before its banner", name, d.err)
	case <-time.After(timeout):
		t.Fatalf("%s printed no URL and admin address within %v", name, timeout)
	}
	return d
}

// env asks the demo server behind d for environment variables.
func (d *devProcess) env(t *testing.T, names ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "local-ide"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: d.url}, gatewaytest.LegacySession)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "env", Arguments: map[string]any{"names": names}})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(res.StructuredContent)
	return string(raw)
}

// `tailgate dev` runs a control server, the gateway and a bridge node in
// one process; a plain local MCP client reaches the gateway through the
// bridge with the bridge node's identity: tagged-devices for a tagged
// bridge, as on Tailscale, or the login --user gives. Two run side by side
// (each takes a free admin port, and prints it); a third on a busy bridge
// port is told to use --listen; Ctrl-C stops one within 2 s.
func TestDevMode(t *testing.T) {
	// No adminAddr: tailgate dev takes a free port by itself.
	cfg := writeConfig(t, routeConfig("", demoTarget("identityEnv: true")))
	ci := startDev(t, "dev ci", cfg, "--listen", "127.0.0.1:0", "--tags", "tag:ci")
	alice := startDev(t, "dev alice", cfg, "--listen", "127.0.0.1:0", "--user", "alice@example.com")
	if ci.admin == alice.admin {
		t.Errorf("both admin listeners at %s", ci.admin)
	}
	for _, d := range []*devProcess{ci, alice} {
		resp, err := http.Get("http://" + d.admin + "/healthz/ready")
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("%s/healthz/ready: %v %v", d.admin, resp, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}

	env := ci.env(t, "TAILGATE_NODE_NAME", "TAILGATE_NODE_TAGS", "TAILGATE_USER_LOGIN")
	if !strings.Contains(env, `"TAILGATE_NODE_TAGS":"tag:ci"`) || !strings.Contains(env, `"TAILGATE_USER_LOGIN":"tagged-devices"`) || !strings.Contains(env, "dev-client.") {
		t.Errorf("the tagged bridge's identity did not reach the child: %s", env)
	}
	env = alice.env(t, "TAILGATE_USER_LOGIN", "TAILGATE_NODE_TAGS")
	if !strings.Contains(env, `"TAILGATE_USER_LOGIN":"alice@example.com"`) || !strings.Contains(env, `"TAILGATE_NODE_TAGS":""`) {
		t.Errorf("--user alice@example.com did not reach the child: %s", env)
	}

	// A bridge port in use: a usage error that names --listen.
	busy := exec.Command(buildTailgate(t), "dev", "-f", cfg, "--listen", strings.TrimSuffix(strings.TrimPrefix(alice.url, "http://"), "/mcp"))
	busy.Env = append(os.Environ(), "TS_NO_LOGS_NO_SUPPORT=true")
	out, err := busy.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "--listen") {
		t.Errorf("busy bridge port: %v\n%s", err, out)
	}

	ci.interrupt(t, 2*time.Second)
}

// interrupt sends d Ctrl-C and waits for it to exit, logging how long it
// took: an exit status other than 0, or later than within, fails t.
func (d *devProcess) interrupt(t *testing.T, within time.Duration) {
	t.Helper()
	begin := time.Now()
	d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-d.exited:
	case <-time.After(within + 5*time.Second):
		t.Fatalf("tailgate dev still running %v after Ctrl-C", within+5*time.Second)
	}
	took := time.Since(begin)
	t.Logf("Ctrl-C: exited in %v", took.Round(time.Millisecond))
	if d.err != nil || took > within {
		t.Errorf("Ctrl-C: exit %v after %v, want 0 within %v", d.err, took.Round(time.Millisecond), within)
	}
}

// --admin 127.0.0.1:0 gives tailgate dev's metrics and health a free port,
// which the banner names; the flag wins over config.adminAddr (here a busy
// address, which would stop it).
func TestDevAdminFreePort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := writeConfig(t, "config:\n  adminAddr: \""+busy.Addr().String()+"\"\n"+routeConfig("", demoTarget("")))
	d := startDev(t, "dev", cfg, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
	if d.admin == busy.Addr().String() || strings.HasSuffix(d.admin, ":0") {
		t.Fatalf("admin address in the banner: %s", d.admin)
	}
	for path, want := range map[string]string{"/healthz/ready": "", "/metrics": "tailgate_"} {
		resp, err := http.Get("http://" + d.admin + path)
		if err != nil {
			t.Fatalf("%s%s: %v", d.admin, path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("%s%s: %d %.200q", d.admin, path, resp.StatusCode, body)
		}
	}
	if !d.stderr.Contains("admin listening") || !d.stderr.Contains(d.admin) {
		t.Errorf("the log does not name the admin address %s", d.admin)
	}
}

// A busy admin address, given with --admin or by config.adminAddr, stops
// tailgate dev at once with the config/usage status (1) and a message that
// names the address and --admin, before it joins its tailnet or prints a
// banner.
func TestDevBusyAdmin(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	for _, tc := range []struct {
		name, config string
		args         []string
	}{
		{"--admin", "", []string{"--admin", addr}},
		{"config.adminAddr", "config:\n  adminAddr: \"" + addr + "\"\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeConfig(t, tc.config+routeConfig("", demoTarget("")))
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, buildTailgate(t), append([]string{"dev", "-f", cfg, "--listen", "127.0.0.1:0"}, tc.args...)...)
			cmd.Env = append(os.Environ(), "TS_NO_LOGS_NO_SUPPORT=true")
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("tailgate dev still running after 60 s on a busy admin address:\n%s", stderr.String())
			}
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 1 {
				t.Errorf("exit %v, want status 1\n%s", err, stderr.String())
			}
			var last string
			for line := range strings.Lines(stderr.String()) {
				if strings.HasPrefix(line, "tailgate: ") {
					last = line
				}
			}
			for _, want := range []string{"admin address " + addr, "address already in use", "--admin"} {
				if !strings.Contains(last, want) {
					t.Errorf("error %q does not say %q", last, want)
				}
			}
			if strings.Contains(stdout.String(), "tailgate dev is running") || strings.Contains(stderr.String(), "tailgate ready") {
				t.Errorf("a banner or readiness on a busy admin address:\n%s%s", stdout.String(), stderr.String())
			}
		})
	}
}

type testLogWriter struct {
	t      *testing.T
	prefix string
}

func (w testLogWriter) Write(p []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Log(w.prefix + l)
	}
	return len(p), nil
}

// certIssuer is a throwaway CA that signs certificates for tailnet names,
// standing in for the tailnet's ACME certificates.
type certIssuer struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pool *x509.CertPool
}

func newCertIssuer(t *testing.T) *certIssuer {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tailgate test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &certIssuer{key: key, cert: cert, pool: pool}
}

func (ci *certIssuer) getCert(host string) (*ipnlocal.TLSCertKeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ci.cert, &key.PublicKey, ci.key)
	if err != nil {
		return nil, err
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	return &ipnlocal.TLSCertKeyPair{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

const httpsConfig = `
binds:
- port: 443
  listeners:
  - protocol: HTTPS
    routes:
    - backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: $DEMO}
`

// protocol: HTTPS serves with the tailnet's certificate for the node's
// MagicDNS name (here from a test issuer, as tsnet's own tests do).
func TestHTTPSListener(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, httpsConfig))
	ci := newCertIssuer(t)
	tsnet.TestHooks.LocalBackend(gw.Node.TSNet()).ForTest().ConfigureCerts(ci.getCert)
	laptop := tn.Node(t, "laptop")
	httpClient := &http.Client{Transport: &http.Transport{DialContext: laptop.Dial, TLSClientConfig: &tls.Config{RootCAs: ci.pool}}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := "https://" + gw.Node.DNSName() + "/mcp"
	var cs *mcp.ClientSession
	var err error
	for range 50 {
		cs, err = mcp.NewClient(&mcp.Implementation{Name: "tls-client"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: httpClient, MaxRetries: -1}, gatewaytest.LegacySession)
		if err == nil || !gatewaytest.Retryable(err) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	defer cs.Close()
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "over tls"}}); err != nil {
		t.Fatal(err)
	}
}

// Without certificates from the control server, an HTTPS listener is a
// clear start-up error.
func TestHTTPSWithoutCertificates(t *testing.T) {
	tn := gatewaytest.NewTailnet(t, func(c *testcontrol.Server) { c.MagicDNSDomain = "" })
	node, err := tsnode.New(tsnode.Config{Hostname: "tailgate", ControlURL: tn.ControlURL, Ephemeral: true, MemoryState: true, Logger: gatewaytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := node.Start(ctx); err != nil {
		t.Fatal(err)
	}
	srv, err := gateway.New(gatewaytest.ParseConfig(t, httpsConfig), gateway.Options{Logger: gatewaytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	err = srv.Start(node)
	if err == nil || !strings.Contains(err.Error(), "offers no TLS certificate") {
		t.Errorf("HTTPS without certificates: %v", err)
	}
}

// The binary reloads on a file change and on SIGHUP; an invalid file keeps
// the running config and says why; a running session keeps its child.
func TestReloadThroughBinary(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	pids := t.TempDir()
	base := tailscaleBlock(tn.ControlURL, "") + "config: {adminAddr: \"127.0.0.1:0\"}\n"
	cfgFile := writeConfig(t, base+seedLike("true", pids))
	p := startTailgate(t, cfgFile)
	p.waitLine(t, "tailgate ready", 45*time.Second)
	cs := tn.Node(t, "laptop").MCP(t, &gatewaytest.Gateway{Addr: tailnetAddr(t, p)}, 3000, "/mcp")
	if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err != nil {
		t.Fatal(err)
	}

	// An invalid file: every error logged, the running config kept.
	os.WriteFile(cfgFile, []byte(base+"binds:\n- port: x\n  listners: []\n"), 0o600)
	p.waitLine(t, `listners: unknown field`, 10*time.Second)
	if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err != nil {
		t.Errorf("session after an invalid reload: %v", err)
	}

	// A valid change, and one to the tailscale block, applied on SIGHUP
	// (the watcher would find it too).
	changed := strings.Replace(base, "hostname: tailgate", "hostname: tailgate2", 1) + strings.Replace(seedLike("true", pids), "      backends:", "      policies:\n        mcpAuthorization:\n          rules: ['mcp.tool.name != \"echo\"']\n      backends:", 1)
	os.WriteFile(cfgFile+".new", []byte(strings.ReplaceAll(changed, "$DEMO", gatewaytest.DemoServer(t))), 0o600)
	os.Rename(cfgFile+".new", cfgFile)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLine(t, "restart tailgate to apply it", 10*time.Second)
	p.waitLine(t, "config reloaded", 10*time.Second)
	if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err == nil || !strings.Contains(err.Error(), "not permitted") {
		t.Errorf("echo after the policy reload: %v", err)
	}
	if got := gatewaytest.StartedPIDs(t, pids); len(got) != 2 {
		t.Errorf("children started: %v, want the warm-up's and the one session's only", got)
	}
}

// tailnetAddr reads the gateway's tailnet IPv4 from its "tailgate ready"
// log line.
func tailnetAddr(t *testing.T, p *process) netip.Addr {
	t.Helper()
	m := regexp.MustCompile(`ips="\[(100\.[0-9.]+) `).FindStringSubmatch(p.output())
	if m == nil {
		t.Fatal("no tailnet address in the log")
	}
	return netip.MustParseAddr(m[1])
}

// The binds are served as a Tailscale Service too, for replicas behind one
// name.
func TestTailscaleService(t *testing.T) {
	tn := gatewaytest.NewTailnet(t, gatewaytest.AllowTags("tag:mcp-gateway"))
	cfg := gatewaytest.ParseConfig(t, "tailscale:\n  service: svc:mcp\n  advertiseTags: [tag:mcp-gateway]\n"+seedLike("true", t.TempDir()))
	laptop := tn.Node(t, "laptop")
	gw := tn.Gateway(t, cfg, gatewaytest.GatewayTags("tag:mcp-gateway"), gatewaytest.BeforeServe(func(node *tsnode.Node) {
		setUpService(t, tn, node.TSNet(), laptop, "svc:mcp", "100.11.22.33")
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := laptop.Connect(ctx, "http://100.11.22.33:3000/mcp", nil)
	if err != nil {
		t.Fatalf("connect to the Service VIP: %v", err)
	}
	defer cs.Close()
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "via the service"}}); err != nil {
		t.Fatal(err)
	}
	if st := gw.Server.Stats(); st.Sessions != 1 {
		t.Errorf("sessions via the Service: %d", st.Sessions)
	}
}

// setUpService does what a tailnet admin does for a Service: maps its name
// to a VIP for the host, approves the host's advertisement of the VIP, and
// has the client accept routes; then waits for the client to see it. (It
// follows tsnet's own tests; testcontrol needs the steps spelled out.)
func setUpService(t *testing.T, tn *gatewaytest.Tailnet, host *tsnet.Server, client *gatewaytest.Node, name, vip string) {
	t.Helper()
	lb := tsnet.TestHooks.LocalBackend(host)
	cm := lb.NetMapNoPeers().SelfNode.CapMap().AsMap()
	mapping, _ := json.Marshal(tailcfg.ServiceIPMappings{tailcfg.ServiceName(name): {netip.MustParseAddr(vip)}})
	if cm == nil {
		cm = tailcfg.NodeCapMap{}
	}
	cm[tailcfg.NodeAttrServiceHost] = []tailcfg.RawMessage{tailcfg.RawMessage(mapping)}
	tn.Control.SetNodeCapMap(lb.NodeKey(), cm)
	routes := []netip.Prefix{netip.MustParsePrefix(vip + "/32")}
	tn.Control.SetSubnetRoutes(lb.NodeKey(), routes)
	lc, err := client.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lc.EditPrefs(context.Background(), &ipn.MaskedPrefs{RouteAllSet: true, Prefs: ipn.Prefs{RouteAll: true}}); err != nil {
		t.Fatal(err)
	}
	clb := tsnet.TestHooks.LocalBackend(client.Server)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if nm := clb.NetMapWithPeers(); nm != nil {
			for _, p := range nm.Peers {
				if slices.Contains(p.AllowedIPs().AsSlice(), routes[0]) {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the client never saw the Service VIP")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
