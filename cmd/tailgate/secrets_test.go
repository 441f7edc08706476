package main

import (
	"bytes"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tailgate-dev/tailgate/gateway"
	"github.com/tailgate-dev/tailgate/mcpstdio"
	"github.com/tailgate-dev/tailgate/policy"
)

// The start says what stdio children could reach of the node's secrets,
// or what keeping it from them costs: children of a root gateway without
// stdio.user, a default state dir (hidden, so children of the gateway's
// HOME cannot create entries directly above it), a kernel without
// Landlock; and nothing when all is kept.
func TestExposedSecretsWarned(t *testing.T) {
	const (
		root    = "stdio children run as root"
		state   = "the node's state dir is the default one"
		noLock  = "stdio children cannot be confined"
		targets = "\nmcp:\n  targets:\n  - name: a\n    stdio: {cmd: sh%s}\n"
	)
	asRoot := os.Geteuid() == 0
	landlock := mcpstdio.ConfinementError() == nil
	t.Setenv("HOME", "/home/x")
	for _, tc := range []struct {
		name, tailscale, user string
		// dir is the node's state dir; default: under HOME.
		dir  string
		want []string
	}{
		{"default state dir", "tailscale: {}", "", "", []string{state, root}},
		// Root's default, outside HOME: hiding it costs nothing.
		{"default state dir outside HOME", "tailscale: {}", "", "/var/lib/tailgate/tailgate", []string{root}},
		{"default state dir, stdio.user", "tailscale: {}", ", user: nobody", "", nil},
		{"state dir set", "tailscale: {stateDir: /var/lib/tailgate}", ", user: nobody", "", nil},
		{"memory state", "tailscale: {stateStore: mem, ephemeral: true}", ", user: nobody", "", nil},
		{"no user", "tailscale: {stateDir: /var/lib/tailgate}", "", "", []string{root}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := policy.NewEnv()
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := gateway.Parse("t.yaml", []byte(tc.tailscale+strings.Replace(targets, "%s", tc.user, 1)), env)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			a := &app{cfg: cfg, log: slog.New(slog.NewTextHandler(&buf, nil))}
			dir := tc.dir
			if dir == "" {
				dir = "/home/x/.config/tailgate/tailgate"
			}
			a.warnExposedSecrets(dir, "TS_AUTHKEY")
			var want []string
			for _, w := range tc.want {
				switch {
				case w == root && !asRoot:
				case w == state && !landlock:
				default:
					want = append(want, w)
				}
			}
			if !landlock {
				want = append(want, noLock)
			}
			for _, w := range []string{root, state, noLock} {
				if got := strings.Contains(buf.String(), w); got != slices.Contains(want, w) {
					t.Errorf("warned %q: %v, want %v; log:\n%s", w, got, !got, buf.String())
				}
			}
		})
	}
}
