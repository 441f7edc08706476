package policy

import (
	"testing"
)

// mcp.secrets answers, per name, whether the caller has the target's
// secret, looked up only when a rule reads it.
func TestSecrets(t *testing.T) {
	t.Parallel()
	has := map[string]bool{"GITHUB_TOKEN": true}
	for _, tc := range []struct {
		name, expr string
		allow      bool
		lookups    int
	}{
		{"index, has it", `mcp.secrets["GITHUB_TOKEN"]`, true, 1},
		{"index, lacks it", `mcp.secrets["DB_PASSWORD"]`, false, 1},
		{"in, has it", `"GITHUB_TOKEN" in mcp.secrets`, true, 1},
		{"in, lacks it", `"DB_PASSWORD" in mcp.secrets`, false, 1},
		{"not read, not looked up", `mcp.tool.name == "echo"`, true, 0},
		{"listing is an error, which denies", `size(mcp.secrets) > 0`, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rs := compile(t, ScopeMCP, Rule{Kind: Allow, Expr: tc.expr})
			lookups := 0
			in := Input{Source: alice, Request: &Request{}, MCP: &MCP{Method: "tools/call", Tool: Tool{Name: "echo", Target: "gh"},
				Secrets: NewSecrets(func(name string) bool { lookups++; return has[name] })}}
			if d := rs.Evaluate(in); d.Allow != tc.allow {
				t.Errorf("%s: allow %v, want %v (%v)", tc.expr, d.Allow, tc.allow, d.Err)
			}
			if lookups != tc.lookups {
				t.Errorf("%s: %d lookups, want %d", tc.expr, lookups, tc.lookups)
			}
		})
	}
}
