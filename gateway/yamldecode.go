package gateway

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// ConfigError is one problem in a config file, located by file, line and
// YAML path: "configs/team.yaml:14: binds[0].listeners[0].protocl: unknown
// field (did you mean "protocol"?)".
type ConfigError struct {
	File string
	Line int
	Path string
	Msg  string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(":")
	}
	if e.Line > 0 {
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteString(":")
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ConfigErrors is every problem found in a config file, in file order.
type ConfigErrors []*ConfigError

func (es ConfigErrors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// notSupported marks a key that agentgateway's config has and tailgate does
// not implement yet. Naming it is an error that says so, rather than the
// "unknown field" a typo gets, and never a silent no-op.
type notSupported struct{}

// yamlUnmarshaler is implemented by config types whose YAML shape is not a
// plain mapping, such as a rule that is either a string or {allow: ...}.
type yamlUnmarshaler interface {
	unmarshalYAML(d *decoder, n *yaml.Node, path string)
}

// decoder walks a yaml.Node tree into config structs, collecting every
// error with its path and line instead of stopping at the first.
type decoder struct {
	file string
	// dir is the config file's folder, absolute: relative commands are
	// resolved against it.
	dir string
	// commands are the stdio targets' programs and users their accounts,
	// for Config.HostWarnings.
	commands, users []hostRef
	// secrets are what the config names as secret (see Config.secrets).
	secrets childSecrets
	// setec says config.secrets.setec is set; secretRefs are the secret
	// sources targets name, for Config.CheckSecrets.
	setec      bool
	secretRefs []namedRef
	errs       ConfigErrors
	// warnings are what loads but is likely a mistake.
	warnings []*ConfigError
	// unsupported are the paths reported "not supported yet": what
	// agentgateway does instead of something missing (a directResponse
	// route has no backend) is not reported missing again.
	unsupported []string
	// nodes counts the nodes decoded: YAML aliases can make a small file
	// expand without bound (a "billion laughs"), and a config is reloaded
	// whenever it changes.
	nodes int
	// shadowed are the paths that failed to decode, and the keys that an
	// unknown key was likely a typo of: a later check's error about them
	// (a missing or zero value) would repeat what was said.
	shadowed []string
}

// shadows reports whether an error at path would repeat one already
// reported while decoding: path is a shadowed path, inside one, or holds
// one.
func (d *decoder) shadows(path string) bool {
	for _, s := range d.shadowed {
		if pathWithin(path, s) || pathWithin(s, path) {
			return true
		}
	}
	return false
}

// pathWithin reports whether path is inner or lies inside it, element by
// element ("a.b[0]" lies inside "a.b" and "a", not inside "a.bc").
func pathWithin(path, outer string) bool {
	if outer == "" || path == outer {
		return true
	}
	if !strings.HasPrefix(path, outer) {
		return false
	}
	next := path[len(outer)]
	return next == '.' || next == '['
}

// maxNodes bounds the decoded size of a config, aliases expanded.
const maxNodes = 100_000

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errs = append(d.errs, &ConfigError{File: d.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// warnf records what loads but is likely a mistake, at line.
func (d *decoder) warnf(line int, path, format string, args ...any) {
	d.warnings = append(d.warnings, &ConfigError{File: d.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

var (
	notSupportedType    = reflect.TypeFor[notSupported]()
	yamlUnmarshalerType = reflect.TypeFor[yamlUnmarshaler]()
)

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return fmt.Sprintf("string %q", n.Value)
		case "!!null":
			return "null"
		}
		return n.Value
	}
	return "unknown node"
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// decode sets v (a settable value) from n.
func (d *decoder) decode(n *yaml.Node, path string, v reflect.Value) {
	n = resolve(n)
	if d.nodes++; d.nodes == maxNodes {
		d.errorf(n, path, "config too large: more than %d values once YAML aliases are expanded", maxNodes)
	}
	if d.nodes >= maxNodes {
		return
	}
	if v.CanAddr() && v.Addr().Type().Implements(yamlUnmarshalerType) {
		v.Addr().Interface().(yamlUnmarshaler).unmarshalYAML(d, n, path)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if isNull(n) {
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, path, v.Elem())
	case reflect.Struct:
		d.decodeStruct(n, path, v)
	case reflect.Slice:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, path, "expected a list, got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.decode(c, fmt.Sprintf("%s[%d]", path, i), s.Index(i))
		}
		v.Set(s)
	case reflect.Map:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.MappingNode {
			d.errorf(n, path, "expected a mapping, got %s", kindName(n))
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := resolve(n.Content[i]), n.Content[i+1]
			e := reflect.New(v.Type().Elem()).Elem()
			d.decode(val, path+"."+k.Value, e)
			m.SetMapIndex(reflect.ValueOf(k.Value), e)
		}
		v.Set(m)
	case reflect.String:
		if n.Kind != yaml.ScalarNode || isNull(n) {
			d.errorf(n, path, "expected a string, got %s", kindName(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Int, reflect.Int64:
		var i int64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil {
			d.errorf(n, path, "expected an integer, got %s", kindName(n))
			return
		}
		v.SetInt(i)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
			d.errorf(n, path, "expected true or false, got %s", kindName(n))
			return
		}
		v.SetBool(b)
	default:
		panic(fmt.Sprintf("gateway: config field %s has unsupported type %s", path, v.Type()))
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, path string, v reflect.Value) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping, got %s", kindName(n))
		return
	}
	fields := structFields(v.Type())
	seen := make(map[string]bool)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolve(n.Content[i]), n.Content[i+1]
		key := k.Value
		fpath := key
		if path != "" {
			fpath = path + "." + key
		}
		if seen[key] {
			d.errorf(k, fpath, "duplicate key")
			continue
		}
		seen[key] = true
		idx, ok := fields[key]
		if !ok {
			hint, meant := suggest(key, fields)
			d.errorf(k, fpath, "unknown field%s", hint)
			if meant != "" && !seen[meant] && !hasKey(n, meant) {
				d.shadowed = append(d.shadowed, joinPath(path, meant))
			}
			continue
		}
		f := v.Field(idx)
		if f.Type() == notSupportedType {
			d.errorf(k, fpath, "not supported yet by tailgate (agentgateway has it; remove it or see README \"Not supported yet\")")
			d.unsupported = append(d.unsupported, fpath)
			continue
		}
		d.decode(val, fpath, f)
	}
}

func structFields(t reflect.Type) map[string]int {
	fields := make(map[string]int)
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = i
	}
	return fields
}

// hasKey reports whether the mapping n has key.
func hasKey(n *yaml.Node, key string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if resolve(n.Content[i]).Value == key {
			return true
		}
	}
	return false
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// suggest returns ` (did you mean "x"?)` and x for the known key nearest
// to key, if one is near enough to be a likely typo: a few edits, more for
// long keys ("frontendPolicy" for "frontendPolicies").
func suggest(key string, fields map[string]int) (string, string) {
	best, bestDist := "", max(3, len(key)/4+1)
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if strings.EqualFold(name, key) {
			return fmt.Sprintf(" (did you mean %q?)", name), name
		}
		if dist := editDistance(strings.ToLower(key), strings.ToLower(name)); dist < bestDist {
			best, bestDist = name, dist
		}
	}
	if best == "" {
		return "", ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best), best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
