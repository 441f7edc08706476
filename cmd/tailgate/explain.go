package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/tailgate-dev/tailgate/gateway"
	"github.com/tailgate-dev/tailgate/policy"
	"github.com/tailgate-dev/tailgate/tsnode"
)

// explainUsage is `tailgate explain`'s usage line.
const explainUsage = `usage: tailgate explain --as LOGIN [--tags tag:a,tag:b] [--node NAME] [--caps JSON]
                        [--addr IP] [--admin ADDR | --config FILE] [--json]
       tailgate explain --peer TAILNET-IP [--admin ADDR]

What an identity may use on each route (tools, prompts, resources), and the
rule that decides each: from a running gateway (its admin address), or
offline from a config file (--config: its targets are started to list them,
then stopped; no tailnet is joined).
`

// explainFlags are `tailgate explain`'s command line.
type explainFlags struct {
	who     gateway.ExplainIdentity
	tags    string
	caps    string
	admin   string
	config  string
	json    bool
	timeout time.Duration
}

// explainCommand is `tailgate explain`: what an identity may use on each
// route and which rule decides, asked of a running gateway's admin
// address (GET /explain), or worked out offline from a config file
// (--config), with its targets started to list them and stopped. It
// prints a table per route (or the JSON with --json); exit 0 once
// explained, 1 for a usage or config error or a gateway that cannot be
// asked.
func explainCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f explainFlags
	fs := flag.NewFlagSet("tailgate explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.who.Login, "as", "", "the `login` to explain, e.g. alice@example.com (tagged-devices if only --tags)")
	fs.StringVar(&f.who.DisplayName, "name", "", "the user's display `name`, for rules that read it")
	fs.StringVar(&f.tags, "tags", "", "the node's `tags`, comma-separated, e.g. tag:ci")
	fs.StringVar(&f.who.Node, "node", "", "the node's MagicDNS `name`, e.g. alice-laptop.tail1234.ts.net")
	fs.StringVar(&f.caps, "caps", "", "grants' app capabilities as `JSON`, e.g. '{\"example.com/cap/tailgate\": [{\"tools\": [\"info\"]}]}'")
	fs.StringVar(&f.who.Address, "addr", "", "the caller's tailnet `IP`, for rules that read source.address")
	fs.StringVar(&f.who.Peer, "peer", "", "explain a real node, by its tailnet `IP`: the gateway asks WhoIs (not with --config)")
	fs.StringVar(&f.admin, "admin", defaultAdminAddr, "the running gateway's admin `address`")
	fs.StringVar(&f.config, "config", "", "explain offline from this config `file`, starting its targets to list them")
	fs.StringVar(&f.config, "f", "", "same as --config")
	fs.BoolVar(&f.json, "json", false, "print the explanation as JSON")
	fs.DurationVar(&f.timeout, "timeout", 2*time.Minute, "how long to wait for the explanation")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), explainUsage+"\nflags:\n")
		fs.PrintDefaults()
	}
	if slices.ContainsFunc(args, func(a string) bool { return a == "-h" || a == "-help" || a == "--help" }) {
		// Asked for: on stdout, and not an error.
		fs.SetOutput(stdout)
		fs.Usage()
		return exitOK
	}
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tailgate explain: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitConfig
	}
	for tag := range strings.SplitSeq(f.tags, ",") {
		if tag = strings.TrimSpace(tag); tag != "" {
			f.who.Tags = append(f.who.Tags, tag)
		}
	}
	if f.caps != "" {
		caps, err := gateway.ParseCaps(f.caps)
		if err != nil {
			fmt.Fprintln(stderr, "tailgate explain: --"+err.Error())
			return exitConfig
		}
		f.who.Caps = caps
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	var ex *gateway.Explanation
	var err error
	if f.config != "" {
		ex, err = explainOffline(ctx, f.config, f.who, stderr)
	} else {
		ex, err = explainRemote(ctx, f.admin, f.who)
	}
	if err != nil {
		fmt.Fprintln(stderr, "tailgate explain:", err)
		return exitConfig
	}
	if f.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(ex)
	} else {
		err = ex.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "tailgate explain:", err)
		return exitConfig
	}
	return exitOK
}

// explainRemote asks the gateway whose admin address is admin (host:port,
// or a URL) to explain who.
func explainRemote(ctx context.Context, admin string, who gateway.ExplainIdentity) (*gateway.Explanation, error) {
	base := admin
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	url := strings.TrimSuffix(base, "/") + "/explain?" + who.Query().Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("--admin %s: %w", admin, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w (is tailgate running with its admin address at %s? --admin says where; --config explains a config file without a running gateway)", err, admin)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer of %s: %w", admin, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var ex gateway.Explanation
	if err := json.Unmarshal(body, &ex); err != nil {
		return nil, fmt.Errorf("the answer of %s is not an explanation: %w", admin, err)
	}
	return &ex, nil
}

// explainOffline explains who with the config in file, as a gateway
// serving it would, without a tailnet: the gateway is built (nothing
// listens), each target started to list it and stopped, then the gateway
// shut down, children and all. It writes no audit record (the trail is
// the running gateway's); its own log, warnings and up, goes to stderr.
func explainOffline(ctx context.Context, file string, who gateway.ExplainIdentity, stderr io.Writer) (*gateway.Explanation, error) {
	if who.Peer != "" {
		return nil, errors.New("--peer needs a running gateway on the tailnet to ask WhoIs: use --admin, or say who with --as, --tags, --caps")
	}
	env, err := policy.NewEnv()
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := gateway.Parse(file, data, env)
	if err != nil {
		return nil, err
	}
	cfg.Global.Audit = nil
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	gw, err := gateway.New(cfg, gateway.Options{Logger: log, DropEnv: tsnode.SecretEnv()})
	if err != nil {
		return nil, err
	}
	ex, err := gw.Explain(ctx, who)
	// The targets' children are stopped already; this closes the rest
	// (and waits for nothing a caller holds: there is none).
	sctx, cancel := context.WithTimeout(context.Background(), shutdownBudget)
	defer cancel()
	if serr := gw.Shutdown(sctx); serr != nil && err == nil {
		err = fmt.Errorf("shutting down: %w", serr)
	}
	return ex, err
}
