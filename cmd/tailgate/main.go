// Command tailgate is an MCP gateway that is its own tailnet node. It joins
// a tailnet with tsnet, listens only on its tailnet addresses, admits
// callers with CEL rules that see their Tailscale identity, and proxies MCP
// to stdio servers it starts and supervises.
//
// Usage:
//
//	tailgate -f config.yaml                  run the gateway
//	tailgate dev -f config.yaml              run it on an embedded tailnet, with a local bridge
//	tailgate --validate-only -f config.yaml  check a config, print ok or every error
//	tailgate explain --as alice@example.com  what an identity may use on each route, and why
//	tailgate version                         print the version
//	tailgate help                            print the usage
//
// Exit status: 0 after a clean shutdown (and for help and version), 1 for
// a config or usage error, 2 when the node cannot join the tailnet (e.g.
// an invalid auth key).
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tailgate-dev/tailgate/gateway"
	"github.com/tailgate-dev/tailgate/mcpstdio"
	"github.com/tailgate-dev/tailgate/policy"
	"github.com/tailgate-dev/tailgate/tsnode"
	"github.com/tailgate-dev/tailgate/tsnode/devnet"
)

// Exit codes.
const (
	exitOK      = 0
	exitConfig  = 1
	exitTailnet = 2
)

// shutdownBudget is how long tailgate takes to stop after SIGINT/SIGTERM:
// sessions closed, children reaped, the ephemeral node logged out.
const shutdownBudget = 10 * time.Second

// defaultAdminAddr serves /metrics and /healthz/* unless config.adminAddr
// or --admin says otherwise; loopback, because it is not behind the
// tailnet's policy. `tailgate dev` takes a free port instead
// (devAdminAddr), so that two can run side by side.
const (
	defaultAdminAddr = "127.0.0.1:15000"
	devAdminAddr     = "127.0.0.1:0"
)

// bridgeName is the dev bridge's node name.
const bridgeName = "dev-client"

func main() {
	// SIGHUP asks for a reload. It is caught from the start: one that
	// comes while tailgate starts or stops must not take its default
	// action (exit, status 129, leaving the children to themselves).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go exitLate(ctx, exitDeadline, os.Stderr)
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, hup))
}

// exitDeadline is how long after SIGINT/SIGTERM the process exits
// whatever is still stopping: the shutdown budget, then a little for
// leaving the tailnet, each step of which is bounded already
// (tsnode.CloseTimeout); this is the backstop for one that is not.
const exitDeadline = shutdownBudget + tsnode.CloseTimeout

// exitLate ends the process d after ctx ends, if it is still running.
func exitLate(ctx context.Context, d time.Duration, stderr io.Writer) {
	<-ctx.Done()
	time.Sleep(d)
	fmt.Fprintf(stderr, "tailgate: still stopping %v after the signal; exiting anyway\n", d)
	os.Exit(exitOK)
}

// flags are the command line of `tailgate` and `tailgate dev`.
type flags struct {
	file           string
	validateOnly   bool
	logFormat      string
	logLevel       string
	verboseTailnet bool
	watch          time.Duration
	admin          string
	version        bool
	// dev only
	listen string
	tags   string
	user   string
}

// usageText is the command line reference (README "CLI reference" shows
// it too).
const usageText = `usage:
  tailgate -f config.yaml [flags]               run the gateway on the tailnet
  tailgate dev -f config.yaml [dev flags]       run it on an embedded tailnet on
                                                127.0.0.1, with a local bridge
  tailgate --validate-only -f config.yaml       check a config: "ok" or every
                                                error, and warnings (exit 1 on errors)
  tailgate audit verify FILE...                 check an audit trail's hash chain:
                                                files oldest first (rotated ones,
                                                then the current); exit 1 if broken
  tailgate explain --as LOGIN [--tags T,...]    what an identity may use on each
        [--node N] [--caps JSON]                route, and the rule that decides:
        [--admin ADDR | --config FILE]          asked of a running gateway's admin
                                                address, or offline from a config
  tailgate version | --version                  print version, commit, Go and
                                                tailscale.com versions
  tailgate help | -h | --help                   print this

exit status: 0 clean shutdown, help, version; 1 config or usage error;
2 the node cannot join the tailnet (e.g. a rejected auth key)
`

// run is tailgate's command line; hup delivers SIGHUP (a reload once the
// gateway runs; one that comes while it starts is acted on once it runs,
// and those that come while it stops are ignored).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, hup <-chan os.Signal) int {
	dev := false
	if len(args) > 0 {
		switch args[0] {
		case "version", "-version", "--version":
			printVersion(stdout)
			return exitOK
		case "help":
			args = []string{"-h"}
		case "audit":
			return auditCommand(args[1:], stdout, stderr)
		case "explain":
			return explainCommand(ctx, args[1:], stdout, stderr)
		case "dev":
			dev, args = true, args[1:]
		}
	}
	var f flags
	fs := newFlagSet(&f, dev, stderr)
	if slices.ContainsFunc(args, func(a string) bool { return a == "-h" || a == "-help" || a == "--help" }) {
		// Asked for: on stdout, and not an error.
		fs.SetOutput(stdout)
		fs.Usage()
		return exitOK
	}
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	if f.version {
		printVersion(stdout)
		return exitOK
	}
	if f.file == "" || fs.NArg() > 0 {
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "tailgate: unexpected argument %q\n", fs.Arg(0))
		} else {
			fmt.Fprintln(stderr, "tailgate: no config file: use -f config.yaml")
		}
		fs.Usage()
		return exitConfig
	}
	log, err := newLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "tailgate:", err)
		return exitConfig
	}
	if stderr == os.Stderr {
		// The process's own run (not a test's): what libraries write with
		// the standard log package (tailscale.com's TLS dialer, when a
		// certificate fails) joins the structured log instead of
		// interrupting it.
		stdlog.SetFlags(0)
		stdlog.SetOutput(stdlogWriter{log.With("component", "tailscale")})
	}
	env, err := policy.NewEnv()
	if err != nil {
		fmt.Fprintln(stderr, "tailgate:", err)
		return exitConfig
	}
	watch, data, err := gateway.WatchConfigFile(f.file)
	if err != nil {
		fmt.Fprintln(stderr, "config:", err)
		return exitConfig
	}
	cfg, err := gateway.Parse(f.file, data, env)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	if f.validateOnly {
		// The secret sources targets name: files and variables that must
		// be there, folders of per-caller files.
		if errs := cfg.CheckSecrets(ctx); len(errs) > 0 {
			fmt.Fprintln(stderr, errs)
			return exitConfig
		}
		for _, w := range append(cfg.Warnings, cfg.HostWarnings()...) {
			fmt.Fprintln(stderr, "warning: "+w.Error())
		}
		fmt.Fprintln(stdout, "ok")
		return exitOK
	}
	for _, w := range cfg.HostWarnings() {
		if dev && w.Path == "tailscale.authKeyFile" {
			continue // tailgate dev uses no auth key
		}
		log.Warn("config: "+w.Msg, "at", strings.TrimSuffix(w.Error(), ": "+w.Msg))
	}
	a := &app{flags: f, env: env, cfg: cfg, config: watch, hup: hup, log: log, stdout: stdout, stderr: stderr}
	if dev {
		return a.dev(ctx)
	}
	return a.serve(ctx)
}

// newFlagSet is the command line of `tailgate` (of `tailgate dev` if dev),
// parsed into f; its errors and usage go to stderr.
func newFlagSet(f *flags, dev bool, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tailgate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.file, "f", "", "config `file` (agentgateway format plus a tailscale block)")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&f.verboseTailnet, "verbose-tailnet", false, "log tsnet's backend messages at debug level")
	fs.DurationVar(&f.watch, "watch", 2*time.Second, "how often to check the config file for changes (0: only on SIGHUP)")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	if dev {
		fs.StringVar(&f.admin, "admin", "", "`address` of /metrics and /healthz/* (default config.adminAddr, else a free port on 127.0.0.1; \"off\" for none)")
		fs.StringVar(&f.listen, "listen", "127.0.0.1:3001", "local `address` of the bridge into the dev tailnet (127.0.0.1:0 for a free port)")
		fs.StringVar(&f.tags, "tags", "", "comma-separated tags for the bridge node, e.g. tag:ci (it then belongs to tagged-devices)")
		fs.StringVar(&f.user, "user", "", "the bridge node's login, e.g. alice@example.com (default: a made-up user-N@fake-control.example.net)")
	} else {
		fs.StringVar(&f.admin, "admin", "", "`address` of /metrics and /healthz/* (default config.adminAddr, else 127.0.0.1:15000; \"off\" for none)")
		fs.BoolVar(&f.validateOnly, "validate-only", false, "check the config, print ok or every error (and warnings), and exit")
	}
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprint(out, usageText)
		if dev {
			fmt.Fprint(out, "\ndev flags:\n")
		} else {
			fmt.Fprint(out, "\nflags (tailgate dev -h for the dev flags):\n")
		}
		fs.PrintDefaults()
	}
	return fs
}

// stdlogWriter logs each line written to it as a warning.
type stdlogWriter struct{ log *slog.Logger }

func (w stdlogWriter) Write(p []byte) (int, error) {
	w.log.Warn(strings.TrimSpace(string(p)))
	return len(p), nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// app is one run of the gateway.
type app struct {
	flags
	env            *policy.Env
	cfg            *gateway.Config
	config         *gateway.ConfigFile
	hup            <-chan os.Signal
	log            *slog.Logger
	stdout, stderr io.Writer
	// devMode: `tailgate dev` (a free admin port by default).
	devMode bool
	// adminAddrs are the admin listeners' addresses, once they listen.
	adminAddrs []string
	// hideFromChildren are paths no stdio child may reach besides the
	// config's: the node's default state dir (defaultStateHidden).
	hideFromChildren []string
	// keyDir holds the keys of identity tokens (gateway.Options.KeyDir):
	// in the node's state dir, a temporary dir for tailgate dev, none (in
	// memory) for state kept in memory.
	keyDir string
	// banner is printed on stdout once the gateway is ready (dev).
	banner string
}

// nodeConfig is the tsnode config of the tailscale block.
func (a *app) nodeConfig(key string) tsnode.Config {
	ts := a.cfg.Tailscale
	return tsnode.Config{
		Hostname:      ts.Hostname,
		ControlURL:    ts.ControlURL,
		AuthKey:       key,
		Ephemeral:     ts.Ephemeral,
		StateDir:      ts.StateDir,
		MemoryState:   ts.StateStore == "mem",
		AdvertiseTags: ts.AdvertiseTags,
		StartTimeout:  time.Duration(ts.StartTimeout),
		LogUpload:     ts.LogUpload,
		Logger:        a.log.With("component", "tailnet"),
		Verbose:       a.verboseTailnet,
	}
}

// tailnetNode is tailgate's place on the tailnet: its own tsnet node, or the
// host's tailscaled (mode: host).
type tailnetNode interface {
	gateway.Network
	Start(ctx context.Context) error
	Identify(ctx context.Context, addr netip.AddrPort) (*tsnode.Identity, error)
	IPs() []netip.Addr
	DNSName() string
	Close() error
}

func (a *app) serve(ctx context.Context) int {
	if a.cfg.Tailscale.Mode == "host" {
		host := tsnode.NewHost(tsnode.HostConfig{Socket: a.cfg.Tailscale.Socket, Logger: a.log.With("component", "tailnet")})
		a.log.Info("mode host: using the host's tailscaled", "socket", a.cfg.Tailscale.Socket)
		if dir := a.cfg.Tailscale.StateDir; dir != "" {
			a.keyDir = filepath.Join(dir, "identity-keys")
		}
		return a.run(ctx, host, "", nil)
	}
	key, keyFrom, err := tsnode.AuthKey(a.cfg.Tailscale.AuthKeyFile)
	if err != nil {
		fmt.Fprintln(a.stderr, "tailgate:", err)
		return exitTailnet
	}
	if key != "" {
		a.log.Info("auth key found", "from", keyFrom)
	}
	nc := a.nodeConfig(key)
	n, err := tsnode.New(nc)
	if err != nil {
		fmt.Fprintln(a.stderr, "tailgate:", err)
		return exitTailnet
	}
	a.log.Info("joining tailnet", "hostname", n.Hostname(), "control", n.ControlURL(), "state_dir", n.StateDir())
	a.warnExposedSecrets(n.StateDir(), keyFrom)
	a.hideFromChildren = defaultStateHidden(a.cfg.Tailscale, n.StateDir())
	if a.cfg.Tailscale.StateStore != "mem" && n.StateDir() != "" {
		a.keyDir = filepath.Join(n.StateDir(), "identity-keys")
	}
	return a.run(ctx, n, key, nil)
}

// defaultStateHidden is the node's state dir when the config names none
// and the state is on disk: tsnode's default (tsnode.DefaultStateDir:
// /var/lib/tailgate/<hostname> for root, else ~/.config/tailgate/<hostname>),
// which holds the node's private keys. It is hidden from stdio children
// like a configured one, at a price under HOME: children of the gateway's own HOME
// cannot create new entries directly in $HOME, ~/.config and
// ~/.config/tailgate (Landlock grants a right on a directory for all
// beneath it, so creating ~/.npm and reaching the keys go together). The
// price is preferred to the keys: a child that reads them is the gateway
// on the tailnet. Where that price is too high, tailscale.stateDir outside
// HOME (/var/lib/tailgate) or stdio.user (another HOME) avoids it; the
// start says so (warnExposedSecrets).
func defaultStateHidden(ts gateway.TailscaleConfig, stateDir string) []string {
	if ts.StateDir != "" || ts.StateStore == "mem" || stateDir == "" {
		return nil
	}
	return []string{stateDir}
}

// underHome reports whether dir is in the user's home directory.
func underHome(dir string) bool {
	home, err := os.UserHomeDir()
	return err == nil && home != "" && strings.HasPrefix(dir, filepath.Clean(home)+string(filepath.Separator))
}

// warnExposedSecrets says, once at start, what stdio children could reach
// of the node's secrets (README: Security), so that it is not learnt from
// an incident.
func (a *app) warnExposedSecrets(stateDir, keyFrom string) {
	all, withUser := a.cfg.StdioTargets()
	if all == 0 {
		return
	}
	ts := a.cfg.Tailscale
	if os.Geteuid() == 0 && withUser < all {
		a.log.Warn("stdio children run as root: Landlock keeps them from the gateway's memory, environment and keys, but not from the machine (raw disks, kernel modules), and without Landlock nothing does; set stdio.user on each stdio target, or run tailgate as an ordinary user", "auth_key_from", keyFrom)
	}
	if err := mcpstdio.ConfinementError(); err != nil {
		a.log.Warn("stdio children cannot be confined: they are not kept from the node's state dir, the auth key file, nor (as the same user) from each other's environments; only file permissions and stdio.user protect them", "reason", err)
		return
	}
	if ts.StateDir == "" && ts.StateStore != "mem" && withUser < all && underHome(stateDir) {
		a.log.Warn("the node's state dir is the default one, under the home directory; it is hidden from stdio children, which therefore cannot create new files or directories directly in the folders above it (such as ~/.npm on npx's first run); set tailscale.stateDir outside the home directory, such as /var/lib/tailgate, or stdio.user", "state_dir", stateDir)
	}
}

// dev runs the gateway on an embedded tailnet, with a bridge node that
// any local MCP client reaches on 127.0.0.1.
func (a *app) dev(ctx context.Context) int {
	var tags []string
	for _, t := range strings.Split(a.tags, ",") {
		if t = strings.TrimSpace(t); t != "" {
			if !strings.HasPrefix(t, "tag:") || len(t) == len("tag:") {
				fmt.Fprintf(a.stderr, "tailgate: --tags: %q is not a tag (want tag:name)\n", t)
				return exitConfig
			}
			tags = append(tags, t)
		}
	}
	if a.user != "" && (len(tags) > 0 || strings.ContainsAny(a.user, " \t")) {
		if len(tags) > 0 {
			fmt.Fprintln(a.stderr, "tailgate: --user and --tags: a tagged node belongs to tagged-devices, not to a person; give one of them")
		} else {
			fmt.Fprintf(a.stderr, "tailgate: --user %q: a login has no spaces (e.g. alice@example.com)\n", a.user)
		}
		return exitConfig
	}
	// The bridge's local port first: a busy one is the user's to change,
	// and is said before anything starts.
	ln, err := net.Listen("tcp", a.listen)
	if err != nil {
		fmt.Fprintf(a.stderr, "tailgate: --listen %s: %v (another tailgate dev? choose another address with --listen, e.g. --listen 127.0.0.1:0)\n", a.listen, unwrapOpError(err))
		return exitConfig
	}
	var logins map[string]string
	if a.user != "" {
		logins = map[string]string{bridgeName: a.user}
	}
	dtn, err := devnet.New(devnet.Config{
		Logger: a.log.With("component", "devnet"),
		Tags:   append(append([]string(nil), tags...), a.cfg.Tailscale.AdvertiseTags...),
		Logins: logins,
	})
	if err != nil {
		ln.Close()
		fmt.Fprintln(a.stderr, "tailgate:", err)
		return exitTailnet
	}
	defer dtn.Close()
	nc := a.nodeConfig("")
	nc.ControlURL, nc.Ephemeral, nc.MemoryState, nc.StateDir = dtn.ControlURL, true, true, ""
	a.log.Info("dev mode: embedded tailnet on 127.0.0.1; the config's control server, auth key and state are not used", "control", dtn.ControlURL)
	n, err := tsnode.New(nc)
	if err != nil {
		ln.Close()
		fmt.Fprintln(a.stderr, "tailgate:", err)
		return exitTailnet
	}
	a.devMode = true
	// The dev gateway's signing keys live as long as it does.
	keyDir, err := os.MkdirTemp("", "tailgate-dev-keys-")
	if err != nil {
		ln.Close()
		fmt.Fprintln(a.stderr, "tailgate:", err)
		return exitTailnet
	}
	defer os.RemoveAll(keyDir)
	a.keyDir = keyDir
	return a.run(ctx, n, "", func(ctx context.Context, node tailnetNode, gw *gateway.Server) (func(), error) {
		ports := gw.Ports()
		target := netip.AddrPortFrom(node.IPs()[0], uint16(ports[0]))
		b, err := dtn.Bridge(ctx, devnet.BridgeConfig{Hostname: bridgeName, Tags: tags, Listener: ln, Target: target})
		if err != nil {
			return nil, err
		}
		// Local clients name the gateway by the bridge's address
		// (127.0.0.1:3001): that Host is accepted from the bridge's node
		// only, so a page rebinding a name of its own to 127.0.0.1 is
		// still refused, and so is "localhost" from any other peer.
		gw.AllowLocalhostFrom(b.IPs()...)
		login, err := b.Login(ctx)
		if err != nil || login == "" {
			login = cmp.Or(a.user, "a made-up user")
		}
		if a.user == "" && len(tags) == 0 {
			login += " (--user chooses)"
		}
		path := "/mcp"
		url := "http://" + b.Addr + path
		a.log.Info("dev bridge up: MCP clients on this machine reach the gateway as tailnet node "+bridgeName, "url", url, "login", login, "tags", tags, "forwards_to", target.String())
		var banner strings.Builder
		fmt.Fprintf(&banner, "\n  tailgate dev is running. Point your MCP client at:\n\n      %s\n\n  (Streamable HTTP; legacy SSE at http://%s/sse where the route serves it)\n  Callers come in as node %s, login %s.\n", url, b.Addr, devnet.NodeName(bridgeName), login)
		for _, addr := range a.adminAddrs {
			fmt.Fprintf(&banner, "  Metrics and health: http://%s/metrics, http://%s/healthz/ready\n", addr, addr)
		}
		banner.WriteString("\n")
		a.banner = banner.String()
		return func() {
			if err := b.Close(); err != nil {
				a.log.Warn("dev bridge: leaving the tailnet", "err", err)
			}
		}, nil
	})
}

// unwrapOpError drops the "listen tcp 127.0.0.1:3001:" that a message
// already says.
func unwrapOpError(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

// run joins the tailnet as node, serves the config until ctx ends, and
// shuts down within the budget. extra, if set, runs once the gateway is up
// (the dev bridge) and returns its cleanup.
func (a *app) run(ctx context.Context, node tailnetNode, key string, extra func(context.Context, tailnetNode, *gateway.Server) (func(), error)) int {
	defer node.Close()
	var secrets []string
	if key != "" {
		secrets = append(secrets, key)
	}
	gw, err := gateway.New(a.cfg, gateway.Options{
		Logger:    a.log,
		Identify:  gateway.IdentifyTailnet(node.Identify),
		DropEnv:   tsnode.SecretEnv(),
		Secrets:   secrets,
		HidePaths: a.hideFromChildren,
		KeyDir:    a.keyDir,
	})
	if err != nil {
		fmt.Fprintln(a.stderr, "tailgate:", err)
		return exitConfig
	}
	stopAdmin, err := a.startAdmin(gw)
	if err != nil {
		fmt.Fprintln(a.stderr, "tailgate:", err)
		gw.Shutdown(context.Background())
		return exitConfig
	}
	defer stopAdmin()
	if err := node.Start(ctx); err != nil {
		gw.Shutdown(context.Background())
		if ctx.Err() != nil {
			return exitOK // interrupted while joining
		}
		fmt.Fprintln(a.stderr, "tailgate:", err)
		return exitTailnet
	}
	if err := gw.Start(node); err != nil {
		gw.Shutdown(context.Background())
		fmt.Fprintln(a.stderr, "tailgate:", err)
		return exitTailnet
	}
	// Each target starts once before tailgate is ready: a first start's
	// cost (npx fetching a package) is not paid by the first client.
	gw.Warm(ctx)
	if extra != nil {
		cleanup, err := extra(ctx, node, gw)
		if err != nil {
			gw.Shutdown(context.Background())
			fmt.Fprintln(a.stderr, "tailgate:", err)
			return exitTailnet
		}
		defer cleanup()
	}
	gw.SetReady(true)
	a.log.Info("tailgate ready", "name", node.DNSName(), "ips", node.IPs(), "ports", gw.Ports(), "config", a.cfg.File)
	if a.banner != "" {
		fmt.Fprint(a.stdout, a.banner)
	}

	reloading := make(chan struct{})
	go func() {
		defer close(reloading)
		a.reloadLoop(ctx, gw)
	}()
	<-ctx.Done()
	start := time.Now()
	a.log.Info("shutting down")
	<-reloading // a reload under way finishes first
	go func() {
		for range a.hup {
			a.log.Info("SIGHUP ignored: shutting down")
		}
	}()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownBudget-2*time.Second)
	defer cancel()
	if err := gw.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		a.log.Warn("shutdown", "err", err)
	}
	if err := node.Close(); err != nil {
		a.log.Warn("leaving tailnet", "err", err)
	}
	a.log.Info("stopped", "duration", time.Since(start).Round(time.Millisecond))
	return exitOK
}

// reloadLoop reloads the config on SIGHUP and when the file's contents
// change. An invalid file keeps the running config and logs every error.
func (a *app) reloadLoop(ctx context.Context, gw *gateway.Server) {
	var tick <-chan time.Time
	if a.watch > 0 {
		t := time.NewTicker(a.watch)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.hup:
			if ctx.Err() != nil {
				return
			}
			a.log.Info("SIGHUP: reloading config", "file", a.file)
			data, err := a.config.Read()
			if err != nil {
				gw.RecordReloadFailure()
				a.log.Error("config reload: keeping the running config", "err", err)
				continue
			}
			a.reload(gw, data)
		case <-tick:
			// A stat, and a read only if the file's size, times or inode
			// changed; a reload only if its contents did.
			if data, changed := a.config.Changed(); changed {
				a.log.Info("config file changed: reloading", "file", a.file)
				a.reload(gw, data)
			}
		}
	}
}

func (a *app) reload(gw *gateway.Server, data []byte) {
	cfg, err := gateway.Parse(a.file, data, a.env)
	if err != nil {
		gw.RecordReloadFailure()
		var errs gateway.ConfigErrors
		if errors.As(err, &errs) {
			for _, e := range errs {
				a.log.Error("config reload: invalid config; keeping the running one", "err", e.Error())
			}
		} else {
			a.log.Error("config reload: keeping the running config", "err", err)
		}
		return
	}
	if err := gw.Reload(cfg); err != nil {
		a.log.Error("config reload", "err", err)
	}
}
