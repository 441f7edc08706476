package policy

import (
	"slices"
	"strings"

	"github.com/google/cel-go/cel"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/types"
)

// HeaderNames are the request headers each rule of the set reads by name
// (request.headers["x-team"], "x-team" in request.headers, or a string a
// comprehension over request.headers compares keys with), lower-cased, by
// the rule's path. The gateway uses it to warn about headers that a client
// can set to anything.
func (rs *RuleSet) HeaderNames() map[string][]string {
	if rs == nil {
		return nil
	}
	out := make(map[string][]string)
	for _, r := range rs.rules {
		if len(r.headers) > 0 {
			out[r.Path] = r.headers
		}
	}
	return out
}

// headerNames finds the header names a checked expression reads.
func headerNames(ast *cel.Ast) []string {
	root := celast.NavigateAST(ast.NativeRep())
	var names []string
	add := func(e celast.Expr) {
		if e.Kind() != celast.LiteralKind {
			return
		}
		if s, ok := e.AsLiteral().(types.String); ok {
			name := strings.ToLower(string(s))
			if !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	other := false // headers read otherwise than by a constant name
	celast.MatchDescendants(root, func(e celast.NavigableExpr) bool {
		if !isRequestHeaders(e) {
			return false
		}
		parent, ok := e.Parent()
		if ok && parent.Kind() == celast.CallKind {
			call := parent.AsCall()
			args := call.Args()
			switch call.FunctionName() {
			case operators.Index, operators.OptIndex:
				if len(args) == 2 && args[0].ID() == e.ID() {
					add(args[1])
					return false
				}
			case operators.In, operators.OldIn:
				if len(args) == 2 && args[1].ID() == e.ID() {
					add(args[0])
					return false
				}
			}
		}
		other = true
		return false
	})
	if other {
		// Any string of the rule may be compared with a header name.
		celast.MatchDescendants(root, func(e celast.NavigableExpr) bool {
			add(e)
			return false
		})
	}
	return names
}

// isRequestHeaders matches the expression request.headers.
func isRequestHeaders(e celast.NavigableExpr) bool {
	if e.Kind() != celast.SelectKind {
		return false
	}
	sel := e.AsSelect()
	op := sel.Operand()
	return sel.FieldName() == "headers" && !sel.IsTestOnly() && op.Kind() == celast.IdentKind && op.AsIdent() == "request"
}
