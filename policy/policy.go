// Package policy compiles tailgate's CEL rules once and evaluates them per
// connection, request and MCP call. It does no I/O.
//
// Rules follow agentgateway's RuleSet: a rule is an allow, deny or require
// expression. With no rules everything is allowed; any deny that is true
// denies; any require that is not true denies; any allow that is true
// allows; allow rules present and none true denies. Unlike agentgateway, an
// expression that fails to evaluate denies, whatever its kind.
package policy

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
)

// Kind is the kind of a rule: allow, deny or require.
type Kind string

// The rule kinds of agentgateway's RuleSet.
const (
	Allow   Kind = "allow"
	Deny    Kind = "deny"
	Require Kind = "require"
)

// Scope is where a rule set applies. It decides which variables the rules
// may name: a connection has no request yet, and only MCP rules see mcp.
type Scope int

const (
	// ScopeNetwork is frontendPolicies.networkAuthorization: once per
	// accepted connection, with source only.
	ScopeNetwork Scope = iota
	// ScopeHTTP is a route's policies.authorization: once per HTTP request,
	// with source and request.
	ScopeHTTP
	// ScopeMCP is policies.mcpAuthorization: once per MCP call and per
	// listed item, with source, request and mcp.
	ScopeMCP
)

func (s Scope) String() string {
	switch s {
	case ScopeNetwork:
		return "network"
	case ScopeHTTP:
		return "http"
	case ScopeMCP:
		return "mcp"
	}
	return fmt.Sprintf("Scope(%d)", int(s))
}

// Rule is one rule as written in the config.
type Rule struct {
	Kind Kind
	Expr string
	// Path names the rule in the config, e.g.
	// "frontendPolicies.networkAuthorization.rules[1]". It is the name
	// decisions, logs and metrics use.
	Path string
}

// Decision is the outcome of evaluating a rule set, with the rule that
// decided it so that the log line, the metric label and a test can all name
// the same rule.
type Decision struct {
	Allow bool
	// Rule is the path of the deciding rule; for "no allow rule matched" it
	// is the rule set's path; it is empty when there are no rules.
	Rule string
	// Kind is the kind of the deciding rule; empty when no single rule
	// decided.
	Kind Kind
	// Err is set when the deciding rule failed to evaluate.
	Err error
}

// Reason is a short human text for logs.
func (d Decision) Reason() string {
	switch {
	case d.Err != nil:
		return "rule failed to evaluate: " + d.Err.Error()
	case d.Rule == "" && d.Allow:
		return "no rules"
	case d.Kind == Deny:
		return "deny rule matched"
	case d.Kind == Require:
		return "require rule not satisfied"
	case d.Kind == Allow:
		return "allow rule matched"
	case d.Allow:
		return "no allow rules"
	}
	return "no allow rule matched"
}

// Env holds the CEL environments, one per scope. It is safe for concurrent
// use; build one per process and compile every rule set with it.
type Env struct {
	envs map[Scope]*cel.Env
}

// NewEnv builds the CEL environments: the standard library, ext.Strings,
// ext.Network (cidr, ip) and the declared variables of each scope.
func NewEnv() (*Env, error) {
	e := &Env{envs: make(map[Scope]*cel.Env)}
	base := []cel.EnvOption{
		ext.Strings(),
		ext.Network(),
		ext.NativeTypes(
			reflect.TypeFor[Source](),
			reflect.TypeFor[Request](),
			reflect.TypeFor[MCP](),
			ext.ParseStructTags(true),
		),
		cel.Variable("source", cel.ObjectType("policy.Source")),
	}
	scopes := map[Scope][]cel.EnvOption{
		ScopeNetwork: nil,
		ScopeHTTP:    {cel.Variable("request", cel.ObjectType("policy.Request"))},
		ScopeMCP: {
			cel.Variable("request", cel.ObjectType("policy.Request")),
			cel.Variable("mcp", cel.ObjectType("policy.MCP")),
		},
	}
	for scope, opts := range scopes {
		env, err := cel.NewEnv(append(append([]cel.EnvOption{}, base...), opts...)...)
		if err != nil {
			return nil, fmt.Errorf("policy: %s environment: %w", scope, err)
		}
		e.envs[scope] = env
	}
	return e, nil
}

// costLimit bounds the work of one evaluation, so that a rule such as a
// quadratic comprehension over a large caps list cannot stall a connection.
const costLimit = 1_000_000

type compiled struct {
	Rule
	prg cel.Program
	// headers are the request headers the rule reads by name.
	headers []string
}

// RuleSet is a compiled list of rules. The zero value and nil allow
// everything.
type RuleSet struct {
	path     string
	rules    []compiled
	hasAllow bool
}

// RuleError is a rule that failed to compile or type-check.
type RuleError struct {
	Path string
	Err  error
}

func (e *RuleError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *RuleError) Unwrap() error { return e.Err }

// Compile compiles and type-checks rules for scope. path names the rule
// set ("frontendPolicies.networkAuthorization.rules"). Every failing rule
// is reported, each as a *RuleError, joined with errors.Join.
func (e *Env) Compile(scope Scope, path string, rules []Rule) (*RuleSet, error) {
	env, ok := e.envs[scope]
	if !ok {
		return nil, fmt.Errorf("policy: unknown scope %v", scope)
	}
	rs := &RuleSet{path: path}
	var errs []error
	for _, r := range rules {
		switch r.Kind {
		case Allow, Deny, Require:
		default:
			errs = append(errs, &RuleError{r.Path, fmt.Errorf("unknown rule kind %q (want allow, deny or require)", r.Kind)})
			continue
		}
		ast, iss := env.Compile(r.Expr)
		if iss.Err() != nil {
			errs = append(errs, &RuleError{r.Path, celError(iss.Err())})
			continue
		}
		if !ast.OutputType().IsAssignableType(cel.BoolType) {
			errs = append(errs, &RuleError{r.Path, fmt.Errorf("expression has type %s, want bool", ast.OutputType())})
			continue
		}
		prg, err := env.Program(ast, cel.CostLimit(costLimit))
		if err != nil {
			errs = append(errs, &RuleError{r.Path, err})
			continue
		}
		rs.rules = append(rs.rules, compiled{Rule: r, prg: prg, headers: headerNames(ast)})
		if r.Kind == Allow {
			rs.hasAllow = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return rs, nil
}

// celError reduces cel-go's multi-line issue text ("ERROR: <input>:1:8:
// undeclared reference to 'x'\n | ...\n | ..^") to its message; the config
// error around it already names the file, line and rule.
func celError(err error) error {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	msg = strings.TrimSuffix(msg, " (in container '')")
	if rest, ok := strings.CutPrefix(msg, "ERROR: <input>:"); ok {
		// Drop "line:column: ".
		if _, m, ok := strings.Cut(rest, ": "); ok {
			msg = m
		}
	}
	if hint, ok := agentgatewayOnly[strings.TrimPrefix(msg, "undeclared reference to ")]; ok {
		msg += ": " + hint
	}
	return errors.New(msg)
}

// agentgatewayOnly are variables of agentgateway's rules that tailgate's
// do not have, with what to use instead.
var agentgatewayOnly = map[string]string{
	"'jwt'":       "tailgate has no JWT authentication (jwtAuth): callers are known by their tailnet identity, source.tailscale.user.login, .node.tags, .grants",
	"'apiKey'":    "tailgate has no API key authentication: callers are known by their tailnet identity, source.tailscale",
	"'basicAuth'": "tailgate has no basic authentication: callers are known by their tailnet identity, source.tailscale",
}

// Len reports the number of rules.
func (rs *RuleSet) Len() int {
	if rs == nil {
		return 0
	}
	return len(rs.rules)
}

// Evaluate decides in for the rule set.
func (rs *RuleSet) Evaluate(in Input) Decision {
	if rs == nil || len(rs.rules) == 0 {
		return Decision{Allow: true}
	}
	act := in.activation()
	var allowed *compiled
	// Denies and requires first: a true deny or an unmet require wins over
	// any allow, and an erroring rule of any kind denies.
	for i := range rs.rules {
		r := &rs.rules[i]
		ok, err := r.eval(act)
		if err != nil {
			return Decision{Allow: false, Rule: r.Path, Kind: r.Kind, Err: err}
		}
		switch r.Kind {
		case Deny:
			if ok {
				return Decision{Allow: false, Rule: r.Path, Kind: Deny}
			}
		case Require:
			if !ok {
				return Decision{Allow: false, Rule: r.Path, Kind: Require}
			}
		case Allow:
			if ok && allowed == nil {
				allowed = r
			}
		}
	}
	if allowed != nil {
		return Decision{Allow: true, Rule: allowed.Path, Kind: Allow}
	}
	if rs.hasAllow {
		return Decision{Allow: false, Rule: rs.path}
	}
	return Decision{Allow: true, Rule: rs.path}
}

func (r *compiled) eval(act map[string]any) (bool, error) {
	out, _, err := r.prg.Eval(act)
	if err != nil {
		return false, err
	}
	if types.IsError(out) {
		return false, fmt.Errorf("%v", out)
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("expression returned %s, want bool", out.Type())
	}
	return b, nil
}
