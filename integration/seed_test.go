package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// configs/seed.yaml as published — `npx @modelcontextprotocol/server-everything`,
// no version, no -y — on a machine whose npm cache is empty: tailgate gives
// npx npm_config_yes (npm 11 would cancel: "npx canceled due to missing
// packages and no YES option"), fetches the package while it starts
// (readiness waits for each target's first start), and the first client,
// the MCP Inspector's CLI (2.12.0, pinned in testdata/conformance) with its
// 15 s connect timeout, succeeds on its first call. It needs the npm
// registry, and is skipped where npm cannot reach it.
func TestSeedConfigAsPublished(t *testing.T) {
	node, inspector := node22Script(t, "@modelcontextprotocol/inspector/clients/launcher/build/index.js")
	if _, err := exec.LookPath("npx"); err != nil {
		t.Skip("npx not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "npm", "ping").CombinedOutput(); err != nil {
		t.Skipf("the npm registry cannot be reached (%v): %s", err, out)
	}
	// A fresh npm cache (the cold start of a new machine), and nothing
	// that answers npx's question for it.
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return strings.EqualFold(k, "npm_config_yes") || strings.EqualFold(k, "npm_config_cache")
	})
	env = append(env, "npm_config_cache="+t.TempDir(), "npm_config_update_notifier=false")
	begin := time.Now()
	d := startDevEnv(t, "seed", "../configs/seed.yaml", env, 3*time.Minute, "--listen", "127.0.0.1:0")
	t.Logf("ready after %v (a cold npx start)", time.Since(begin).Round(time.Millisecond))

	// The MCP Inspector's CLI, as a newcomer runs it, with its own 15 s
	// connect timeout; its catalog and storage go to a scratch HOME.
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, inspector, "--cli", d.url, "--transport", "http",
		"--method", "tools/call", "--tool-name", "echo", "--tool-arg", "message=first call")
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "HOME=") }), "HOME="+t.TempDir())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var res struct {
		Content []struct{ Text string }
		IsError bool
	}
	if err != nil || json.Unmarshal(out, &res) != nil || res.IsError || len(res.Content) == 0 || !strings.Contains(res.Content[0].Text, "first call") {
		t.Fatalf("the Inspector CLI's first call: %v\n%s%s", err, out, stderr.String())
	}
	if !d.stderr.Contains("targets started") {
		t.Error("no warm-up logged")
	}

	// Ctrl-C with no call in flight: the npx children stop with the
	// gateway at once (README promises under a second). It took 3.2–3.4 s:
	// server-everything outlives its stdin after a session (its timers)
	// and was given the whole stop grace, and a zombie left in its group
	// was waited on. 236 ms here; the bound leaves room for a loaded CI
	// machine, and the figure is logged.
	d.interrupt(t, 2*time.Second)
}
