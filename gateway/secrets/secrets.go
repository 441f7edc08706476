// Package secrets resolves the values a target's config marks as
// per-caller secrets: a credential (a GitHub token, a database password)
// chosen by who the caller is, read at the moment it is needed (when the
// caller's child starts, or a request goes to a remote target) from one
// of three sources:
//
//   - a file whose path is templated by identity, one file per caller,
//     e.g. a mounted Kubernetes secret or a systemd credentials folder:
//     /run/credentials/github/{login};
//   - the gateway's own environment: GITHUB_TOKEN_{user};
//   - setec, Tailscale's secrets service, reached with tailgate's own
//     node identity: tailgate/github/{login}.
//
// A Ref names one secret as config writes it. Its template may mention
// the variables {login}, {user}, {node} and {nodeID} (see KnownVars and
// the Var constants); a Ref that mentions none is the same secret for
// every caller.
//
// Safety rules, kept here so that every user of the package gets them:
//
//   - A variable's value can never change the shape of the name it is put
//     into: values that are empty, "." or "..", or contain '/', '\\', NUL,
//     other control characters or invalid UTF-8 are refused with an error
//     (not ErrMissing), so no login can reach another caller's file or
//     one outside the configured folder.
//   - {login} and {user} refuse a tagged caller: every tagged node has the
//     login "tagged-devices", so a secret named by it would be shared by
//     all tagged nodes. Name their secrets by {node} or {nodeID}.
//   - Errors and descriptions name the source (the file, variable or
//     setec name) and the caller, never a value. The package logs
//     nothing.
//   - Nothing is cached: every Resolve reads the source afresh, so a
//     changed secret is seen by the next Resolve.
//   - An empty value counts as missing, so a caller never gets a child
//     started with an empty secret.
package secrets

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/tailscale/setec/client/setec"
	"github.com/tailscale/setec/types/api"

	"github.com/tailgate-dev/tailgate/tsnode"
)

// Ref is one secret as config names it: exactly one of File, Env and
// Setec is set, each a template that may mention {login}, {user},
// {node} and {nodeID}. Braces are reserved for variables.
type Ref struct {
	// File is a path template, e.g. "/run/credentials/github/{login}".
	// The value is the file's contents with one trailing newline
	// trimmed.
	File string
	// Env is a name template of a variable in the gateway's own
	// environment, e.g. "GITHUB_TOKEN_{user}". Each variable's value is
	// made an environment-name segment first: ASCII letters upper-cased,
	// digits kept, every other character replaced by '_', so alice@example.com
	// gives ALICE_EXAMPLE_COM. Distinct logins can map to the same name
	// (alice.x and alice-x both give ALICE_X): where the tailnet may have
	// such logins, prefer File or Setec, whose names keep values as they
	// are, or {nodeID}.
	Env string
	// Setec is a setec secret name template, e.g. "tailgate/github/{login}";
	// the value is the secret's active version.
	Setec string
}

// Source kinds, as String and errors word them.
const (
	kindFile  = "file"
	kindEnv   = "env"
	kindSetec = "setec secret"
)

// source returns the kind of r's one source and its template; an error
// when r sets none or more than one.
func (r Ref) source() (kind, tmpl string, err error) {
	n := 0
	if r.File != "" {
		kind, tmpl = kindFile, r.File
		n++
	}
	if r.Env != "" {
		kind, tmpl = kindEnv, r.Env
		n++
	}
	if r.Setec != "" {
		kind, tmpl = kindSetec, r.Setec
		n++
	}
	switch n {
	case 0:
		return "", "", errors.New("a secret needs a source: set one of file, env and setec")
	case 1:
		return kind, tmpl, nil
	default:
		return "", "", fmt.Errorf("%s names more than one source: set only one of file, env and setec", r)
	}
}

// parse checks r and returns its kind and parsed template.
func (r Ref) parse() (kind string, t template, err error) {
	kind, tmpl, err := r.source()
	if err != nil {
		return "", nil, err
	}
	t, err = parseTemplate(kind, tmpl)
	if err != nil {
		return "", nil, err
	}
	if kind == kindEnv {
		for _, p := range t {
			if !p.isVar && strings.ContainsFunc(p.text, func(c rune) bool { return c == '=' || c < ' ' || c == 0x7f }) {
				return "", nil, fmt.Errorf("env template %q: an environment variable's name cannot hold '=' or control characters", tmpl)
			}
		}
	}
	return kind, t, nil
}

// Validate checks r as config gives it, without reading anything: it
// sets exactly one source, its template is not empty, its braces are
// balanced and it mentions known variables only (an error names the
// unknown one). tailgate's --validate-only reports these errors.
func (r Ref) Validate() error {
	_, _, err := r.parse()
	return err
}

// Vars returns the variables r's template mentions, without braces, each
// once; nil for a Ref that mentions none or is invalid.
func (r Ref) Vars() []string {
	_, t, err := r.parse()
	if err != nil {
		return nil
	}
	return t.vars()
}

// PerCaller reports whether r's template mentions a caller variable, so
// that its value may differ between callers; if not, the value is the
// same for every caller. An invalid Ref reports true, the cautious
// answer for whoever decides whether callers may share a child.
func (r Ref) PerCaller() bool {
	_, t, err := r.parse()
	return err != nil || len(t.vars()) > 0
}

// String describes r as config writes it, e.g.
// "file /run/credentials/github/{login}". It holds no secret value.
func (r Ref) String() string {
	var parts []string
	if r.File != "" {
		parts = append(parts, kindFile+" "+r.File)
	}
	if r.Env != "" {
		parts = append(parts, kindEnv+" "+r.Env)
	}
	if r.Setec != "" {
		parts = append(parts, kindSetec+" "+r.Setec)
	}
	if len(parts) == 0 {
		return "secret with no source"
	}
	return strings.Join(parts, " and ")
}

// Source returns the concrete source r names for caller id, e.g.
// "file /run/credentials/github/alice@example.com" or
// "env GITHUB_TOKEN_ALICE": what errors and logs may say, and a key by
// which callers whose secrets come from the same place can be told
// apart from those whose secrets do not. It reads nothing and holds no
// secret value. id may be nil when r is not PerCaller. The errors are
// Resolve's for a bad Ref or caller.
func (r Ref) Source(id *tsnode.Identity) (string, error) {
	kind, name, err := r.expand(id)
	if err != nil {
		return "", err
	}
	return kind + " " + name, nil
}

// expand returns r's kind and the name of its source for caller id: a
// path, an environment variable's name or a setec secret's name.
func (r Ref) expand(id *tsnode.Identity) (kind, name string, err error) {
	kind, t, err := r.parse()
	if err != nil {
		return "", "", err
	}
	mapValue := asIs
	if kind == kindEnv {
		mapValue = envSegment
	}
	name, err = t.expand(id, mapValue)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", r, err)
	}
	if kind == kindFile {
		if err := checkPathShape(r.File, name); err != nil {
			return "", "", fmt.Errorf("%s: %w", r, err)
		}
	}
	return kind, name, nil
}

// checkPathShape is a second guard behind checkValue: the expanded path
// has as many elements as the template, and none that holds a variable
// became "." or "..".
func checkPathShape(tmpl, path string) error {
	te := strings.Split(tmpl, "/")
	pe := strings.Split(path, "/")
	if len(te) != len(pe) {
		return fmt.Errorf("expanded path %s has a different shape from its template: %w", path, errBadValue)
	}
	for i, e := range pe {
		if (e == "." || e == "..") && te[i] != e {
			return fmt.Errorf("expanded path %s climbs out of its folder: %w", path, errBadValue)
		}
	}
	return nil
}

// ErrMissing is wrapped (errors.Is) by the errors of Resolve when the
// caller has no such secret: the file does not exist, the environment
// variable is not set, the setec secret does not exist, or the value is
// empty. Other errors mean a broken Ref, caller or source.
var ErrMissing = errors.New("no such secret")

// missingError is a missing secret: its message names the caller and
// the source, and errors.Is matches it to ErrMissing.
type missingError struct{ msg string }

// Error returns the message, which holds no secret value.
func (e *missingError) Error() string { return e.msg }

// Is makes errors.Is(err, ErrMissing) hold.
func (e *missingError) Is(target error) bool { return target == ErrMissing }

// missing returns the ErrMissing error saying that caller id has no
// secret at the source kind+name, for reason (e.g. "does not exist").
func missing(id *tsnode.Identity, kind, name, reason string) error {
	who := "no secret"
	if id != nil {
		who = "no secret for " + describeCaller(id)
	}
	return &missingError{msg: fmt.Sprintf("%s: %s %s %s", who, kind, name, reason)}
}

// DefaultMaxBytes bounds a secret's size when Options.MaxBytes is not
// set: 64 KiB, well above any token or key.
const DefaultMaxBytes = 64 << 10

// Options configure a Resolver. The zero value reads files and the
// gateway's environment, has no setec server, and bounds values to
// DefaultMaxBytes.
type Options struct {
	// Setec is the setec server's client, reached with tailgate's own
	// node identity (its DoHTTP dialling over the tailnet). Nil: a Setec
	// Ref fails with "no setec server configured".
	Setec *setec.Client
	// LookupEnv reads the gateway's environment; nil means os.LookupEnv.
	// Tests inject their own.
	LookupEnv func(string) (string, bool)
	// MaxBytes bounds a value's size; a larger one is an error (not
	// ErrMissing). Zero or less means DefaultMaxBytes.
	MaxBytes int
}

// Resolver reads per-caller secrets from their sources. It keeps no
// state between calls (nothing is cached) and is safe for concurrent
// use.
type Resolver struct {
	setec     *setec.Client
	lookupEnv func(string) (string, bool)
	maxBytes  int
}

// New returns a Resolver with opts.
func New(opts Options) *Resolver {
	r := &Resolver{setec: opts.Setec, lookupEnv: opts.LookupEnv, maxBytes: opts.MaxBytes}
	if r.lookupEnv == nil {
		r.lookupEnv = os.LookupEnv
	}
	if r.maxBytes <= 0 {
		r.maxBytes = DefaultMaxBytes
	}
	return r
}

// Resolve returns the value of ref for caller id, read now from its
// source. id may be nil when ref is not PerCaller. When the caller has
// no such secret the error wraps ErrMissing and says, e.g.,
// "no secret for alice@example.com: file /run/credentials/github/alice@example.com does not exist".
// Other errors are a bad Ref, a caller whose identity cannot name a
// secret (a tagged caller for {login}, a value that would change the
// name's shape), or a broken source (unreadable file, setec unreachable
// or denying access, value too large). No error holds the value.
func (r *Resolver) Resolve(ctx context.Context, ref Ref, id *tsnode.Identity) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	kind, name, err := ref.expand(id)
	if err != nil {
		return "", err
	}
	var v []byte
	switch kind {
	case kindFile:
		v, err = r.readFile(id, name)
	case kindEnv:
		v, err = r.readEnv(id, name)
	case kindSetec:
		v, err = r.readSetec(ctx, id, name)
	}
	if err != nil {
		return "", err
	}
	if len(v) > r.maxBytes {
		return "", fmt.Errorf("%s %s is larger than %d bytes", kind, name, r.maxBytes)
	}
	if len(v) == 0 {
		return "", missing(id, kind, name, "is empty")
	}
	return string(v), nil
}

// Has reports whether caller id has the secret ref names, without
// returning it, so that policy can see whether a caller has one. It
// reads the secret as Resolve does (for setec, that needs the "get"
// action, not "info"): false with a nil error means ErrMissing; an error
// means Resolve would fail otherwise.
func (r *Resolver) Has(ctx context.Context, ref Ref, id *tsnode.Identity) (bool, error) {
	_, err := r.Resolve(ctx, ref, id)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrMissing):
		return false, nil
	default:
		return false, err
	}
}

// readFile returns the contents of the regular file at path with one
// trailing newline ("\n" or "\r\n") trimmed, reading at most three
// bytes more than maxBytes. A path that is not there is ErrMissing; one that
// is not a regular file (a folder, a pipe, a device) is an error, so
// that a read can neither block nor run on.
func (r *Resolver) readFile(id *tsnode.Identity, path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fileError(id, path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s is not a regular file", kindFile, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fileError(id, path, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, fileError(id, path, err)
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s is not a regular file", kindFile, path)
	}
	// Reading three bytes over the bound is enough to tell a value that
	// fits once its trailing "\r\n" is trimmed from one too large;
	// Resolve refuses the latter.
	v, err := io.ReadAll(io.LimitReader(f, int64(r.maxBytes)+3))
	if err != nil {
		return nil, fileError(id, path, err)
	}
	if trimmed, ok := strings.CutSuffix(string(v), "\n"); ok {
		v = []byte(strings.TrimSuffix(trimmed, "\r"))
	}
	return v, nil
}

// fileError words an error reading path: a path that does not exist is
// ErrMissing, anything else (permission denied, a path element that is
// not a folder) a broken source. The path is said once, without the
// os package's repetition of it.
func fileError(id *tsnode.Identity, path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return missing(id, kindFile, path, "does not exist")
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s %s: tailgate cannot %s it: %w", kindFile, path, pe.Op, pe.Err)
	}
	return fmt.Errorf("%s %s: %w", kindFile, path, err)
}

// readEnv returns the gateway's environment variable name; unset is
// ErrMissing.
func (r *Resolver) readEnv(id *tsnode.Identity, name string) ([]byte, error) {
	v, ok := r.lookupEnv(name)
	if !ok {
		return nil, missing(id, kindEnv, name, "is not set")
	}
	return []byte(v), nil
}

// readSetec returns the active version of the setec secret name. Not
// found is ErrMissing; access denied says tailgate's node lacks the
// grant. setec checks access before existence, so a name outside what
// tailgate's node is granted is denied whether or not it exists.
func (r *Resolver) readSetec(ctx context.Context, id *tsnode.Identity, name string) ([]byte, error) {
	if r.setec == nil {
		return nil, fmt.Errorf("%s %s: no setec server configured", kindSetec, name)
	}
	sv, err := r.setec.Get(ctx, name)
	switch {
	case err == nil:
		if sv == nil {
			return nil, fmt.Errorf("%s %s: the setec server answered with no value", kindSetec, name)
		}
		return sv.Value, nil
	case errors.Is(err, api.ErrNotFound):
		return nil, missing(id, kindSetec, name, "does not exist")
	case errors.Is(err, api.ErrAccessDenied):
		return nil, fmt.Errorf(`%s %s: the setec server denies tailgate's node access: grant the node the "get" action on this name (tailnet policy capability tailscale.com/cap/secrets): %w`, kindSetec, name, err)
	default:
		return nil, fmt.Errorf("%s %s: reading from the setec server: %w", kindSetec, name, err)
	}
}

// Check probes ref's source as far as it can without a caller, for
// tailgate's --validate-only: after Validate, a file that is the same
// for every caller must be a readable regular file, and for a per-caller
// one the folder before its first variable must exist; an env that is
// the same for every caller must be set; a setec ref needs a setec
// server configured (the server is not asked). A missing file or unset
// variable wraps ErrMissing. It returns no value.
func (r *Resolver) Check(ctx context.Context, ref Ref) error {
	kind, t, err := ref.parse()
	if err != nil {
		return err
	}
	if kind == kindSetec {
		if r.setec == nil {
			return fmt.Errorf("%s: no setec server configured", ref)
		}
		return nil
	}
	if len(t.vars()) == 0 {
		_, err := r.Resolve(ctx, ref, nil)
		return err
	}
	if kind != kindFile {
		return nil
	}
	// The literal text before the first variable, up to its last '/',
	// is a folder every caller's file is under.
	prefix := t[0].text
	if t[0].isVar {
		prefix = ""
	}
	dir := "."
	if i := strings.LastIndex(prefix, "/"); i == 0 {
		dir = "/"
	} else if i > 0 {
		dir = prefix[:i]
	}
	fi, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return &missingError{msg: fmt.Sprintf("%s: folder %s does not exist", ref, dir)}
		}
		return fmt.Errorf("%s: folder %s: %w", ref, dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: %s is not a folder", ref, dir)
	}
	return nil
}
