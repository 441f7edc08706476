// Command tailgate is an MCP gateway that is its own tailnet node. It joins
// a tailnet with tsnet, listens only on its tailnet addresses, admits
// callers with CEL rules, and proxies MCP to stdio servers it starts and
// supervises.
//
// Usage:
//
//	tailgate -f config.yaml                  run the gateway
//	tailgate --validate-only -f config.yaml  check a config, print ok or every error
//	tailgate version                         print the version
//
// Exit status: 0 after a clean shutdown, 1 for a config error, 2 when the
// node cannot join the tailnet (e.g. an invalid auth key).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tailgate-dev/tailgate/gateway"
	"github.com/tailgate-dev/tailgate/policy"
	"github.com/tailgate-dev/tailgate/tsnode"
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

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "version" {
		fmt.Fprintln(stdout, "tailgate", gateway.Version)
		return exitOK
	}
	fs := flag.NewFlagSet("tailgate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "config `file` (agentgateway format plus a tailscale block)")
	validateOnly := fs.Bool("validate-only", false, "check the config, print ok or every error, and exit")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	verboseTailnet := fs.Bool("verbose-tailnet", false, "log tsnet's backend messages at debug level")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tailgate -f config.yaml [flags]\n       tailgate --validate-only -f config.yaml\n       tailgate version\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	if *file == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitConfig
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "tailgate:", err)
		return exitConfig
	}
	env, err := policy.NewEnv()
	if err != nil {
		fmt.Fprintln(stderr, "tailgate:", err)
		return exitConfig
	}
	cfg, err := gateway.Load(*file, env)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	if *validateOnly {
		fmt.Fprintln(stdout, "ok")
		return exitOK
	}
	return serve(ctx, cfg, log, *verboseTailnet, stderr)
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

func serve(ctx context.Context, cfg *gateway.Config, log *slog.Logger, verbose bool, stderr io.Writer) int {
	ts := cfg.Tailscale
	key, keyFrom, err := tsnode.AuthKey(ts.AuthKeyFile)
	if err != nil {
		fmt.Fprintln(stderr, "tailgate:", err)
		return exitTailnet
	}
	node, err := tsnode.New(tsnode.Config{
		Hostname:      ts.Hostname,
		ControlURL:    ts.ControlURL,
		AuthKey:       key,
		Ephemeral:     ts.Ephemeral,
		StateDir:      ts.StateDir,
		MemoryState:   ts.StateStore == "mem",
		AdvertiseTags: ts.AdvertiseTags,
		StartTimeout:  time.Duration(ts.StartTimeout),
		LogUpload:     ts.LogUpload,
		Logger:        log.With("component", "tailnet"),
		Verbose:       verbose,
	})
	if err != nil {
		fmt.Fprintln(stderr, "tailgate:", err)
		return exitTailnet
	}
	defer node.Close()
	var secrets []string
	if key != "" {
		secrets = append(secrets, key)
		log.Info("auth key found", "from", keyFrom)
	}
	gw, err := gateway.New(cfg, gateway.Options{
		Logger:   log,
		Identify: gateway.IdentifyTailnet(node.Identify),
		DropEnv:  tsnode.SecretEnv(),
		Secrets:  secrets,
	})
	if err != nil {
		fmt.Fprintln(stderr, "tailgate:", err)
		return exitConfig
	}
	log.Info("joining tailnet", "hostname", node.Hostname(), "control", ts.ControlURL, "state_dir", node.StateDir())
	if err := node.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return exitOK // interrupted while joining
		}
		fmt.Fprintln(stderr, "tailgate:", err)
		return exitTailnet
	}
	if err := gw.Start(node); err != nil {
		fmt.Fprintln(stderr, "tailgate:", err)
		return exitTailnet
	}
	log.Info("tailgate ready", "name", node.DNSName(), "ips", node.IPs(), "ports", gw.Ports(), "config", cfg.File)

	<-ctx.Done()
	start := time.Now()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownBudget-2*time.Second)
	defer cancel()
	if err := gw.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Warn("shutdown", "err", err)
	}
	if err := node.Close(); err != nil {
		log.Warn("leaving tailnet", "err", err)
	}
	log.Info("stopped", "duration", time.Since(start).Round(time.Millisecond))
	return exitOK
}
