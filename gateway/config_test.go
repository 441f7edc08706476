package gateway

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/policy"
)

func newEnv(t testing.TB) *policy.Env {
	t.Helper()
	env, err := policy.NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// Every file in configs/ must load: they are the examples users copy.
func TestExampleConfigsLoad(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../configs/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no configs: %v", err)
	}
	for _, f := range files {
		if _, err := Load(f, newEnv(t)); err != nil {
			t.Errorf("%s:\n%v", f, err)
		}
	}
}

func TestSeedConfig(t *testing.T) {
	t.Parallel()
	cfg, err := Load("../configs/seed.yaml", newEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Binds) != 1 || cfg.Binds[0].Port != 3000 {
		t.Fatalf("binds: %+v", cfg.Binds)
	}
	l := cfg.Binds[0].Listeners[0]
	if l.Name != "default" || l.Protocol != "HTTP" || l.Routes[0].Name != "mcp" {
		t.Errorf("listener: %+v", l)
	}
	tgt := l.Routes[0].Backends[0].MCP.Targets[0]
	if tgt.Name != "everything" || tgt.Stdio.Cmd != "npx" || strings.Join(tgt.Stdio.Args, " ") != "@modelcontextprotocol/server-everything" {
		t.Errorf("target: %+v %+v", tgt, tgt.Stdio)
	}
	if cfg.networkAuthz.Len() != 1 {
		t.Errorf("networkAuthorization rules: %d", cfg.networkAuthz.Len())
	}
	d := cfg.networkAuthz.Evaluate(policy.Input{Source: &policy.Source{Address: "100.101.1.7", Port: 5}})
	if !d.Allow {
		t.Errorf("tailnet peer denied: %+v", d)
	}
	d = cfg.networkAuthz.Evaluate(policy.Input{Source: &policy.Source{Address: "192.168.1.7", Port: 5}})
	if d.Allow {
		t.Errorf("LAN peer allowed: %+v", d)
	}
}

func TestSimplifiedMCPBlock(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("simple.yaml", []byte(`
mcp:
  targets:
  - name: everything
    stdio:
      cmd: npx
      args: ["@modelcontextprotocol/server-everything"]
`), newEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p := s.Ports(); len(p) != 1 || p[0] != 3000 {
		t.Errorf("ports %v, want [3000]", p)
	}
}

// Each bad config must produce exactly the error that points at the
// problem: file, line, YAML path and what is wrong.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	const route = `
binds:
- port: 3000
  listeners:
  - routes:
    - backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: demo}
`
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"typo with suggestion", strings.Replace(route, "  - routes:", "  - protocl: HTTP\n    routes:", 1),
			[]string{`bad.yaml:5: binds[0].listeners[0].protocl: unknown field (did you mean "protocol"?)`}},
		{"wrong type", strings.Replace(route, "port: 3000", "port: three", 1),
			[]string{`bad.yaml:3: binds[0].port: expected an integer, got string "three"`}},
		{"not supported yet", strings.Replace(route, "    - backends:", "    - policies:\n        jwtAuth: {issuer: x}\n      backends:", 1),
			[]string{`bad.yaml:7: binds[0].listeners[0].routes[0].policies.jwtAuth: not supported yet`}},
		{"agentgateway top-level key", route + "gateways: {}\n",
			[]string{`bad.yaml:11: gateways: not supported yet`}},
		{"bad rule", "frontendPolicies:\n  networkAuthorization:\n    rules:\n    - 'true'\n    - allow: 'source.adress == \"x\"'\n" + route,
			[]string{`bad.yaml:5: frontendPolicies.networkAuthorization.rules[1]: undefined field 'adress'`}},
		{"rule not bool", "frontendPolicies:\n  networkAuthorization:\n    rules:\n    - deny: 'source.port'\n" + route,
			[]string{`bad.yaml:4: frontendPolicies.networkAuthorization.rules[0]: expression has type int, want bool`}},
		{"rule kind", "frontendPolicies:\n  networkAuthorization:\n    rules:\n    - permit: 'true'\n" + route,
			[]string{`bad.yaml:4: frontendPolicies.networkAuthorization.rules[0].permit: unknown rule kind`}},
		{"every error reported", strings.Replace(strings.Replace(route, "port: 3000", "port: 70000", 1), "cmd: demo", "cmd: ''", 1),
			[]string{`bad.yaml:3: binds[0].port: port 70000 out of range`, `bad.yaml:10: binds[0].listeners[0].routes[0].backends[0].mcp.targets[0].stdio.cmd: a stdio target needs cmd`}},
		{"nothing to serve", "tailscale: {hostname: gw}\n",
			[]string{`bad.yaml:1: nothing to serve`}},
		{"empty", "", []string{`bad.yaml: empty config`}},
		{"syntax", "binds: [\n", []string{`bad.yaml:1: YAML syntax`}},
		{"tcp", strings.Replace(route, "  - routes:", "  - protocol: TCP\n    routes:", 1),
			[]string{`bad.yaml:5: binds[0].listeners[0].protocol: protocol TCP is not supported yet`}},
		{"service needs tags", "tailscale: {service: 'svc:mcp'}\n" + route,
			[]string{`bad.yaml:1: tailscale.service: a Service host must be a tagged node`}},
		{"admin addr", "config: {adminAddr: 'localhost'}\n" + route,
			[]string{`bad.yaml:1: config.adminAddr: "localhost" is not host:port`}},
		{"mem store needs ephemeral", "tailscale: {stateStore: mem}\n" + route,
			[]string{`bad.yaml:1: tailscale.stateStore: mem keeps no node keys, so it needs ephemeral: true`}},
		{"bad tag", "tailscale:\n  advertiseTags: [ci]\n" + route,
			[]string{`bad.yaml:2: tailscale.advertiseTags[0]: "ci" is not a tag`}},
		{"host backend", strings.Replace(route, "      - mcp:", "      - host: localhost:8080\n        mcp:", 1),
			[]string{`bad.yaml:7: binds[0].listeners[0].routes[0].backends[0].host: not supported yet`}},
		{"duplicate key", strings.Replace(route, "port: 3000", "port: 3000\n  port: 3001", 1),
			[]string{`bad.yaml:4: binds[0].port: duplicate key`}},
		{"target name with underscore", strings.Replace(route, "name: demo", "name: my_demo", 1),
			[]string{`bad.yaml:9: binds[0].listeners[0].routes[0].backends[0].mcp.targets[0].name: "my_demo": a target name`}},
		{"mcp rule typo", strings.Replace(route, "    - backends:", "    - policies:\n        mcpAuthorization:\n          rules:\n          - 'mcp.tool.nam == \"echo\"'\n      backends:", 1),
			[]string{`bad.yaml:9: binds[0].listeners[0].routes[0].policies.mcpAuthorization.rules[0]: undefined field 'nam'`}},
		{"http rule cannot see mcp", strings.Replace(route, "    - backends:", "    - policies:\n        authorization:\n          rules:\n          - deny: 'mcp.tool.name == \"echo\"'\n      backends:", 1),
			[]string{`bad.yaml:9: binds[0].listeners[0].routes[0].policies.authorization.rules[0]: undeclared reference to 'mcp'`}},
		{"backend rule path", strings.Replace(route, "            stdio: {cmd: demo}", "            stdio: {cmd: demo}\n        policies:\n          mcpAuthorization:\n            rules: ['source.tailscale.user.logn == \"a\"']", 1),
			[]string{`bad.yaml:13: binds[0].listeners[0].routes[0].backends[0].policies.mcpAuthorization.rules[0]: undefined field 'logn'`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(tt.yaml), newEnv(t))
			var errs ConfigErrors
			if !errors.As(err, &errs) {
				t.Fatalf("got %v, want ConfigErrors", err)
			}
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(tt.want), err)
			}
			for i, want := range tt.want {
				if !strings.HasPrefix(errs[i].Error(), want) {
					t.Errorf("error %d:\n got %s\nwant %s…", i, errs[i], want)
				}
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), newEnv(t))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v", err)
	}
}

// A relative cmd is resolved against the config file's folder, a name is
// left to PATH; HostWarnings names each program that is not there and an
// auth key file that cannot be read, and a stdio.user that does not
// exist, at its line.
func TestCommandsAndHostWarnings(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "configs"), 0o755)
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "bin", "server"), []byte("#!/bin/sh\n"), 0o755)
	file := filepath.Join(dir, "configs", "team.yaml")
	yaml := `tailscale:
  authKeyFile: ` + filepath.Join(dir, "no-key") + `
mcp:
  targets:
  - name: local
    stdio: {cmd: ../bin/server}
  - name: missing
    stdio: {cmd: ../bin/missing}
  - name: path
    stdio: {cmd: sh}
  - name: nowhere
    stdio: {cmd: no-such-program-tailgate}
  - name: stranger
    stdio: {cmd: sh, user: no-such-user-tailgate}
`
	os.WriteFile(file, []byte(yaml), 0o600)
	cfg, err := Load(file, newEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tgt := range cfg.MCP.Targets {
		got = append(got, tgt.Stdio.Command())
	}
	want := []string{filepath.Join(dir, "bin", "server"), filepath.Join(dir, "bin", "missing"), "sh", "no-such-program-tailgate", "sh"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("commands %q, want %q", got, want)
	}
	var warnings []string
	for _, w := range cfg.HostWarnings() {
		warnings = append(warnings, w.Error())
	}
	wantW := []string{
		file + ":8: mcp.targets[1].stdio.cmd: " + filepath.Join(dir, "bin", "missing") + ": no such file or directory",
		file + ":12: mcp.targets[3].stdio.cmd: no-such-program-tailgate: not found in PATH",
		file + ":14: mcp.targets[4].stdio.user: stdio.user \"no-such-user-tailgate\": user: unknown user no-such-user-tailgate",
		file + ":2: tailscale.authKeyFile: cannot read the auth key: no such file or directory",
	}
	if strings.Join(warnings, "\n") != strings.Join(wantW, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(warnings, "\n"), strings.Join(wantW, "\n"))
	}
}

// A top-level named backend (agentgateway's `backends`) serves every route
// that names it, "name" or "/name", with its own mcpAuthorization unless
// the reference sets one (which is warned about); other policies of the
// reference do not drop it.
func TestNamedBackend(t *testing.T) {
	t.Parallel()
	_, base := serveLoopback(t, `
binds:
- port: 3000
  listeners:
  - routes:
    - name: a
      matches: [{path: {exact: /a}}]
      backends:
      - backend: shared
    - name: b
      matches: [{path: {exact: /b}}]
      backends:
      - backend: /shared
        policies:
          mcpAuthorization:
            rules: ['true']
    - name: c
      matches: [{path: {exact: /c}}]
      backends:
      - backend: shared
        policies: {}
backends:
- name: shared
  mcp:
    targets:
    - name: demo
      stdio: {cmd: DEMO}
  policies:
    mcpAuthorization:
      rules: ['mcp.tool.name != "env"']
`)
	for _, tc := range []struct {
		path    string
		wantEnv bool
	}{{"/a", false}, {"/b", true}, {"/c", false}} {
		cs := connect(t, base+tc.path)
		res, err := cs.ListTools(context.Background(), nil)
		cs.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		hasEnv := slices.ContainsFunc(res.Tools, func(tool *mcp.Tool) bool { return tool.Name == "env" })
		if len(res.Tools) == 0 || hasEnv != tc.wantEnv {
			t.Errorf("%s: %d tools, env listed %v, want %v", tc.path, len(res.Tools), hasEnv, tc.wantEnv)
		}
	}
}

// --validate-only checks the secret sources targets name, with the line
// that names each: a file every caller shares must be there, a variable
// must be set, a per-caller file's folder must exist.
func TestCheckSecrets(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "shared"), []byte("s3cret-shared-0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "github"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TAILGATE_TEST_SET", "x")
	yaml := `binds:
- port: 3000
  listeners:
  - routes:
    - backends:
      - mcp:
          targets:
          - name: gh
            stdio:
              cmd: demo-server
              callerEnv:
                OK_SHARED: {file: "` + dir + `/shared"}
                OK_PER_CALLER: {file: "` + dir + `/github/{login}"}
                OK_ENV: {env: TAILGATE_TEST_SET}
                MISSING_SHARED: {file: "` + dir + `/absent"}
                MISSING_FOLDER: {file: "` + dir + `/nowhere/{login}"}
                MISSING_ENV: {env: TAILGATE_TEST_UNSET}
`
	cfg, err := Parse("team.yaml", []byte(yaml), newEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	errs := cfg.CheckSecrets(context.Background())
	got := errs.Error()
	for _, want := range []string{
		"team.yaml:17: binds[0].listeners[0].routes[0].backends[0].mcp.targets[0].stdio.callerEnv.MISSING_ENV:",
		"team.yaml:16: binds[0].listeners[0].routes[0].backends[0].mcp.targets[0].stdio.callerEnv.MISSING_FOLDER:",
		"team.yaml:15: binds[0].listeners[0].routes[0].backends[0].mcp.targets[0].stdio.callerEnv.MISSING_SHARED:",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("errors lack %q:\n%s", want, got)
		}
	}
	if len(errs) != 3 || strings.Contains(got, "OK_") || strings.Contains(got, "s3cret") {
		t.Errorf("want exactly the three missing sources, and no value:\n%s", got)
	}
}
