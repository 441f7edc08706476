package gateway

import (
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/tailgate-dev/tailgate/policy"
)

// This file holds a route's policies.localRateLimit as the config writes
// it, its checks and the compiling of its CEL expressions; limits.go
// applies it to calls.

// RateLimit is one entry of a route's policies.localRateLimit:
// agentgateway's token bucket (maxTokens, refilled with tokensPerFill
// every fillInterval; each request takes one token), with tailgate's
// extensions: key, a CEL expression whose value names the bucket a call
// counts against (source.tailscale.user.login: one bucket per person);
// match, a CEL condition saying which calls the limit applies to; and
// concurrency, a cap on the calls of one key in flight at once.
type RateLimit struct {
	MaxTokens     int      `yaml:"maxTokens" json:"maxTokens,omitempty"`
	TokensPerFill int      `yaml:"tokensPerFill" json:"tokensPerFill,omitempty"`
	FillInterval  Duration `yaml:"fillInterval" json:"fillInterval,omitempty"`
	// Type is what a token stands for: "requests" (the default), one MCP
	// request. agentgateway's "tokens" (an LLM's) has no meaning for MCP.
	Type string `yaml:"type" json:"type,omitempty"`
	// Key is a CEL expression (mcp scope) naming the caller's bucket; none:
	// one bucket for the whole route, as agentgateway's.
	Key string `yaml:"key" json:"key,omitempty"`
	// Match is a CEL condition (mcp scope): the limit applies to the calls
	// for which it is true; none: every request of the route.
	Match string `yaml:"match" json:"match,omitempty"`
	// Concurrency caps the requests of one key in flight at once; 0: no
	// cap.
	Concurrency int `yaml:"concurrency" json:"concurrency,omitempty"`

	// key and match are Key and Match compiled; path is the limit's
	// config path.
	key, match *policy.Expr
	path       string
}

// compileLimits checks and compiles the limits of a route's policies at
// keys (YAML path) and path (its name in messages), reporting each
// problem at its line.
func (d *decoder) compileLimits(doc *yaml.Node, env *policy.Env, keys []any, path string, rp *RoutePolicies) {
	if rp == nil {
		return
	}
	keys = append(keys[:len(keys):len(keys)], "policies", "localRateLimit")
	for i := range rp.LocalRateLimit {
		l := &rp.LocalRateLimit[i]
		lkeys := append(keys[:len(keys):len(keys)], i)
		lpath := fmt.Sprintf("%s.policies.localRateLimit[%d]", path, i)
		field := func(name string) (*yaml.Node, string) {
			return at(doc, append(lkeys[:len(lkeys):len(lkeys)], name)...), lpath + "." + name
		}
		l.path = lpath
		d.checkLimit(l, doc, lkeys, lpath, field)
		if l.Key != "" {
			n, p := field("key")
			l.key = d.compileExpr(n, p, func() (*policy.Expr, error) { return env.CompileKey(policy.ScopeMCP, p, l.Key) })
		}
		if l.Match != "" {
			n, p := field("match")
			l.match = d.compileExpr(n, p, func() (*policy.Expr, error) { return env.CompileMatch(policy.ScopeMCP, p, l.Match) })
		}
	}
}

// checkLimit checks one limit's numbers: a bucket (maxTokens with a
// fillInterval) or a concurrency cap, or both; nothing negative.
func (d *decoder) checkLimit(l *RateLimit, doc *yaml.Node, lkeys []any, lpath string, field func(string) (*yaml.Node, string)) {
	for _, f := range []struct {
		name string
		v    int64
	}{{"maxTokens", int64(l.MaxTokens)}, {"tokensPerFill", int64(l.TokensPerFill)}, {"fillInterval", int64(l.FillInterval)}, {"concurrency", int64(l.Concurrency)}} {
		if f.v < 0 {
			n, p := field(f.name)
			d.errorf(n, p, "must not be negative")
		}
	}
	switch l.Type {
	case "", "requests":
	case "tokens":
		n, p := field("type")
		d.errorf(n, p, `"tokens" counts an LLM's tokens, which MCP calls do not have: tailgate counts requests (type: requests)`)
	default:
		n, p := field("type")
		d.errorf(n, p, "unknown type %q (want requests)", l.Type)
	}
	switch {
	case l.MaxTokens == 0 && (l.TokensPerFill != 0 || l.FillInterval != 0):
		n, p := field("maxTokens")
		d.errorf(n, p, "tokensPerFill and fillInterval refill a bucket of maxTokens, which is not set")
	case l.MaxTokens == 0 && l.Concurrency == 0:
		d.errorf(at(doc, lkeys...), lpath, "a limit needs maxTokens (with tokensPerFill and fillInterval), concurrency, or both")
	case l.MaxTokens > 0 && l.FillInterval <= 0:
		n, p := field("fillInterval")
		d.errorf(n, p, `maxTokens needs a fillInterval such as "60s": how often tokensPerFill tokens come back`)
	}
}

// compileExpr runs compile, reporting its error at n (or the line of the
// expression, for a *policy.RuleError) under path.
func (d *decoder) compileExpr(n *yaml.Node, path string, compile func() (*policy.Expr, error)) *policy.Expr {
	x, err := compile()
	if err != nil {
		msg := err.Error()
		if re, ok := err.(*policy.RuleError); ok {
			msg = re.Err.Error()
		}
		d.errorf(n, path, "%s", msg)
		return nil
	}
	return x
}
