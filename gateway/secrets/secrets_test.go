package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/tailscale/setec/acl"
	"github.com/tailscale/setec/client/setec"
	"github.com/tailscale/setec/server"
	"github.com/tailscale/setec/setectest"
	"github.com/tailscale/setec/types/api"
	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/tailcfg"

	"github.com/tailgate-dev/tailgate/tsnode"
)

// Callers the tests resolve secrets for.
var (
	alice = &tsnode.Identity{
		NodeName:  "alice-laptop.tail1234.ts.net",
		NodeID:    "nALICE1CNTRL",
		UserLogin: "alice@example.com",
	}
	bob = &tsnode.Identity{
		NodeName:  "bob-desktop.tail1234.ts.net",
		NodeID:    "nBOB2CNTRL",
		UserLogin: "bob@example.com",
	}
	// ciRunner is a tagged node, as Tailscale reports it.
	ciRunner = &tsnode.Identity{
		NodeName:  "ci-runner.tail1234.ts.net",
		NodeID:    "nCI3CNTRL",
		Tags:      []string{"tag:ci"},
		UserLogin: "tagged-devices",
	}
	// taggedNoTags has the shared tagged login but (as from a control
	// server that leaves tags out) no tags.
	taggedNoTags = &tsnode.Identity{
		NodeName:  "builder.tail1234.ts.net",
		NodeID:    "nBUILD4CNTRL",
		UserLogin: "tagged-devices",
	}
)

// withLogin returns a caller whose login (and so {user}) and node name
// (and so {node}) are s, for the values that must be refused.
func withLogin(s string) *tsnode.Identity {
	return &tsnode.Identity{NodeName: s + ".tail1234.ts.net", NodeID: s, UserLogin: s}
}

// badValues are variable values that could change a name's shape; each
// must be refused with an error that is not ErrMissing.
var badValues = []string{"", ".", "..", "../x", "a/b", "/abs", `a\b`, `..\x`, "a\x00b", "a\nb", "a\tb", "a\x7fb", "a\u0085b", "\xff\xfe"}

// secretValues collects every secret value the tests put in a source,
// so that checkNoSecret can assert that no error carries one.
var secretValues = []string{
	"s3cr3t-alice-file", "s3cr3t-bob-file", "s3cr3t-crlf", "s3cr3t-tagged-file", "s3cr3t-outside",
	"s3cr3t-ci-node", "s3cr3t-alice-env", "s3cr3t-static-env", "s3cr3t-alice-setec",
	"s3cr3t-alice-setec-v2", "s3cr3t-forbidden", "s3cr3t-shared-env", "s3cr3t-huge",
}

// checkNoSecret fails t if err's message holds any secret value.
func checkNoSecret(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, v := range secretValues {
		if strings.Contains(err.Error(), v) {
			t.Errorf("error %q holds the secret value %q", err, v)
		}
	}
}

// want is what a Resolve or Has case expects: a value, or an error that
// is (or is not) ErrMissing and whose message holds each of errHas.
type want struct {
	value   string
	missing bool     // the error wraps ErrMissing
	errHas  []string // the error (not ErrMissing unless missing) holds these
	bad     bool     // the error wraps errBadValue
}

// check compares one Resolve's result with w.
func (w want) check(t *testing.T, got string, err error) {
	t.Helper()
	checkNoSecret(t, err)
	if w.value != "" {
		if err != nil || got != w.value {
			t.Fatalf("Resolve = %q, %v; want %q", got, err, w.value)
		}
		return
	}
	if err == nil {
		t.Fatalf("Resolve = %q, nil; want an error", got)
	}
	if got != "" {
		t.Errorf("Resolve returned %q along with error %v", got, err)
	}
	if errors.Is(err, ErrMissing) != w.missing {
		t.Errorf("errors.Is(%q, ErrMissing) = %v, want %v", err, !w.missing, w.missing)
	}
	if errors.Is(err, errBadValue) != w.bad {
		t.Errorf("errors.Is(%q, errBadValue) = %v, want %v", err, !w.bad, w.bad)
	}
	for _, s := range w.errHas {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

// writeFile writes content to dir/name, failing t on error.
func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		ref       Ref
		errHas    []string // empty: valid
		vars      []string
		perCaller bool
	}{
		{"file login", Ref{File: "/run/credentials/github/{login}"}, nil, []string{"login"}, true},
		{"env user", Ref{Env: "GITHUB_TOKEN_{user}"}, nil, []string{"user"}, true},
		{"setec node and id", Ref{Setec: "tailgate/{node}/{nodeID}/{node}"}, nil, []string{"node", "nodeID"}, true},
		{"static file", Ref{File: "/etc/token"}, nil, nil, false},
		{"static env", Ref{Env: "GITHUB_TOKEN"}, nil, nil, false},
		{"no source", Ref{}, []string{"set one of file, env and setec"}, nil, true},
		{"two sources", Ref{File: "/x", Env: "X"}, []string{"more than one source", "file /x and env X"}, nil, true},
		{"unknown variable", Ref{File: "/run/{email}"}, []string{"unknown variable {email}", "{login}, {user}, {node}, {nodeID}"}, nil, true},
		{"case matters", Ref{Setec: "x/{Login}"}, []string{"unknown variable {Login}"}, nil, true},
		{"empty variable", Ref{Env: "X_{}"}, []string{"empty variable {}"}, nil, true},
		{"unclosed", Ref{File: "/run/{login"}, []string{"'{' without a '}'"}, nil, true},
		{"nested", Ref{File: "/run/{{login}}"}, []string{"'{' without a '}'"}, nil, true},
		{"stray close", Ref{Setec: "x/login}"}, []string{"'}' without a '{'"}, nil, true},
		{"NUL", Ref{File: "/run/\x00/{login}"}, []string{"NUL"}, nil, true},
		{"env with =", Ref{Env: "A=B_{user}"}, []string{"'='"}, nil, true},
		{"env with newline", Ref{Env: "A\nB"}, []string{"control characters"}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.ref.Validate()
			if len(tc.errHas) == 0 && err != nil {
				t.Fatalf("Validate(%v) = %v, want nil", tc.ref, err)
			}
			if len(tc.errHas) > 0 && err == nil {
				t.Fatalf("Validate(%v) = nil, want an error", tc.ref)
			}
			for _, s := range tc.errHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Validate error %q does not say %q", err, s)
				}
			}
			if got := tc.ref.Vars(); !reflect.DeepEqual(got, tc.vars) {
				t.Errorf("Vars = %q, want %q", got, tc.vars)
			}
			if got := tc.ref.PerCaller(); got != tc.perCaller {
				t.Errorf("PerCaller = %v, want %v", got, tc.perCaller)
			}
		})
	}
}

func TestKnownVars(t *testing.T) {
	t.Parallel()
	if got, want := KnownVars(), []string{"login", "user", "node", "nodeID"}; !reflect.DeepEqual(got, want) {
		t.Errorf("KnownVars = %q, want %q", got, want)
	}
}

func TestStringAndSource(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ref    Ref
		id     *tsnode.Identity
		str    string
		source string
	}{
		{Ref{File: "/run/credentials/github/{login}"}, alice, "file /run/credentials/github/{login}", "file /run/credentials/github/alice@example.com"},
		{Ref{Env: "GITHUB_TOKEN_{user}"}, alice, "env GITHUB_TOKEN_{user}", "env GITHUB_TOKEN_ALICE"},
		{Ref{Env: "TOKEN_{login}"}, alice, "env TOKEN_{login}", "env TOKEN_ALICE_EXAMPLE_COM"},
		{Ref{Env: "TOKEN_{node}_{nodeID}"}, ciRunner, "env TOKEN_{node}_{nodeID}", "env TOKEN_CI_RUNNER_NCI3CNTRL"},
		{Ref{Setec: "tailgate/github/{login}"}, bob, "setec secret tailgate/github/{login}", "setec secret tailgate/github/bob@example.com"},
		{Ref{Setec: "tailgate/ci/{node}"}, ciRunner, "setec secret tailgate/ci/{node}", "setec secret tailgate/ci/ci-runner"},
		{Ref{Env: "SHARED"}, nil, "env SHARED", "env SHARED"},
	} {
		if got := tc.ref.String(); got != tc.str {
			t.Errorf("%#v.String() = %q, want %q", tc.ref, got, tc.str)
		}
		got, err := tc.ref.Source(tc.id)
		if err != nil || got != tc.source {
			t.Errorf("%v.Source = %q, %v; want %q", tc.ref, got, err, tc.source)
		}
	}
	if _, err := (Ref{File: "/x/{login}"}).Source(nil); err == nil {
		t.Error("Source of a per-caller ref for no caller: no error")
	}
}

func TestFile(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	dir := filepath.Join(root, "github")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "alice@example.com", "s3cr3t-alice-file\n")
	writeFile(t, dir, "bob@example.com", "s3cr3t-bob-file")
	writeFile(t, dir, "crlf@example.com", "s3cr3t-crlf\r\n")
	writeFile(t, dir, "twolines@example.com", "line1\nline2\n\n")
	writeFile(t, dir, "empty@example.com", "")
	writeFile(t, dir, "newline@example.com", "\n")
	writeFile(t, dir, "huge@example.com", strings.Repeat("s3cr3t-huge", 10))
	writeFile(t, dir, "exact@example.com", strings.Repeat("x", 64)+"\r\n")
	writeFile(t, dir, "tagged-devices", "s3cr3t-tagged-file")
	writeFile(t, dir, "ci-runner", "s3cr3t-ci-node")
	writeFile(t, dir, "nCI3CNTRL", "s3cr3t-ci-node")
	// What a traversal would reach: the files beside and above dir.
	writeFile(t, root, "x", "s3cr3t-outside")
	writeFile(t, root, "abs", "s3cr3t-outside")
	if err := os.Mkdir(filepath.Join(dir, "folder@example.com"), 0o700); err != nil {
		t.Fatal(err)
	}
	byLogin := Ref{File: filepath.Join(dir, "{login}")}
	r := New(Options{MaxBytes: 64})

	type tcase struct {
		name string
		ref  Ref
		id   *tsnode.Identity
		want want
	}
	cases := []tcase{
		{"present, one newline trimmed", byLogin, alice, want{value: "s3cr3t-alice-file"}},
		{"present, no newline", byLogin, bob, want{value: "s3cr3t-bob-file"}},
		{"crlf trimmed", byLogin, withLogin("crlf@example.com"), want{value: "s3cr3t-crlf"}},
		{"only one newline trimmed", byLogin, withLogin("twolines@example.com"), want{value: "line1\nline2\n"}},
		{"at the bound once trimmed", byLogin, withLogin("exact@example.com"), want{value: strings.Repeat("x", 64)}},
		{"absent", byLogin, withLogin("carol@example.com"), want{missing: true, errHas: []string{
			"no secret for carol@example.com: file " + filepath.Join(dir, "carol@example.com") + " does not exist"}}},
		{"absent folder", Ref{File: filepath.Join(dir, "{login}", "token")}, withLogin("carol@example.com"), want{missing: true, errHas: []string{"does not exist"}}},
		{"empty", byLogin, withLogin("empty@example.com"), want{missing: true, errHas: []string{"is empty"}}},
		{"newline only", byLogin, withLogin("newline@example.com"), want{missing: true, errHas: []string{"is empty"}}},
		{"too large", byLogin, withLogin("huge@example.com"), want{errHas: []string{"larger than 64 bytes"}}},
		{"a folder", byLogin, withLogin("folder@example.com"), want{errHas: []string{"not a regular file"}}},
		{"tagged by login", byLogin, ciRunner, want{errHas: []string{"tagged node", "{node}", "{nodeID}", "ci-runner.tail1234.ts.net", "tag:ci"}}},
		{"tagged without tags by login", byLogin, taggedNoTags, want{errHas: []string{"tagged node", "{node}"}}},
		{"tagged by user", Ref{File: filepath.Join(dir, "{user}")}, ciRunner, want{errHas: []string{"{user}", "tagged node"}}},
		{"tagged by node", Ref{File: filepath.Join(dir, "{node}")}, ciRunner, want{value: "s3cr3t-ci-node"}},
		{"tagged by node ID", Ref{File: filepath.Join(dir, "{nodeID}")}, ciRunner, want{value: "s3cr3t-ci-node"}},
		{"user", Ref{File: filepath.Join(dir, "{user}@example.com")}, alice, want{value: "s3cr3t-alice-file"}},
		{"no caller", byLogin, nil, want{errHas: []string{"no caller identity"}}},
		{"static, no caller", Ref{File: filepath.Join(dir, "bob@example.com")}, nil, want{value: "s3cr3t-bob-file"}},
		{"invalid ref", Ref{File: filepath.Join(dir, "{email}")}, alice, want{errHas: []string{"unknown variable {email}"}}},
	}
	for _, v := range badValues {
		id := withLogin(v)
		cases = append(cases,
			tcase{"login " + v, byLogin, id, want{bad: true, errHas: []string{"{login}", "not usable"}}},
			tcase{"user " + v, Ref{File: filepath.Join(dir, "{user}")}, id, want{bad: true, errHas: []string{"{user}", "not usable"}}},
			tcase{"nodeID " + v, Ref{File: filepath.Join(dir, "{nodeID}")}, id, want{bad: true, errHas: []string{"{nodeID}"}}},
			// A suffix or prefix around the variable does not make a bad
			// value usable.
			tcase{"login in element " + v, Ref{File: filepath.Join(dir, "pre.{login}.post")}, id, want{bad: true}},
		)
	}
	// {node} is the first label, so a name that starts with a dot or is
	// empty gives an empty value.
	cases = append(cases,
		tcase{"node empty label", Ref{File: filepath.Join(dir, "{node}")}, &tsnode.Identity{NodeName: ".tail1234.ts.net", UserLogin: "x@example.com"}, want{bad: true}},
		tcase{"node no name", Ref{File: filepath.Join(dir, "{node}")}, &tsnode.Identity{UserLogin: "x@example.com"}, want{bad: true}},
		tcase{"node traversal", Ref{File: filepath.Join(dir, "{node}")}, &tsnode.Identity{NodeName: "../x", UserLogin: "x@example.com"}, want{bad: true}},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := r.Resolve(context.Background(), tc.ref, tc.id)
			tc.want.check(t, got, err)
			has, herr := r.Has(context.Background(), tc.ref, tc.id)
			checkNoSecret(t, herr)
			switch {
			case tc.want.value != "":
				if !has || herr != nil {
					t.Errorf("Has = %v, %v; want true", has, herr)
				}
			case tc.want.missing:
				if has || herr != nil {
					t.Errorf("Has = %v, %v; want false, nil", has, herr)
				}
			default:
				if has || herr == nil {
					t.Errorf("Has = %v, %v; want false and an error", has, herr)
				}
			}
		})
	}
}

func TestFileChangeSeenNext(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ref := Ref{File: filepath.Join(dir, "{login}")}
	r := New(Options{})
	ctx := context.Background()
	if _, err := r.Resolve(ctx, ref, alice); !errors.Is(err, ErrMissing) {
		t.Fatalf("before the file: %v, want ErrMissing", err)
	}
	for _, v := range []string{"first", "second"} {
		writeFile(t, dir, alice.UserLogin, v+"\n")
		if got, err := r.Resolve(ctx, ref, alice); err != nil || got != v {
			t.Fatalf("Resolve = %q, %v; want %q", got, err, v)
		}
	}
	if err := os.Remove(filepath.Join(dir, alice.UserLogin)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve(ctx, ref, alice); !errors.Is(err, ErrMissing) {
		t.Fatalf("after removal: %v, want ErrMissing", err)
	}
}

func TestEnv(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"GITHUB_TOKEN_ALICE":              "s3cr3t-alice-env",
		"TOKEN_ALICE_EXAMPLE_COM":         "s3cr3t-alice-env",
		"TOKEN_CI_RUNNER":                 "s3cr3t-ci-node",
		"TOKEN_TAGGED_DEVICES":            "s3cr3t-tagged-file",
		"SHARED_TOKEN":                    "s3cr3t-static-env",
		"EMPTY_TOKEN":                     "",
		"HUGE_TOKEN":                      strings.Repeat("s3cr3t-huge", 10),
		"TOKEN____X":                      "s3cr3t-outside",
		"lower_NALICE1CNTRL_ALICE_LAPTOP": "s3cr3t-alice-env",
	}
	lookup := func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
	r := New(Options{LookupEnv: lookup, MaxBytes: 64})
	type tcase struct {
		name string
		ref  Ref
		id   *tsnode.Identity
		want want
	}
	cases := []tcase{
		{"user", Ref{Env: "GITHUB_TOKEN_{user}"}, alice, want{value: "s3cr3t-alice-env"}},
		{"login mapped", Ref{Env: "TOKEN_{login}"}, alice, want{value: "s3cr3t-alice-env"}},
		{"literal kept, values mapped", Ref{Env: "lower_{nodeID}_{node}"}, alice, want{value: "s3cr3t-alice-env"}},
		{"non-ASCII to one _ per character", Ref{Env: "TOKEN_{login}"}, withLogin("jösé@example.com"), want{missing: true, errHas: []string{"env TOKEN_J_S__EXAMPLE_COM is not set"}}},
		{"unset", Ref{Env: "GITHUB_TOKEN_{user}"}, bob, want{missing: true, errHas: []string{"no secret for bob@example.com: env GITHUB_TOKEN_BOB is not set"}}},
		{"empty", Ref{Env: "EMPTY_TOKEN"}, alice, want{missing: true, errHas: []string{"env EMPTY_TOKEN is empty"}}},
		{"too large", Ref{Env: "HUGE_TOKEN"}, alice, want{errHas: []string{"larger than 64 bytes"}}},
		{"static, no caller", Ref{Env: "SHARED_TOKEN"}, nil, want{value: "s3cr3t-static-env"}},
		{"static, any caller", Ref{Env: "SHARED_TOKEN"}, bob, want{value: "s3cr3t-static-env"}},
		{"tagged by login", Ref{Env: "TOKEN_{login}"}, ciRunner, want{errHas: []string{"tagged node", "{node}"}}},
		{"tagged without tags by user", Ref{Env: "TOKEN_{user}"}, taggedNoTags, want{errHas: []string{"tagged node"}}},
		{"tagged by node", Ref{Env: "TOKEN_{node}"}, ciRunner, want{value: "s3cr3t-ci-node"}},
	}
	for _, v := range badValues {
		cases = append(cases, tcase{"login " + v, Ref{Env: "TOKEN_{login}"}, withLogin(v), want{bad: true, errHas: []string{"{login}"}}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := r.Resolve(context.Background(), tc.ref, tc.id)
			tc.want.check(t, got, err)
		})
	}
}

// setecFixture is a real setec server, in process over httptest, that
// grants the gateway's node "get" on tailgate/* only.
type setecFixture struct {
	db     *setectest.DB
	url    string
	client *setec.Client
}

// newSetec starts a setec server for t.
func newSetec(t *testing.T) *setecFixture {
	t.Helper()
	db := setectest.NewDB(t, nil)
	rule, err := json.Marshal(acl.Rule{
		Action: []acl.Action{acl.ActionGet},
		Secret: []acl.Secret{"tailgate/*"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The server asks WhoIs who calls; here, always tailgate's tagged
	// node with the grant above.
	whois := func(context.Context, string) (*apitype.WhoIsResponse, error) {
		return &apitype.WhoIsResponse{
			Node:        &tailcfg.Node{Name: "tailgate.tail1234.ts.net.", Tags: []string{"tag:tailgate"}},
			UserProfile: &tailcfg.UserProfile{LoginName: "tagged-devices"},
			CapMap:      tailcfg.PeerCapMap{server.ACLCap: {tailcfg.RawMessage(rule)}},
		}, nil
	}
	ss := setectest.NewServer(t, db, &setectest.ServerOptions{WhoIs: whois})
	hs := httptest.NewServer(ss.Mux)
	t.Cleanup(hs.Close)
	return &setecFixture{db: db, url: hs.URL, client: &setec.Client{Server: hs.URL, DoHTTP: hs.Client().Do}}
}

func TestSetec(t *testing.T) {
	t.Parallel()
	fx := newSetec(t)
	fx.db.MustPut(fx.db.Superuser, "tailgate/github/alice@example.com", "s3cr3t-alice-setec")
	fx.db.MustPut(fx.db.Superuser, "tailgate/ci/nCI3CNTRL", "s3cr3t-ci-node")
	fx.db.MustPut(fx.db.Superuser, "tailgate/shared", "s3cr3t-static-env")
	fx.db.MustPut(fx.db.Superuser, "tailgate/huge", strings.Repeat("s3cr3t-huge", 10))
	fx.db.MustPut(fx.db.Superuser, "other/alice@example.com", "s3cr3t-forbidden")
	fx.db.MustPut(fx.db.Superuser, "tailgate/github/tagged-devices", "s3cr3t-tagged-file")
	r := New(Options{Setec: fx.client, MaxBytes: 64})

	type tcase struct {
		name string
		ref  Ref
		id   *tsnode.Identity
		want want
	}
	byLogin := Ref{Setec: "tailgate/github/{login}"}
	cases := []tcase{
		{"present", byLogin, alice, want{value: "s3cr3t-alice-setec"}},
		{"not found", byLogin, bob, want{missing: true, errHas: []string{
			"no secret for bob@example.com: setec secret tailgate/github/bob@example.com does not exist"}}},
		{"access denied", Ref{Setec: "other/{login}"}, alice, want{errHas: []string{
			"setec secret other/alice@example.com", "denies tailgate's node access", `"get"`}}},
		{"too large", Ref{Setec: "tailgate/huge"}, alice, want{errHas: []string{"larger than 64 bytes"}}},
		{"static, no caller", Ref{Setec: "tailgate/shared"}, nil, want{value: "s3cr3t-static-env"}},
		{"tagged by login", byLogin, ciRunner, want{errHas: []string{"tagged node", "{nodeID}"}}},
		{"tagged by node ID", Ref{Setec: "tailgate/ci/{nodeID}"}, ciRunner, want{value: "s3cr3t-ci-node"}},
	}
	for _, v := range badValues {
		cases = append(cases, tcase{"login " + v, byLogin, withLogin(v), want{bad: true}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := r.Resolve(context.Background(), tc.ref, tc.id)
			tc.want.check(t, got, err)
		})
	}
	t.Run("access denied wraps api.ErrAccessDenied", func(t *testing.T) {
		t.Parallel()
		_, err := r.Resolve(context.Background(), Ref{Setec: "other/{login}"}, alice)
		if !errors.Is(err, api.ErrAccessDenied) {
			t.Errorf("error %v does not wrap api.ErrAccessDenied", err)
		}
	})
}

func TestSetecChangeSeenNext(t *testing.T) {
	t.Parallel()
	fx := newSetec(t)
	const name = "tailgate/github/alice@example.com"
	fx.db.MustPut(fx.db.Superuser, name, "s3cr3t-alice-setec")
	r := New(Options{Setec: fx.client})
	ref := Ref{Setec: "tailgate/github/{login}"}
	ctx := context.Background()
	if got, err := r.Resolve(ctx, ref, alice); err != nil || got != "s3cr3t-alice-setec" {
		t.Fatalf("Resolve = %q, %v", got, err)
	}
	// A new version is inactive until activated.
	v2 := fx.db.MustPut(fx.db.Superuser, name, "s3cr3t-alice-setec-v2")
	if got, err := r.Resolve(ctx, ref, alice); err != nil || got != "s3cr3t-alice-setec" {
		t.Fatalf("Resolve before activation = %q, %v", got, err)
	}
	fx.db.MustActivate(fx.db.Superuser, name, v2)
	if got, err := r.Resolve(ctx, ref, alice); err != nil || got != "s3cr3t-alice-setec-v2" {
		t.Fatalf("Resolve after activation = %q, %v", got, err)
	}
}

func TestSetecUnavailable(t *testing.T) {
	t.Parallel()
	ref := Ref{Setec: "tailgate/github/{login}"}
	ctx := context.Background()

	_, err := New(Options{}).Resolve(ctx, ref, alice)
	if err == nil || errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "no setec server configured") {
		t.Errorf("no setec: %v; want \"no setec server configured\", not ErrMissing", err)
	}

	down := httptest.NewServer(nil)
	down.Close()
	r := New(Options{Setec: &setec.Client{Server: down.URL}})
	_, err = r.Resolve(ctx, ref, alice)
	if err == nil || errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "reading from the setec server") {
		t.Errorf("setec down: %v; want a reading error, not ErrMissing", err)
	}
	if has, err := r.Has(ctx, ref, alice); has || err == nil {
		t.Errorf("Has with setec down = %v, %v; want false and an error", has, err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := New(Options{Setec: &setec.Client{Server: down.URL}}).Resolve(cctx, ref, alice); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v, want context.Canceled", err)
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, dir, "static", "s3cr3t-static-env")
	writeFile(t, dir, "empty", "")
	env := func(name string) (string, bool) {
		if name == "SHARED_TOKEN" {
			return "s3cr3t-static-env", true
		}
		return "", false
	}
	r := New(Options{LookupEnv: env})
	withSetec := New(Options{Setec: &setec.Client{Server: "http://setec.invalid"}})
	for _, tc := range []struct {
		name    string
		r       *Resolver
		ref     Ref
		errHas  string // "": no error
		missing bool
	}{
		{"static file", r, Ref{File: filepath.Join(dir, "static")}, "", false},
		{"static file absent", r, Ref{File: filepath.Join(dir, "nope")}, "does not exist", true},
		{"static file empty", r, Ref{File: filepath.Join(dir, "empty")}, "is empty", true},
		{"per-caller file, folder exists", r, Ref{File: filepath.Join(dir, "{login}")}, "", false},
		{"per-caller file, folder absent", r, Ref{File: filepath.Join(dir, "nope", "{login}")}, "folder " + filepath.Join(dir, "nope") + " does not exist", true},
		{"per-caller file, prefix in element", r, Ref{File: filepath.Join(dir, "token-{login}")}, "", false},
		{"per-caller file, folder is a file", r, Ref{File: filepath.Join(dir, "static", "{login}")}, "is not a folder", false},
		{"static env set", r, Ref{Env: "SHARED_TOKEN"}, "", false},
		{"static env unset", r, Ref{Env: "OTHER_TOKEN"}, "is not set", true},
		{"per-caller env", r, Ref{Env: "TOKEN_{user}"}, "", false},
		{"setec unconfigured", r, Ref{Setec: "tailgate/{login}"}, "no setec server configured", false},
		{"setec configured, not asked", withSetec, Ref{Setec: "tailgate/{login}"}, "", false},
		{"invalid", r, Ref{Env: "TOKEN_{email}"}, "unknown variable {email}", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.r.Check(context.Background(), tc.ref)
			checkNoSecret(t, err)
			if tc.errHas == "" {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("Check = %v, want an error saying %q", err, tc.errHas)
			}
			if errors.Is(err, ErrMissing) != tc.missing {
				t.Errorf("errors.Is(%q, ErrMissing) = %v, want %v", err, !tc.missing, tc.missing)
			}
		})
	}
}
