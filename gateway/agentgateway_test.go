package gateway

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// agentgatewayConfigs are agentgateway's own configs with an MCP backend,
// copied verbatim into testdata/agentgateway (each file's first line names
// its source and commit, so its line numbers are one more than upstream's):
// examples/*/config*.yaml and the MCP configs of its config-parsing tests
// (crates/agentgateway/src/types/local_tests), 16 in all as the README
// counts them, plus the repository's top-level modern.yaml, which has a
// remote mcp target. Those that load name their targets; the others are
// refused with exactly these errors, so that a config that starts or stops
// loading, or an error that changes, shows here.
var agentgatewayConfigs = []struct {
	file    string
	targets []string // of a config that loads
	errs    []string // of one that does not: each error, in order
	remote  []string // the URLs of its remote targets, which load on their own
}{
	{file: "mcp-basic.yaml", targets: []string{"everything"}},
	{file: "mcp-multiplex.yaml", targets: []string{"time", "everything"}},
	{file: "mcp-apps.yaml", targets: []string{"monitor"}},
	{file: "mcp-apps-multiplex.yaml", targets: []string{"map", "monitor"}},
	{file: "local_tests-mcp_simple_config.yaml", targets: []string{"time", "everything"}},
	{file: "local_tests-named_mcp_backend_config.yaml", targets: []string{"everything"}},
	{file: "mcp-authentication.yaml", errs: []string{
		"35: binds[0].listeners[0].routes[0].policies.mcpAuthentication" + notYet,
		"74: binds[0].listeners[0].routes[1].policies.mcpAuthentication" + notYet,
		"117: binds[0].listeners[0].routes[2].policies.mcpAuthentication" + notYet,
	}},
	{file: "mcp-authorization.yaml", errs: []string{
		"13: mcp.policies.backendAuth" + notYet,
		"15: mcp.policies.jwtAuth" + notYet,
		"26: mcp.policies.mcpAuthorization.rules[1]: undeclared reference to 'jwt'" + noJWT,
		"28: mcp.policies.mcpAuthorization.rules[2]: undeclared reference to 'jwt'" + noJWT,
	}, remote: []string{"http://localhost:3001/mcp"}},
	{file: "mcp-openapi.yaml", errs: []string{
		"11: binds[0].listeners[0].routes[0].backends[0].mcp.targets[0].openapi" + notYet,
	}},
	{file: "mcp-telemetry.yaml", errs: []string{
		"4: frontendPolicies.tracing" + notYet,
	}},
	{file: "mcp-telemetry-logging-otel.yaml", errs: []string{
		"6: frontendPolicies.tracing" + notYet,
		"9: frontendPolicies.accessLog" + notYet,
	}},
	{file: "mcp-tls.yaml", errs: []string{
		"8: binds[0].listeners[0].tls" + notYet,
	}},
	{file: "traffic-unified-gateway.yaml", errs: []string{
		"3: gateways" + notYet,
		"6: llm" + notYet,
		"50: ui" + notYet,
	}},
	{file: "local_tests-basic_config.yaml", errs: []string{
		"7: frontendPolicies.accessLog" + notYet,
	}},
	{file: "local_tests-mcp_config.yaml", errs: []string{
		"18: binds[0].listeners[0].routes[0].policies.mcpAuthorization.rules[1]: undeclared reference to 'jwt'" + noJWT,
		"20: binds[0].listeners[0].routes[0].policies.mcpAuthorization.rules[2]: undeclared reference to 'jwt'" + noJWT,
	}, remote: []string{"https://example.com:443/mcp"}},
	{file: "local_tests-mcp_to_aws_backend_config.yaml", errs: []string{
		"16: backends[0].mcp.targets[0].mcp.backend" + notYet,
		"19: backends[1].aws" + notYet,
		"23: backends[1].policies.backendAuth" + notYet,
	}},
	{file: "modern.yaml", errs: []string{
		"3: gateways" + notYet,
		"6: llm" + notYet,
		"23: mcp.gateways" + notYet,
		"29: ui" + notYet,
	}, remote: []string{"http://localhost:3001/mcp"}},
}

const (
	notYet = `: not supported yet by tailgate (agentgateway has it; remove it or see README "Not supported yet")`
	noJWT  = ": tailgate has no JWT authentication (jwtAuth): callers are known by their tailnet identity, source.tailscale.user.login, .node.tags, .grants"
)

// agentgateway's own example configs load as they are, or are refused
// naming exactly what tailgate does not have; six of the sixteen with an
// MCP backend load, as the README says.
func TestAgentgatewayExampleConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/agentgateway/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	loads := 0
	for _, tc := range agentgatewayConfigs {
		listed[tc.file] = true
		if tc.errs == nil {
			loads++
		}
		t.Run(strings.TrimSuffix(tc.file, ".yaml"), func(t *testing.T) {
			path := filepath.Join("testdata", "agentgateway", tc.file)
			cfg, err := Load(path, newEnv(t))
			if tc.errs == nil {
				if err != nil {
					t.Fatalf("does not load:\n%v", err)
				}
				if got := targetNames(cfg); !slices.Equal(got, tc.targets) {
					t.Errorf("targets %v, want %v", got, tc.targets)
				}
				s, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					t.Fatalf("loads, but New refuses it: %v", err)
				}
				if p := s.Ports(); !slices.Equal(p, []int{3000}) {
					t.Errorf("ports %v, want [3000]", p)
				}
				return
			}
			var errs ConfigErrors
			if !errors.As(err, &errs) {
				t.Fatalf("got %v, want ConfigErrors", err)
			}
			got := make([]string, len(errs))
			for i, e := range errs {
				got[i] = e.Error()
			}
			want := make([]string, len(tc.errs))
			for i, e := range tc.errs {
				want[i] = path + ":" + e
			}
			if !slices.Equal(got, want) {
				t.Errorf("errors:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
			}
			// None of the refusals is about a target tailgate has: an mcp
			// (or sse) target, as agentgateway writes it, loads.
			for _, e := range got {
				// (A target reached through another named backend is not.)
				if strings.Contains(e, ".targets[") && !strings.Contains(e, ".openapi") && !strings.Contains(e, ".mcp.backend:") {
					t.Errorf("a target is refused: %s", e)
				}
			}
		})
	}
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("%s is not in agentgatewayConfigs: say whether it loads", f)
		}
	}
	if loads != 6 {
		t.Errorf("%d of agentgateway's MCP configs load; the README says 6", loads)
	}
}

// The remote targets of agentgateway's configs that tailgate refuses for
// other reasons (JWT, named gateways) load on their own, in a route of
// tailgate's: the targets as written upstream, verbatim, with the URL they
// name.
func TestAgentgatewayRemoteTargets(t *testing.T) {
	for _, tc := range agentgatewayConfigs {
		if tc.remote == nil {
			continue
		}
		t.Run(strings.TrimSuffix(tc.file, ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "agentgateway", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			var doc yaml.Node
			if err := yaml.Unmarshal(data, &doc); err != nil {
				t.Fatal(err)
			}
			targets := findTargets(&doc)
			if targets == nil {
				t.Fatal("no targets in the file")
			}
			out, err := yaml.Marshal(map[string]any{"binds": []any{map[string]any{"port": 3000, "listeners": []any{map[string]any{
				"routes": []any{map[string]any{"backends": []any{map[string]any{"mcp": map[string]any{"targets": targets}}}}},
			}}}}})
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := Parse(tc.file, out, newEnv(t))
			if err != nil {
				t.Fatalf("its targets do not load:\n%v\n%s", err, out)
			}
			var urls []string
			for _, tg := range cfg.Binds[0].Listeners[0].Routes[0].Backends[0].MCP.Targets {
				if r, _ := tg.remote(); r != nil {
					urls = append(urls, r.URL())
				}
			}
			if !slices.Equal(urls, tc.remote) {
				t.Errorf("remote targets at %v, want %v", urls, tc.remote)
			}
			if _, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)}); err != nil {
				t.Errorf("New: %v", err)
			}
		})
	}
}

// findTargets is the first sequence under a "targets" key in n.
func findTargets(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "targets" && n.Content[i+1].Kind == yaml.SequenceNode {
				return n.Content[i+1]
			}
		}
	}
	for _, c := range n.Content {
		if found := findTargets(c); found != nil {
			return found
		}
	}
	return nil
}

// targetNames are the names of a config's MCP targets, in order.
func targetNames(cfg *Config) []string {
	var names []string
	for _, t := range configTargets(cfg) {
		names = append(names, t.t.Name)
	}
	return names
}
