package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb, nil)
	return code, out.String(), errb.String()
}

// Help asked for is not an error: the usage on stdout, exit 0.
func TestHelpExits0(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"-help"}, {"dev", "--help"}, {"-f", "x.yaml", "-h"}} {
		code, out, errOut := runCLI(args...)
		if code != exitOK || !strings.Contains(out, "usage:") || errOut != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
	if _, out, _ := runCLI("dev", "-h"); !strings.Contains(out, "-user") || !strings.Contains(out, "-listen") || !strings.Contains(out, "-admin") {
		t.Errorf("dev -h lacks the dev flags:\n%s", out)
	}
	// Not asked for: usage on stderr, exit 1, and why.
	code, out, errOut := runCLI()
	if code != exitConfig || out != "" || !strings.Contains(errOut, "no config file") || !strings.Contains(errOut, "usage:") {
		t.Errorf("no args: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, errOut := runCLI("-f", "x.yaml", "extra"); code != exitConfig || !strings.Contains(errOut, `unexpected argument "extra"`) {
		t.Errorf("stray argument: exit %d, %q", code, errOut)
	}
}

// version and --version print tailgate's version and commit and the Go
// and tailscale.com versions.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		code, out, _ := runCLI(args...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != exitOK || len(lines) != 4 {
			t.Fatalf("%v: exit %d:\n%s", args, code, out)
		}
		for i, re := range []string{`^tailgate \S+$`, `^commit \S+$`, `^go go1\.\d+.* \w+/\w+$`, `^tailscale\.com v1\.\d+\.\d+$`} {
			if !regexp.MustCompile(re).MatchString(lines[i]) {
				t.Errorf("%v: line %q does not match %s", args, lines[i], re)
			}
		}
	}
}

// --validate-only warns about what the host lacks: a target's program,
// the auth key file; the config itself is valid.
func TestValidateOnlyWarnsAboutTheHost(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tailgate.yaml")
	os.WriteFile(file, []byte(`tailscale:
  authKeyFile: `+filepath.Join(dir, "authkey")+`
mcp:
  targets:
  - name: local
    stdio: {cmd: ./server}
  - name: npm
    stdio: {cmd: no-such-npx-tailgate, args: [pkg]}
`), 0o600)
	code, out, errOut := runCLI("--validate-only", "-f", file)
	want := []string{
		"warning: " + file + ":6: mcp.targets[0].stdio.cmd: " + filepath.Join(dir, "server") + ": no such file or directory",
		"warning: " + file + ":8: mcp.targets[1].stdio.cmd: no-such-npx-tailgate: not found in PATH",
		"warning: " + file + ":2: tailscale.authKeyFile: cannot read the auth key: no such file or directory",
	}
	if code != exitOK || strings.TrimSpace(out) != "ok" || strings.TrimSpace(errOut) != strings.Join(want, "\n") {
		t.Errorf("exit %d, stdout %q, stderr:\n%s\nwant:\n%s", code, out, errOut, strings.Join(want, "\n"))
	}
}

// The binary carries no test code: not Go's testing package, not the
// repo's integration tests (tailgate dev's tailnet is tsnode/devnet).
func TestNoTestingInTheBinary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-tags", "ts_omit_peerapiserver,ts_omit_tpm", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "testing" || strings.HasPrefix(pkg, "testing/") || pkg == "github.com/tailgate-dev/tailgate/integration" || strings.HasSuffix(pkg, "/tstest/integration") {
			t.Errorf("cmd/tailgate depends on %s", pkg)
		}
	}
}
