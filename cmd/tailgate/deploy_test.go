package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
)

// The systemd unit is hardened: no capability, the auth key as a
// credential, a system service's system calls plus Landlock's, and
// systemd-analyze (where installed) accepts it.
func TestSystemdUnitHardening(t *testing.T) {
	s := unitSettings(t)
	for k, want := range map[string]string{
		"LoadCredential":          "authkey:/etc/tailgate/authkey",
		"CapabilityBoundingSet":   "",
		"AmbientCapabilities":     "",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"RestrictNamespaces":      "yes",
		"SystemCallArchitectures": "native",
		"UMask":                   "0077",
		"StateDirectoryMode":      "0700",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
		"SystemCallErrorNumber":   "EPERM",
		"TimeoutStopSec":          "15s",
		"Environment":             "HOME=/var/cache/tailgate",
		"CacheDirectory":          "tailgate",
		"ProtectKernelTunables":   "yes",
		"ProtectControlGroups":    "yes",
		"ProtectKernelModules":    "yes",
		"ProtectKernelLogs":       "yes",
		"LockPersonality":         "yes",
		"RestrictSUIDSGID":        "yes",
		"ProtectProc":             "invisible",
		"KeyringMode":             "private",
		"RestrictRealtime":        "yes",
		"ProtectClock":            "yes",
		"ProtectHostname":         "yes",
		"PrivateIPC":              "yes",
		"StateDirectory":          "tailgate",
		"DynamicUser":             "yes",
		"KillMode":                "control-group",
		"ExecReload":              "/bin/kill -HUP $MAINPID",
		"Restart":                 "on-failure",
		"KillSignal":              "SIGTERM",
		"Type":                    "simple",
		"RestartSec":              "5s",
		"SystemCallFilter":        "@system-service landlock_create_ruleset landlock_add_rule landlock_restrict_self",
		"ExecStart":               "/usr/local/bin/tailgate -f /etc/tailgate/tailgate.yaml --log-format json",
	} {
		if got := s[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%v, want %q", k, got, want)
		}
	}
	// Node's JIT (npx servers) needs writable, executable memory.
	if got, set := s["MemoryDenyWriteExecute"]; set {
		t.Errorf("MemoryDenyWriteExecute=%v would break Node servers", got)
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze not installed: the unit is not verified by systemd")
		return
	}
	// systemd-analyze checks that ExecStart exists: point it at a real
	// program.
	raw, _ := os.ReadFile("tailgate.service")
	unit := filepath.Join(t.TempDir(), "tailgate.service")
	os.WriteFile(unit, bytes.ReplaceAll(raw, []byte("/usr/local/bin/tailgate"), []byte("/bin/true")), 0o644)
	if out, err := exec.Command("systemd-analyze", "verify", unit).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, _ := exec.Command("systemd-analyze", "security", "--offline=yes", unit).CombinedOutput()
	if m := regexp.MustCompile(`exposure level for tailgate.service: ([0-9.]+) (\w+)`).FindSubmatch(out); m == nil || string(m[2]) != "OK" {
		t.Errorf("systemd-analyze security: %s", bytes.TrimSpace(out[max(0, len(out)-200):]))
	} else {
		t.Logf("systemd-analyze security: exposure %s %s", m[1], m[2])
	}
}

// dockerfile is the repo's Dockerfile as its stages' instructions.
type dockerStage struct {
	from  string
	instr []string // "RUN ...", "ENV ...", continuation lines joined
}

func readDockerfile(t *testing.T) []dockerStage {
	t.Helper()
	f, err := os.Open("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages []dockerStage
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	flush := func() {
		line := strings.Join(strings.Fields(cur.String()), " ")
		cur.Reset()
		if line == "" {
			return
		}
		if from, ok := strings.CutPrefix(line, "FROM "); ok {
			stages = append(stages, dockerStage{from: from})
			return
		}
		if len(stages) > 0 {
			stages[len(stages)-1].instr = append(stages[len(stages)-1].instr, line)
		}
	}
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		if c, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(c + " ")
			continue
		}
		cur.WriteString(line)
		flush()
	}
	return stages
}

// The container build makes a static, version-stamped binary with the
// release tags, and runs it unprivileged beside Node (for npx servers),
// with a command line tailgate accepts.
func TestDockerfile(t *testing.T) {
	stages := readDockerfile(t)
	if len(stages) != 2 || !strings.HasPrefix(stages[0].from, "golang:") || !strings.HasPrefix(stages[1].from, "node:") {
		t.Fatalf("stages %+v: want a golang build stage and a node runtime stage", stages)
	}
	build := strings.Join(stages[0].instr, "\n")
	for _, want := range []string{"CGO_ENABLED=0", "GOTOOLCHAIN=local", "-tags ts_omit_peerapiserver,ts_omit_tpm", "-trimpath",
		"-X github.com/tailgate-dev/tailgate/gateway.Version=${VERSION}", "-X github.com/tailgate-dev/tailgate/gateway.Commit=${COMMIT}", "./cmd/tailgate"} {
		if !strings.Contains(build, want) {
			t.Errorf("build stage lacks %q", want)
		}
	}
	var user, entry, cmd string
	for _, in := range stages[1].instr {
		switch {
		case strings.HasPrefix(in, "USER "):
			user = strings.TrimPrefix(in, "USER ")
		case strings.HasPrefix(in, "ENTRYPOINT "):
			entry = strings.TrimPrefix(in, "ENTRYPOINT ")
		case strings.HasPrefix(in, "CMD "):
			cmd = strings.TrimPrefix(in, "CMD ")
		}
	}
	if user == "" || user == "root" || user == "0" {
		t.Errorf("runs as %q, want an unprivileged user", user)
	}
	// An init reaps what is reparented to PID 1 (exited guards).
	if entry != `["/usr/bin/tini", "--", "/usr/local/bin/tailgate"]` || !slices.Contains(aptInstalls(stages[1]), "tini") {
		t.Errorf("ENTRYPOINT %s: want tailgate under tini, installed in the image", entry)
	}
	args := regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(cmd, -1)
	var argv []string
	for _, a := range args {
		argv = append(argv, a[1])
	}
	for i, a := range argv {
		if a == "-f" && i+1 < len(argv) {
			argv[i+1] = "../../configs/simple.yaml"
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), append(argv, "--validate-only"), &stdout, &stderr, nil); code != exitOK {
		t.Errorf("CMD %v with --validate-only: exit %d: %s", argv, code, stderr.String())
	}
	ignore, err := os.ReadFile("../../.dockerignore")
	if err != nil || !strings.Contains(string(ignore), "node_modules") || !strings.Contains(string(ignore), ".git") {
		t.Errorf(".dockerignore: %v %q", err, ignore)
	}
}

// The image trusts the public certificate authorities: the node slim
// image has no /etc/ssl/certs, and without them tailgate cannot verify an
// https remote target (nor setec, nor an OTLP collector). Checked in the
// Dockerfile, so that no Docker daemon is needed.
func TestDockerImageHasCACertificates(t *testing.T) {
	stages := readDockerfile(t)
	if len(stages) == 0 {
		t.Fatal("the Dockerfile has no stage")
	}
	final := stages[len(stages)-1]
	if pkgs := aptInstalls(final); !slices.Contains(pkgs, "ca-certificates") {
		t.Errorf("the runtime stage (FROM %s) installs %q: want ca-certificates among them", final.from, pkgs)
	}
}

// aptInstalls are the packages a stage's RUN instructions install with
// apt-get install (its options left out).
func aptInstalls(stage dockerStage) []string {
	var pkgs []string
	for _, in := range stage.instr {
		run, ok := strings.CutPrefix(in, "RUN ")
		if !ok {
			continue
		}
		// One shell command after another: && ; || and | end a command.
		for _, command := range regexp.MustCompile(`&&|\|\||;|\|`).Split(run, -1) {
			words := strings.Fields(command)
			if len(words) < 2 || words[0] != "apt-get" || !slices.Contains(words[1:], "install") {
				continue
			}
			_, after, _ := strings.Cut(command, " install ")
			for _, w := range strings.Fields(after) {
				if !strings.HasPrefix(w, "-") {
					pkgs = append(pkgs, w)
				}
			}
		}
	}
	return pkgs
}

// A release build, by the Dockerfile's and by `make release`'s own command
// lines with a test version, is a static binary (no program interpreter, no
// shared library: it runs in any image), stripped, and says its version,
// commit, Go and tailscale.com versions. The command lines are read from
// the Dockerfile and the Makefile, so the test follows them, and fails
// when they stop stamping or stop being static.
func TestReleaseBuildStampsVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tailgate")
	}
	const version, commit = "v9.9.9-test", "0123456789ab"
	goVersion, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		t.Fatalf("go env GOVERSION: %v", err)
	}
	tsVersion := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range bi.Deps {
			if dep.Path == "tailscale.com" {
				tsVersion = dep.Version
			}
		}
	}
	if tsVersion == "" {
		t.Fatal("the test binary has no tailscale.com in its build info")
	}
	want := fmt.Sprintf("tailgate %s\ncommit %s\ngo %s %s/%s\ntailscale.com %s\n", version, commit, strings.TrimSpace(string(goVersion)), runtime.GOOS, runtime.GOARCH, tsVersion)

	// The build's environment is the Dockerfile's or the Makefile's, not
	// the test's.
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "CGO_ENABLED" && k != "GOOS" && k != "GOARCH" && k != "GOFLAGS" {
			env = append(env, kv)
		}
	}
	for _, b := range []struct {
		name string
		// build is the shell command that builds bin, and its environment.
		build func(t *testing.T, bin string) (string, []string)
	}{
		{"Dockerfile", func(t *testing.T, bin string) (string, []string) {
			stages := readDockerfile(t)
			var run string
			var benv []string
			for _, in := range stages[0].instr {
				if kvs, ok := strings.CutPrefix(in, "ENV "); ok {
					benv = append(benv, strings.Fields(kvs)...)
				}
				if strings.HasPrefix(in, "RUN ") && strings.Contains(in, " build ") && strings.HasSuffix(in, "./cmd/tailgate") {
					run = strings.TrimPrefix(in, "RUN ")
				}
			}
			if run == "" {
				t.Fatalf("no RUN that builds ./cmd/tailgate in the build stage: %q", stages[0].instr)
			}
			o := regexp.MustCompile(`-o \S+`)
			if n := len(o.FindAllString(run, -1)); n != 1 {
				t.Fatalf("%d -o in %q", n, run)
			}
			// Build arguments reach RUN as environment variables.
			return o.ReplaceAllLiteralString(run, "-o "+bin), append(benv, "VERSION="+version, "COMMIT="+commit)
		}},
		{"make release", func(t *testing.T, bin string) (string, []string) {
			if _, err := exec.LookPath("make"); err != nil {
				t.Skip("make not installed")
			}
			out, err := exec.Command("make", "-n", "--no-print-directory", "-C", "../..", "release",
				"VERSION="+version, "COMMIT="+commit, "DIST="+filepath.Dir(bin)).Output()
			if err != nil {
				t.Fatalf("make -n release: %v\n%s", err, out)
			}
			for line := range strings.Lines(string(out)) {
				if strings.Contains(line, " build ") {
					// The Makefile exports GOTOOLCHAIN=local.
					return strings.TrimSpace(line), []string{"GOTOOLCHAIN=local"}
				}
			}
			t.Fatalf("make -n release runs no go build:\n%s", out)
			return "", nil
		}},
	} {
		t.Run(b.name, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "tailgate")
			script, benv := b.build(t, bin)
			t.Logf("%s %s", strings.Join(benv, " "), script)
			cmd := exec.Command("sh", "-c", script)
			cmd.Dir = "../.."
			cmd.Env = append(append([]string(nil), env...), benv...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("build: %v\n%s", err, out)
			}

			f, err := elf.Open(bin)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("the binary has a program interpreter (PT_INTERP): it is not static")
				}
			}
			if f.Section(".interp") != nil {
				t.Errorf("the binary has an .interp section: it is not static")
			}
			if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
				t.Errorf("the binary needs shared libraries %v", libs)
			}
			if f.Section(".symtab") != nil {
				t.Errorf("the binary has a symbol table: not stripped (-s)")
			}

			for _, arg := range []string{"version", "--version"} {
				out, err := exec.Command(bin, arg).Output()
				if err != nil {
					t.Errorf("tailgate %s: %v", arg, err)
				}
				if string(out) != want {
					t.Errorf("tailgate %s:\n%s\nwant:\n%s", arg, out, want)
				}
			}
		})
	}
}
