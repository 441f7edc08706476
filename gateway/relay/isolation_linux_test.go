package relay_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tailgate-dev/tailgate/gateway/relay"
	"github.com/tailgate-dev/tailgate/mcpstdio"
)

// Two callers' children, started through the real spawn path with nothing
// to hide, cannot read the gateway's environment nor each other's: each
// runs in a Landlock domain of its own, which refuses ptrace-class access
// (/proc/<pid>/environ) to any process outside it, and a root child has
// lost the capabilities that get past it (CAP_SYS_ADMIN, CAP_PERFMON).
// The second child tries the first's environ, where the
// first caller's secret sits (identityEnv), and the gateway's (this test
// process). Before, with no path to hide no domain was applied: as root
// both reads succeeded, and as stdio.user the sibling's did (same uid,
// dumpable).
func TestChildrenCannotReadGatewayOrEachOther(t *testing.T) {
	if mcpstdio.ConfinementError() != nil {
		t.Skip("no Landlock in this kernel:", mcpstdio.ConfinementError())
	}
	type variant struct {
		name string
		user *mcpstdio.User
	}
	variants := []variant{{name: "gateway's own user"}}
	if os.Geteuid() == 0 {
		if nobody, err := mcpstdio.LookupUser("nobody"); err == nil {
			variants = append(variants, variant{"stdio.user", nobody})
		}
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			// A folder every user can reach, for the demo server and what
			// the children write (a test's own folder is private).
			shared, err := os.MkdirTemp("", "tailgate-isolation-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(shared) })
			bin, err := os.ReadFile(demoBin)
			if err != nil {
				t.Fatal(err)
			}
			demo := filepath.Join(shared, "demo")
			for _, err := range []error{os.Chmod(shared, 0o777), os.WriteFile(demo, bin, 0o755)} {
				if err != nil {
					t.Fatal(err)
				}
			}
			// Each child reads the environ of the children before it and of
			// the gateway, then says its pid and becomes the demo server.
			script := fmt.Sprintf(`out=%s
for f in $out/pid.*; do [ -e "$f" ] || continue; echo "== sibling"; cat /proc/$(cat $f)/environ | tr '\0' '\n'; done > $out/stolen.$$ 2>&1
echo "== gateway $(head -c 1 /proc/%d/environ 2>/dev/null | wc -c)" >> $out/stolen.$$
echo $$ > $out/pid.$$
exec %s`, shared, os.Getpid(), demo)
			b := newBackendTargets(t, []relay.Target{{Name: "demo", Command: "/bin/sh", Args: []string{"-c", script}, IdentityEnv: true, User: v.user}}, relay.Options{})
			const aliceSecret = "alice-per-caller-secret-0123456789"
			alice := openWith(t, b, relay.OpenParams{ID: "alice", Identity: relay.EnvIdentity{"CALLER_SECRET": aliceSecret}})
			callTool(t, alice, "echo", map[string]any{"message": "x"})
			bob := openWith(t, b, relay.OpenParams{ID: "bob", Identity: relay.EnvIdentity{"CALLER_SECRET": "bob-secret-0123456789"}})
			callTool(t, bob, "echo", map[string]any{"message": "x"})
			pids, _ := filepath.Glob(filepath.Join(shared, "pid.*"))
			if len(pids) != 2 {
				t.Fatalf("%d children ran, want 2", len(pids))
			}
			var all string
			for _, p := range pids {
				got, err := os.ReadFile(strings.Replace(p, "pid.", "stolen.", 1))
				if err != nil {
					t.Fatal(err)
				}
				all += string(got)
			}
			t.Logf("the children read:\n%s", all)
			if strings.Contains(all, aliceSecret) {
				t.Errorf("bob's child read alice's child's environment")
			}
			if !strings.Contains(all, "== sibling") || !strings.Contains(all, "environ: Permission denied") {
				t.Errorf("bob's child did not try alice's child's environ, or was not refused it")
			}
			if strings.Contains(all, "== gateway 1") || !strings.Contains(all, "== gateway 0") {
				t.Errorf("a child read the gateway's environment")
			}
		})
	}
}
