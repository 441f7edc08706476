package policy

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func compile(t *testing.T, scope Scope, rules ...Rule) *RuleSet {
	t.Helper()
	env, err := NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	for i := range rules {
		rules[i].Path = fmt.Sprintf("rules[%d]", i)
	}
	rs, err := env.Compile(scope, "rules", rules)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

var alice = &Source{
	Address: "100.64.0.7",
	Port:    51522,
	Tailscale: &Tailscale{
		Node: Node{Name: "laptop.tail1234.ts.net", Hostname: "laptop", ID: "nX1", OS: "linux"},
		User: User{Login: "alice@example.com", DisplayName: "Alice"},
		Caps: NewCaps(map[string][]any{
			"example.com/cap/tailgate": {map[string]any{"tools": []any{"echo", "add"}}},
		}),
	},
}

var ci = &Source{
	Address: "100.64.0.9",
	Port:    40000,
	Tailscale: &Tailscale{
		Node: Node{Name: "runner.tail1234.ts.net", Hostname: "runner", Tags: []string{"tag:ci"}},
		User: User{Login: "tagged-devices"},
	},
}

// stranger is a peer that is not a tailnet node (host mode).
var stranger = &Source{Address: "192.168.1.20", Port: 3333}

func TestRuleSemantics(t *testing.T) {
	t.Parallel()
	const (
		yes     = `true`
		no      = `false`
		boom    = `int(source.address) > 0` // "192.168.1.20" is no int: an evaluation error
		inTS    = `cidr("100.64.0.0/10").containsIP(source.address)`
		isCI    = `'tag:ci' in source.tailscale.node.tags`
		isAlice = `source.tailscale.user.login == "alice@example.com"`
	)
	tests := []struct {
		name    string
		rules   []Rule
		src     *Source
		allow   bool
		rule    string
		kind    Kind
		wantErr bool
	}{
		{name: "no rules allows", src: stranger, allow: true},
		{name: "allow true", rules: []Rule{{Kind: Allow, Expr: yes}}, src: stranger, allow: true, rule: "rules[0]", kind: Allow},
		{name: "allow false denies", rules: []Rule{{Kind: Allow, Expr: no}}, src: stranger, allow: false, rule: "rules"},
		{name: "any allow true allows", rules: []Rule{{Kind: Allow, Expr: no}, {Kind: Allow, Expr: yes}}, src: stranger, allow: true, rule: "rules[1]", kind: Allow},
		{name: "deny true denies", rules: []Rule{{Kind: Deny, Expr: yes}}, src: stranger, allow: false, rule: "rules[0]", kind: Deny},
		{name: "deny false alone allows", rules: []Rule{{Kind: Deny, Expr: no}}, src: stranger, allow: true, rule: "rules"},
		{name: "deny beats allow", rules: []Rule{{Kind: Allow, Expr: yes}, {Kind: Deny, Expr: yes}}, src: stranger, allow: false, rule: "rules[1]", kind: Deny},
		{name: "require true alone allows", rules: []Rule{{Kind: Require, Expr: yes}}, src: stranger, allow: true, rule: "rules"},
		{name: "require false denies", rules: []Rule{{Kind: Require, Expr: no}}, src: stranger, allow: false, rule: "rules[0]", kind: Require},
		{name: "require false beats allow", rules: []Rule{{Kind: Allow, Expr: yes}, {Kind: Require, Expr: no}}, src: stranger, allow: false, rule: "rules[1]", kind: Require},
		{name: "require true and allow false denies", rules: []Rule{{Kind: Require, Expr: yes}, {Kind: Allow, Expr: no}}, src: stranger, allow: false, rule: "rules"},
		{name: "erroring allow denies", rules: []Rule{{Kind: Allow, Expr: boom}, {Kind: Allow, Expr: yes}}, src: stranger, allow: false, rule: "rules[0]", kind: Allow, wantErr: true},
		{name: "erroring deny denies", rules: []Rule{{Kind: Deny, Expr: boom}}, src: stranger, allow: false, rule: "rules[0]", kind: Deny, wantErr: true},
		{name: "erroring require denies", rules: []Rule{{Kind: Require, Expr: boom}}, src: stranger, allow: false, rule: "rules[0]", kind: Require, wantErr: true},
		{name: "seed cidr rule admits tailnet peer", rules: []Rule{{Kind: Allow, Expr: inTS}}, src: alice, allow: true, rule: "rules[0]", kind: Allow},
		{name: "seed cidr rule refuses LAN peer", rules: []Rule{{Kind: Allow, Expr: inTS}}, src: stranger, allow: false, rule: "rules"},
		{name: "tag rule admits ci", rules: []Rule{{Kind: Allow, Expr: isCI + " || " + isAlice}}, src: ci, allow: true, rule: "rules[0]", kind: Allow},
		{name: "user rule admits alice", rules: []Rule{{Kind: Allow, Expr: isCI + " || " + isAlice}}, src: alice, allow: true, rule: "rules[0]", kind: Allow},
		{name: "has() guards non-tailnet peers", rules: []Rule{{Kind: Deny, Expr: `!has(source.tailscale)`}}, src: stranger, allow: false, rule: "rules[0]", kind: Deny},
		{name: "has() true for tailnet peers", rules: []Rule{{Kind: Require, Expr: `has(source.tailscale)`}}, src: ci, allow: true, rule: "rules"},
		{name: "port and strings ext", rules: []Rule{{Kind: Allow, Expr: `source.port > 1024 && source.tailscale.node.name.endsWith(".ts.net") && source.tailscale.user.login.split("@")[1] == "example.com"`}}, src: alice, allow: true, rule: "rules[0]", kind: Allow},
		{name: "caps grant", rules: []Rule{{Kind: Allow, Expr: `"example.com/cap/tailgate" in source.tailscale.caps && source.tailscale.caps["example.com/cap/tailgate"].exists(c, "echo" in c.tools)`}}, src: alice, allow: true, rule: "rules[0]", kind: Allow},
		{name: "caps absent", rules: []Rule{{Kind: Allow, Expr: `"example.com/cap/tailgate" in source.tailscale.caps`}}, src: ci, allow: false, rule: "rules"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := compile(t, ScopeNetwork, tt.rules...)
			d := rs.Evaluate(Input{Source: tt.src})
			if d.Allow != tt.allow || d.Rule != tt.rule || d.Kind != tt.kind || (d.Err != nil) != tt.wantErr {
				t.Errorf("got %+v (%s), want allow=%v rule=%q kind=%q err=%v", d, d.Reason(), tt.allow, tt.rule, tt.kind, tt.wantErr)
			}
		})
	}
}

func TestMCPScope(t *testing.T) {
	t.Parallel()
	rs := compile(t, ScopeMCP,
		Rule{Kind: Allow, Expr: `mcp.tool.name == "echo"`},
		Rule{Kind: Allow, Expr: `mcp.prompt.name == "greet" && request.headers["x-team"] == "eng"`},
	)
	tests := []struct {
		in    Input
		allow bool
	}{
		{Input{Source: alice, MCP: &MCP{Method: "tools/call", Tool: Tool{Name: "echo"}}}, true},
		{Input{Source: alice, MCP: &MCP{Method: "tools/call", Tool: Tool{Name: "add"}}}, false},
		{Input{Source: alice, MCP: &MCP{Method: "prompts/get", Prompt: Prompt{Name: "greet"}}, Request: &Request{Headers: map[string]string{"x-team": "eng"}}}, true},
		// A missing header is an error (no such key), which denies.
		{Input{Source: alice, MCP: &MCP{Method: "prompts/get", Prompt: Prompt{Name: "greet"}}}, false},
	}
	for i, tt := range tests {
		if d := rs.Evaluate(tt.in); d.Allow != tt.allow {
			t.Errorf("case %d: got %+v, want allow=%v", i, d, tt.allow)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	env, err := NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		scope Scope
		expr  string
		want  string
	}{
		{ScopeNetwork, `source.tailscale.user.logn == "a"`, "undefined field 'logn'"},
		{ScopeNetwork, `request.path == "/mcp"`, "undeclared reference to 'request'"},
		{ScopeHTTP, `mcp.tool.name == "x"`, "undeclared reference to 'mcp'"},
		{ScopeMCP, `jwt.sub == "test-user"`, "undeclared reference to 'jwt': tailgate has no JWT authentication (jwtAuth): callers are known by their tailnet identity"},
		{ScopeNetwork, `source.port`, "want bool"},
		{ScopeNetwork, `cidr("100.64.0.0/10").containsIP(`, "Syntax error"},
		{ScopeNetwork, `source.port == "80"`, "no matching overload"},
	}
	for _, tt := range tests {
		_, err := env.Compile(tt.scope, "r", []Rule{
			{Kind: Allow, Expr: `true`, Path: "r[0]"},
			{Kind: Allow, Expr: tt.expr, Path: "r[1]"},
		})
		var re *RuleError
		if !errors.As(err, &re) || re.Path != "r[1]" || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want a RuleError at r[1] containing %q", tt.expr, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error spans lines: %q", tt.expr, err)
		}
	}
}
