package policy

import (
	"errors"
	"strings"
	"testing"
)

// A key expression yields the string a limit counts a call under: the
// caller's login, a tag, a tool, or any mix of them; numbers, bools and
// lists are written as a string; an expression that cannot be evaluated
// (a peer that is no tailnet node) is an error, never an empty key.
func TestKeyExpressions(t *testing.T) {
	t.Parallel()
	env, err := NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	echo := &MCP{Method: "tools/call", Tool: Tool{Name: "echo", Target: "demo"}}
	tests := []struct {
		expr    string
		src     *Source
		mcp     *MCP
		want    string
		wantErr string
	}{
		{expr: `source.tailscale.user.login`, src: alice, want: "alice@example.com"},
		{expr: `source.tailscale.user.login + "/" + mcp.tool.name`, src: alice, mcp: echo, want: "alice@example.com/echo"},
		{expr: `source.tailscale.node.tags`, src: ci, want: "tag:ci"},
		{expr: `source.tailscale.node.tags`, src: alice, want: ""},
		{expr: `source.port`, src: alice, want: "51522"},
		{expr: `"tag:ci" in source.tailscale.node.tags`, src: ci, want: "true"},
		{expr: `source.tailscale.caps["example.com/cap/tailgate"][0].tools`, src: alice, want: "echo,add"},
		{expr: `mcp.tool.name`, src: stranger, want: ""},
		{expr: `source.address`, src: stranger, want: "192.168.1.20"},
		{expr: `int(source.address)`, src: stranger, wantErr: "int"},
		{expr: `source.tailscale.caps["example.com/cap/tailgate"][0]`, src: alice, wantErr: "want a string"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			x, err := env.CompileKey(ScopeMCP, "key", tt.expr)
			if err != nil {
				t.Fatal(err)
			}
			got, err := x.Key(Input{Source: tt.src, MCP: tt.mcp})
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("got %q, %v; want an error with %q", got, err, tt.wantErr)
				}
			case err != nil || got != tt.want:
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// A match expression says which calls a limit applies to.
func TestMatchExpressions(t *testing.T) {
	t.Parallel()
	env, err := NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	x, err := env.CompileMatch(ScopeMCP, "match", `mcp.method == "tools/call" && mcp.tool.name in ["echo", "add"]`)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		mcp  *MCP
		want bool
	}{
		{&MCP{Method: "tools/call", Tool: Tool{Name: "echo"}}, true},
		{&MCP{Method: "tools/call", Tool: Tool{Name: "env"}}, false},
		{&MCP{Method: "tools/list"}, false},
		{nil, false},
	} {
		if got, err := x.Match(Input{Source: alice, MCP: tt.mcp}); err != nil || got != tt.want {
			t.Errorf("%+v: got %v, %v; want %v", tt.mcp, got, err, tt.want)
		}
	}
	boom, err := env.CompileMatch(ScopeMCP, "match", `int(source.address) > 0`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := boom.Match(Input{Source: stranger}); err == nil {
		t.Error("an erroring match: no error")
	}
}

// Compile errors name the expression's path and say what is wrong; the
// variables an expression reads are known, so that the gateway builds
// only those inputs.
func TestExprCompile(t *testing.T) {
	t.Parallel()
	env, err := NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, expr string
		match      bool
		scope      Scope
		wantErr    string
	}{
		{name: "key of a map", expr: `source.tailscale.caps`, wantErr: "want a string"},
		{name: "key of a struct", expr: `source.tailscale.user`, wantErr: "want a string"},
		{name: "key syntax", expr: `source.tailscale.user.login +`, wantErr: "Syntax error"},
		{name: "key undeclared", expr: `jwt.sub`, wantErr: "undeclared reference to 'jwt'"},
		{name: "key mcp outside mcp scope", expr: `mcp.tool.name`, scope: ScopeHTTP, wantErr: "undeclared reference to 'mcp'"},
		{name: "match not bool", expr: `mcp.tool.name`, match: true, wantErr: "want bool"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			scope := tt.scope
			if scope == ScopeNetwork {
				scope = ScopeMCP
			}
			var err error
			if tt.match {
				_, err = env.CompileMatch(scope, "limits[0].match", tt.expr)
			} else {
				_, err = env.CompileKey(scope, "limits[0].key", tt.expr)
			}
			var re *RuleError
			if !errors.As(err, &re) || !strings.HasPrefix(re.Path, "limits[0].") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got %v, want a RuleError at limits[0] with %q", err, tt.wantErr)
			}
		})
	}
	x, err := env.CompileKey(ScopeMCP, "key", `source.tailscale.user.login + request.headers["x-team"]`)
	if err != nil {
		t.Fatal(err)
	}
	if !x.Reads("source") || !x.Reads("request") || x.Reads("mcp") || x.Path() != "key" {
		t.Errorf("reads %v, path %q", x.reads, x.Path())
	}
}
