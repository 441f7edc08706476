package secrets

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tailgate-dev/tailgate/tsnode"
)

// Template variables a Ref may mention, each written in braces.
const (
	// VarLogin is the caller's login name (tsnode.Identity.UserLogin),
	// e.g. alice@example.com. A tagged caller has none of its own.
	VarLogin = "login"
	// VarUser is the login's local part, before the '@': alice. A tagged
	// caller has none of its own.
	VarUser = "user"
	// VarNode is the first DNS label of the caller's MagicDNS name:
	// laptop for laptop.tail1234.ts.net.
	VarNode = "node"
	// VarNodeID is the caller's stable node ID, which the control server
	// never gives to another node.
	VarNodeID = "nodeID"
)

// knownVars lists the template variables in the order error messages
// name them.
var knownVars = []string{VarLogin, VarUser, VarNode, VarNodeID}

// taggedLogin is the login Tailscale and headscale give every tagged
// node: all of them share it, so it names no one.
const taggedLogin = "tagged-devices"

// KnownVars returns the names of the template variables a Ref may
// mention, without braces: login, user, node, nodeID. Documentation and
// error messages list them from here.
func KnownVars() []string {
	return append([]string(nil), knownVars...)
}

// knownVarList is the variables as an error message lists them.
func knownVarList() string {
	braced := make([]string, len(knownVars))
	for i, v := range knownVars {
		braced[i] = "{" + v + "}"
	}
	return strings.Join(braced, ", ")
}

// part is one piece of a parsed template: literal text, or (when isVar)
// the name of a variable.
type part struct {
	text  string
	isVar bool
}

// template is a parsed Ref template.
type template []part

// parseTemplate splits s into literal text and {variable} parts. Braces
// are reserved for variables: a '{' must be closed by a '}' before the
// next '{', a '}' must close one, and the name between them must be a
// known variable. kind ("file", "env", "setec") only words errors.
func parseTemplate(kind, s string) (template, error) {
	if s == "" {
		return nil, fmt.Errorf("%s template is empty", kind)
	}
	if strings.ContainsRune(s, 0) {
		return nil, fmt.Errorf("%s template %q contains a NUL byte", kind, s)
	}
	var t template
	rest := s
	for rest != "" {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			t = append(t, part{text: rest})
			break
		}
		if rest[open] == '}' {
			return nil, fmt.Errorf("%s template %q: '}' without a '{' before it", kind, s)
		}
		if open > 0 {
			t = append(t, part{text: rest[:open]})
		}
		rest = rest[open+1:]
		end := strings.IndexAny(rest, "{}")
		if end < 0 || rest[end] == '{' {
			return nil, fmt.Errorf("%s template %q: '{' without a '}' to close it", kind, s)
		}
		name := rest[:end]
		if !isKnownVar(name) {
			if name == "" {
				return nil, fmt.Errorf("%s template %q: empty variable {}; known variables are %s", kind, s, knownVarList())
			}
			return nil, fmt.Errorf("%s template %q: unknown variable {%s}; known variables are %s", kind, s, name, knownVarList())
		}
		t = append(t, part{text: name, isVar: true})
		rest = rest[end+1:]
	}
	return t, nil
}

// isKnownVar reports whether name is a template variable.
func isKnownVar(name string) bool {
	for _, v := range knownVars {
		if v == name {
			return true
		}
	}
	return false
}

// vars returns the variables t mentions, each once, in order of first
// mention.
func (t template) vars() []string {
	var out []string
	for _, p := range t {
		if p.isVar && !contains(out, p.text) {
			out = append(out, p.text)
		}
	}
	return out
}

// contains reports whether list holds s.
func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// expand substitutes the caller's values into t. Every value is first
// checked by checkValue, so that it can only ever fill the place its
// variable holds (never add, remove or climb out of a path element);
// mapValue then turns it into what the source needs (identity for file
// and setec, an environment-name segment for env).
func (t template) expand(id *tsnode.Identity, mapValue func(string) string) (string, error) {
	var b strings.Builder
	for _, p := range t {
		if !p.isVar {
			b.WriteString(p.text)
			continue
		}
		v, err := varValue(p.text, id)
		if err != nil {
			return "", err
		}
		b.WriteString(mapValue(v))
	}
	return b.String(), nil
}

// varValue is the value of variable name for caller id, checked by
// checkValue. {login} and {user} refuse a tagged caller: every tagged
// node has the same login, so a secret named by it would be shared by
// all of them.
func varValue(name string, id *tsnode.Identity) (string, error) {
	if id == nil {
		return "", fmt.Errorf("{%s}: no caller identity (the caller did not come over the tailnet)", name)
	}
	var v string
	switch name {
	case VarLogin, VarUser:
		if isTagged(id) {
			return "", fmt.Errorf("{%s}: the caller %s is a tagged node, and all tagged nodes share the login %q; name a tagged caller's secret by {%s} or {%s}",
				name, describeCaller(id), taggedLogin, VarNode, VarNodeID)
		}
		v = id.UserLogin
		if name == VarUser {
			v, _, _ = strings.Cut(v, "@")
		}
	case VarNode:
		v, _, _ = strings.Cut(id.NodeName, ".")
	case VarNodeID:
		v = id.NodeID
	default:
		// parseTemplate admits known variables only.
		return "", fmt.Errorf("unknown variable {%s}", name)
	}
	if err := checkValue(v); err != nil {
		return "", fmt.Errorf("{%s} of the caller %s: %w", name, describeCaller(id), err)
	}
	return v, nil
}

// isTagged reports whether id is a tagged node, which has no user of its
// own.
func isTagged(id *tsnode.Identity) bool {
	return len(id.Tags) > 0 || id.UserLogin == taggedLogin
}

// errBadValue is wrapped by every refusal of checkValue.
var errBadValue = errors.New("not usable in a secret's name")

// checkValue refuses a variable's value that could change the shape of
// the name it is put into: empty, "." or "..", or containing '/', '\\',
// a NUL or other control character, or invalid UTF-8. Such values do not
// come from a well-behaved control server; refusing them (rather than
// escaping them) keeps one caller from ever reaching another's secret or
// one outside the configured folder.
func checkValue(v string) error {
	switch v {
	case "":
		return fmt.Errorf("value is empty: %w", errBadValue)
	case ".", "..":
		return fmt.Errorf("value %q: %w", v, errBadValue)
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("value %q is not valid UTF-8: %w", v, errBadValue)
	}
	for _, r := range v {
		switch {
		case r == '/' || r == '\\':
			return fmt.Errorf("value %q contains %q: %w", v, r, errBadValue)
		case r == 0 || unicode.IsControl(r):
			return fmt.Errorf("value %q contains a control character: %w", v, errBadValue)
		}
	}
	return nil
}

// asIs is the value mapping of file and setec templates: values go in
// unchanged (checkValue has already refused any that could change the
// name's shape).
func asIs(v string) string { return v }

// envSegment maps a value to a segment of an environment variable name:
// ASCII letters upper-cased, ASCII digits kept, every other character
// (one per character, not per byte) replaced by '_'. So
// alice@example.com becomes ALICE_EXAMPLE_COM. Distinct values can map
// to the same segment (alice.x and alice-x both become ALICE_X).
func envSegment(v string) string {
	var b strings.Builder
	for _, r := range v {
		switch {
		case r >= 'a' && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// describeCaller names a caller for error messages: its login, or for a
// tagged node its node name and tags. It never holds a secret.
func describeCaller(id *tsnode.Identity) string {
	if id == nil {
		return "(no tailnet identity)"
	}
	if isTagged(id) {
		node := id.NodeName
		if node == "" {
			node = id.NodeID
		}
		if len(id.Tags) == 0 {
			return "node " + quoteIfNeeded(node)
		}
		return "node " + quoteIfNeeded(node) + " (" + quoteIfNeeded(strings.Join(id.Tags, ",")) + ")"
	}
	if id.UserLogin != "" {
		return quoteIfNeeded(id.UserLogin)
	}
	return "node " + quoteIfNeeded(id.NodeName)
}

// quoteIfNeeded returns s as is when it is plain printable text without
// spaces or quotes, else quoted, so that an odd login or name cannot
// make an error message or log line misleading.
func quoteIfNeeded(s string) string {
	if s == "" || !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if r == '"' || r == '\\' || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// EnvNames are the variables of environ (KEY=value entries, as
// os.Environ) that r could name for some caller: the variable itself for
// a fixed {env: X}, and every variable whose name fits the template for
// one that names the caller (GITHUB_TOKEN_{user} fits GITHUB_TOKEN_ALICE).
// None for a file or setec source. A gateway keeps them all from its
// children: a child must not inherit another caller's secret, nor the
// gateway's own.
func (r Ref) EnvNames(environ []string) []string {
	if r.Env == "" {
		return nil
	}
	t, err := parseTemplate(kindEnv, r.Env)
	if err != nil {
		return nil
	}
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if t.fits(name) {
			out = append(out, name)
		}
	}
	return out
}

// fits reports whether name is what t gives for some values of its
// variables (each at least one character).
func (t template) fits(name string) bool {
	if len(t) == 0 {
		return name == ""
	}
	p := t[0]
	if !p.isVar {
		rest, ok := strings.CutPrefix(name, p.text)
		return ok && t[1:].fits(rest)
	}
	for i := 1; i <= len(name); i++ {
		if t[1:].fits(name[i:]) {
			return true
		}
	}
	return false
}
