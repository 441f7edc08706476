package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/tailgate-dev/tailgate/gateway"
	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
	"github.com/tailgate-dev/tailgate/policy"
)

// identityConfigFile is configs/identity.yaml with the demo server built
// for the test, each child writing its pid to pids; its path.
func identityConfigFile(t *testing.T, pids string) string {
	t.Helper()
	demo, err := demoserver.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../../configs/identity.yaml")
	if err != nil {
		t.Fatal(err)
	}
	y := strings.ReplaceAll(string(raw), "../bin/tailgate-demo-server", demo)
	y = strings.ReplaceAll(y, "identityEnv: true", "identityEnv: true\n              env: {"+demoserver.PIDDirEnv+": "+pids+"}")
	file := filepath.Join(t.TempDir(), "identity.yaml")
	if err := os.WriteFile(file, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// hasLine reports whether out has line, where {n} stands for any number
// and two spaces or more for any run of them: how many tools the demo
// server has, and how long their names are, are not this test's
// business.
func hasLine(out, line string) bool {
	pattern := strings.ReplaceAll(regexp.QuoteMeta(line), `\{n\}`, `\d+`)
	pattern = regexp.MustCompile(`  +`).ReplaceAllString(pattern, "  +")
	return regexp.MustCompile("(?m)^" + pattern + "$").MatchString(out)
}

// running are the pids in dir of processes that still run.
func running(dir string) []int {
	entries, _ := os.ReadDir(dir)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && !strings.Contains(string(stat), ") Z ") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// tailgate explain --config explains a config without a tailnet: a table
// per route with each item's decision and rule, exit 0, the targets'
// children all gone when it returns; a config error is exit 1 with its
// line, and a caller it cannot explain is exit 1 saying why.
func TestExplainOffline(t *testing.T) {
	pids := t.TempDir()
	file := identityConfigFile(t, pids)
	const team = "binds[0].listeners[0].routes[1].policies.mcpAuthorization.rules"
	for _, tt := range []struct {
		args  []string
		lines []string
	}{
		{[]string{"--as", "alice@example.com"}, []string{
			"who      alice@example.com (as asked: no node is looked up)",
			"connect  allow by frontendPolicies.networkAuthorization.rules[0] (allow rule matched)",
			"  authorization  allow by binds[0].listeners[0].routes[0].policies.authorization.rules[0] (allow rule matched)",
			"  tools   tool      env                  allow     " + team + "[2]  allow rule matched",
			"  tools   tool      exit                 deny      " + team + "     no allow rule matched",
			"  may use: 4 of {n} tools, 1 of 1 prompts, 1 of 1 resources, 2 of 2 resource templates",
		}},
		{[]string{"--tags", "tag:ci", "--node", "ci-runner.example.ts.net"}, []string{
			"who      tagged-devices, node ci-runner.example.ts.net, tags tag:ci (as asked: no node is looked up)",
			"  no item may be used: deny by binds[0].listeners[0].routes[0].policies.authorization.rules (no allow rule matched)",
			"  tools   tool      echo                 deny      " + team + "[4]  deny rule matched",
			"  may use: 1 of {n} tools, 0 of 1 prompts, 0 of 1 resources, 0 of 2 resource templates",
		}},
		{[]string{"--as", "bob@example.com", "--caps", `{"example.com/cap/tailgate": [{"tools": ["info"]}]}`}, []string{
			`grant    example.com/cap/tailgate: [{"tools":["info"]}]`,
			"  tools   tool      info                 allow     " + team + "[3]  allow rule matched",
		}},
	} {
		code, out, errOut := runCLI(append([]string{"explain", "--config", file}, tt.args...)...)
		if code != exitOK {
			t.Fatalf("%v: exit %d: %s", tt.args, code, errOut)
		}
		for _, line := range tt.lines {
			if !hasLine(out, line) {
				t.Errorf("%v: no line %q in:\n%s", tt.args, line, out)
			}
		}
		if left := running(pids); len(left) > 0 {
			t.Errorf("%v: children still running after explain: %v", tt.args, left)
		}
	}

	code, out, _ := runCLI("explain", "--config", file, "--as", "alice@example.com", "--json")
	var ex gateway.Explanation
	if err := json.Unmarshal([]byte(out), &ex); code != exitOK || err != nil || len(ex.Routes) != 2 || ex.Routes[1].Targets[0].Tools[0].Name != "add" {
		t.Errorf("--json: exit %d, %v, %s", code, err, out)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("binds:\n- port: 3000\n  listeners:\n  - protocl: HTTP\n"), 0o600)
	for _, tt := range []struct {
		args []string
		says string
	}{
		{[]string{"--config", bad, "--as", "a@b.c"}, "bad.yaml:4"},
		{[]string{"--config", file}, "say who to explain"},
		{[]string{"--config", file, "--tags", "ci"}, `"ci" is not a tag`},
		{[]string{"--config", file, "--peer", "100.64.0.1"}, "--peer needs a running gateway"},
		{[]string{"--config", file, "--as", "a@b.c", "--caps", "{"}, "--caps: want a JSON object"},
	} {
		if code, _, errOut := runCLI(append([]string{"explain"}, tt.args...)...); code != exitConfig || !strings.Contains(errOut, tt.says) {
			t.Errorf("%v: exit %d, %q, want 1 saying %q", tt.args, code, errOut, tt.says)
		}
	}
}

// tailgate explain --admin asks a running gateway's admin address and
// prints the same table; a gateway not there is exit 1 saying where it
// looked.
func TestExplainAgainstAdmin(t *testing.T) {
	pids := t.TempDir()
	file := identityConfigFile(t, pids)
	env, err := policy.NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(file)
	cfg, err := gateway.Parse(file, data, env)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(cfg, gateway.Options{Logger: slog.New(slog.NewTextHandler(demoserver.LogWriter(t), nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Shutdown(context.Background()) })
	admin := httptest.NewServer(gw.AdminHandler())
	defer admin.Close()

	addr := strings.TrimPrefix(admin.URL, "http://")
	code, out, errOut := runCLI("explain", "--admin", addr, "--as", "bob@example.com")
	for _, line := range []string{
		"who      bob@example.com (as asked: no node is looked up)",
		"  tools   tool      env                  deny      binds[0].listeners[0].routes[1].policies.mcpAuthorization.rules     no allow rule matched",
		"  may use: 3 of {n} tools, 1 of 1 prompts, 1 of 1 resources, 2 of 2 resource templates",
	} {
		if code != exitOK || !hasLine(out, line) {
			t.Errorf("exit %d %s: no line %q in:\n%s", code, errOut, line, out)
		}
	}
	if code, _, errOut := runCLI("explain", "--admin", addr, "--tags", "nope"); code != exitConfig || !strings.Contains(errOut, "400 Bad Request") || !strings.Contains(errOut, `"nope" is not a tag`) {
		t.Errorf("a bad tag: exit %d, %q", code, errOut)
	}
	admin.Close()
	if code, _, errOut := runCLI("explain", "--admin", addr, "--as", "bob@example.com"); code != exitConfig || !strings.Contains(errOut, "is tailgate running with its admin address at "+addr) {
		t.Errorf("no gateway: exit %d, %q", code, errOut)
	}
	if left := running(pids); len(left) > 0 {
		t.Errorf("children still running after explain: %v", left)
	}
}
