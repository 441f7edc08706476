package integration

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// configs/seed.yaml as published — `npx @modelcontextprotocol/server-everything`,
// no version, no -y — on a machine whose npm cache is empty: tailgate gives
// npx npm_config_yes (npm 11 would cancel: "npx canceled due to missing
// packages and no YES option"), fetches the package while it starts
// (readiness waits for each target's first start), and the first client,
// with the MCP Inspector's 15 s connect timeout, succeeds on its first
// call. It needs the npm registry, and is skipped where npm cannot reach
// it.
func TestSeedConfigAsPublished(t *testing.T) {
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

	ctx, cancel = context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "inspector-like"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: d.url, MaxRetries: -1}, LegacySession)
	if err != nil {
		t.Fatalf("the first client: %v", err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "first call"}})
	if err != nil || res.IsError || len(res.Content) == 0 || !strings.Contains(res.Content[0].(*mcp.TextContent).Text, "first call") {
		t.Fatalf("the first call: %v %+v", err, res)
	}
	if !d.stderr.Contains("targets started") {
		t.Error("no warm-up logged")
	}
}
