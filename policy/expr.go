package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/google/cel-go/cel"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
)

// Expr is one compiled CEL expression that is not a rule: it yields a
// value the gateway uses rather than a decision, such as the key a limit
// counts a call under (source.tailscale.user.login + "/" + mcp.tool.name)
// or the condition that says which calls a limit applies to. It is
// compiled once, at load, and safe for concurrent use.
type Expr struct {
	path string
	prg  cel.Program
	// reads are the variables (source, request, mcp) it names, so that
	// the gateway builds only the inputs an expression reads.
	reads []string
}

// CompileKey compiles expr for scope as a key: its value must be a
// string, or a number, a bool or a list of them (source.tailscale.node.tags),
// which Key turns into a string. A dyn value (a grant's capability) is
// checked when it is evaluated. path names the expression in errors, which
// are *RuleError.
func (e *Env) CompileKey(scope Scope, path, expr string) (*Expr, error) {
	return e.compileExpr(scope, path, expr, func(t *cel.Type) error {
		if keyType(t, true) {
			return nil
		}
		return fmt.Errorf("expression has type %s, want a string (or a number, a bool or a list of them)", t)
	})
}

// CompileMatch compiles expr for scope as a condition: its value must be
// a bool. path names the expression in errors, which are *RuleError.
func (e *Env) CompileMatch(scope Scope, path, expr string) (*Expr, error) {
	return e.compileExpr(scope, path, expr, func(t *cel.Type) error {
		if t.IsAssignableType(cel.BoolType) {
			return nil
		}
		return fmt.Errorf("expression has type %s, want bool", t)
	})
}

// compileExpr compiles and type-checks expr, check judging its type.
func (e *Env) compileExpr(scope Scope, path, expr string, check func(*cel.Type) error) (*Expr, error) {
	env, ok := e.envs[scope]
	if !ok {
		return nil, fmt.Errorf("policy: unknown scope %v", scope)
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, &RuleError{path, celError(iss.Err())}
	}
	if err := check(ast.OutputType()); err != nil {
		return nil, &RuleError{path, err}
	}
	prg, err := env.Program(ast, cel.CostLimit(costLimit))
	if err != nil {
		return nil, &RuleError{path, err}
	}
	return &Expr{path: path, prg: prg, reads: variablesOf(ast)}, nil
}

// keyType reports whether a key may have type t: a scalar, dyn, or (when
// list is true) a list of those.
func keyType(t *cel.Type, list bool) bool {
	switch t.Kind() {
	case types.StringKind, types.IntKind, types.UintKind, types.DoubleKind, types.BoolKind, types.DynKind:
		return true
	case types.ListKind:
		return list && len(t.Parameters()) == 1 && keyType(t.Parameters()[0], false)
	}
	return false
}

// variablesOf are the top-level variables a checked expression names.
func variablesOf(ast *cel.Ast) []string {
	var names []string
	celast.MatchDescendants(celast.NavigateAST(ast.NativeRep()), func(e celast.NavigableExpr) bool {
		if e.Kind() == celast.IdentKind && !slices.Contains(names, e.AsIdent()) {
			names = append(names, e.AsIdent())
		}
		return false
	})
	return names
}

// Path is the expression's name in the config
// ("binds[0].listeners[0].routes[0].policies.localRateLimit[0].key").
func (x *Expr) Path() string { return x.path }

// Reads reports whether the expression names variable ("source",
// "request" or "mcp"): an input it does not read need not be built.
func (x *Expr) Reads(variable string) bool {
	return slices.Contains(x.reads, variable)
}

// Key evaluates a key expression for in: a string as it is, a number or
// bool as written in CEL, a list as its elements joined with ",".
func (x *Expr) Key(in Input) (string, error) {
	out, err := x.eval(in)
	if err != nil {
		return "", err
	}
	return keyString(out, true)
}

// keyString is a key's value as a string.
func keyString(v ref.Val, list bool) (string, error) {
	switch v := v.(type) {
	case types.String:
		return string(v), nil
	case types.Int:
		return strconv.FormatInt(int64(v), 10), nil
	case types.Uint:
		return strconv.FormatUint(uint64(v), 10), nil
	case types.Double:
		return strconv.FormatFloat(float64(v), 'g', -1, 64), nil
	case types.Bool:
		return strconv.FormatBool(bool(v)), nil
	case traits.Lister:
		if !list {
			break
		}
		var parts []string
		for it := v.Iterator(); it.HasNext() == types.True; {
			s, err := keyString(it.Next(), false)
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("key has type %s, want a string", v.Type().TypeName())
}

// Match evaluates a condition for in.
func (x *Expr) Match(in Input) (bool, error) {
	out, err := x.eval(in)
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("expression returned %s, want bool", out.Type())
	}
	return b, nil
}

// eval runs the expression against in.
func (x *Expr) eval(in Input) (ref.Val, error) {
	out, _, err := x.prg.Eval(in.activation())
	if err != nil {
		return nil, err
	}
	if types.IsError(out) {
		return nil, fmt.Errorf("%v", out)
	}
	return out, nil
}
