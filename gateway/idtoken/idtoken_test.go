package idtoken

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/tsnode"
)

// The audiences of the two targets in these tests.
const (
	audienceA = "https://a.example.ts.net/mcp"
	audienceB = "https://b.example.ts.net/mcp"
)

// alice is a user's caller with a grant; ciRunner is a tagged node.
var (
	alice = &tsnode.Identity{
		NodeName:  "alice-laptop.example.ts.net",
		NodeID:    "nALICE",
		UserLogin: "alice@example.com",
		Caps:      map[string][]json.RawMessage{"example.com/cap/mcp": {json.RawMessage(`{"tools":["*"]}`)}},
	}
	ciRunner = &tsnode.Identity{
		NodeName:  "ci-runner.example.ts.net",
		NodeID:    "nCI",
		Tags:      []string{"tag:ci"},
		UserLogin: "tagged-devices",
	}
)

// clock is a settable clock for Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

// newClock is a clock at the real time, so that tokens minted by it are
// judged sensibly by go-sdk's middleware, which reads the real clock.
func newClock() *clock { return &clock{now: time.Now()} }

// Now is the clock's time.
func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock on by d.
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// keyServer is a gateway's well-known endpoints over HTTP. It serves the
// Signer set last, as a restarted gateway would on the same address.
type keyServer struct {
	*httptest.Server
	signer atomic.Pointer[Signer]
}

// newKeyServer starts a keyServer; set its signer before use.
func newKeyServer(t *testing.T) *keyServer {
	ks := &keyServer{}
	ks.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ks.signer.Load().Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(ks.Close)
	return ks
}

// open is Open that fails the test on error.
func open(t *testing.T, opts Options) *Signer {
	t.Helper()
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// mint is Mint that fails the test on error.
func mint(t *testing.T, s *Signer, id *tsnode.Identity, audience string) string {
	t.Helper()
	token, _, err := s.Mint(id, audience)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	return token
}

// header is the JOSE header of token.
func header(t *testing.T, token string) jose.Header {
	t.Helper()
	tok, err := jwt.ParseSigned(token, supportedAlgs)
	if err != nil {
		t.Fatalf("parse token: %v", err)
	}
	return tok.Headers[0]
}

// unverifiedClaims are the claims of token, unchecked.
func unverifiedClaims(t *testing.T, token string) Claims {
	t.Helper()
	tok, err := jwt.ParseSigned(token, supportedAlgs)
	if err != nil {
		t.Fatal(err)
	}
	var c Claims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

// whoami is what the test target's tool reports of its caller.
type whoami struct {
	User string   `json:"user"`
	Node string   `json:"node"`
	Tags []string `json:"tags"`
	Caps []string `json:"caps"`
}

// newTarget starts a remote MCP server as a target author writes it:
// go-sdk's streamable HTTP handler behind auth.RequireBearerToken with
// Verifier for audience, trusting the gateway at issuer. Its tool whoami
// says whom the token names.
func newTarget(t *testing.T, issuer, audience string, client *http.Client) string {
	server := mcp.NewServer(&mcp.Implementation{Name: "target", Version: "v0.0.1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "whoami"}, func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, whoami, error) {
		c, err := ClaimsFrom(req.Extra.TokenInfo)
		if err != nil {
			return nil, whoami{}, err
		}
		var caps []string
		for name := range c.Caps {
			caps = append(caps, name)
		}
		return nil, whoami{User: req.Extra.TokenInfo.UserID, Node: c.Node.Name, Tags: c.Tags, Caps: caps}, nil
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	srv := httptest.NewServer(auth.RequireBearerToken(Verifier("", issuer, audience, client), nil)(h))
	t.Cleanup(srv.Close)
	return srv.URL
}

// bearer is an http.RoundTripper that sends token in Authorization, as
// the gateway does towards a target.
type bearer struct{ token string }

// RoundTrip sends r with the token.
func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// callWhoami connects to the target at url with token and calls whoami.
func callWhoami(t *testing.T, url, token string) whoami {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "gateway", Version: "v0.0.1"}, nil)
	transport := &mcp.StreamableClientTransport{
		Endpoint:             url,
		HTTPClient:           &http.Client{Transport: bearer{token}},
		MaxRetries:           -1,
		DisableStandaloneSSE: true,
	}
	cs, err := client.Connect(t.Context(), transport, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer cs.Close()
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "whoami"})
	if err != nil {
		t.Fatalf("call whoami: %v", err)
	}
	if res.IsError {
		t.Fatalf("whoami failed: %+v", res.Content)
	}
	data, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	var w whoami
	if err := json.Unmarshal(data, &w); err != nil {
		t.Fatal(err)
	}
	return w
}

// refusal sends token (none if empty) to the target at url and returns
// the status and body of the answer.
func refusal(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// testGateway is a gateway's signer with persisted keys, its clock and its
// well-known endpoints.
type testGateway struct {
	dir    string
	clock  *clock
	keys   *keyServer
	signer *Signer
}

// newTestGateway opens a signer for alg in a new state directory and
// serves its keys.
func newTestGateway(t *testing.T, alg string) *testGateway {
	g := &testGateway{dir: filepath.Join(t.TempDir(), "state"), clock: newClock(), keys: newKeyServer(t)}
	g.signer = open(t, g.options(alg))
	g.keys.signer.Store(g.signer)
	return g
}

// options are the Options of g's signer for alg.
func (g *testGateway) options(alg string) Options {
	return Options{Dir: g.dir, Issuer: g.keys.URL, Algorithm: alg, Now: g.clock.Now}
}

// TestEndToEnd mints tokens and has a go-sdk target verify them through
// auth.RequireBearerToken: the target's tool sees the caller; tokens for
// another target, out of their time, from another issuer or key, or in
// another algorithm are refused with 401.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	// otherKeyToken signs alice's claims for target A with a key the
	// gateway never published, under kid (a made-up one if empty).
	otherKeyToken := func(t *testing.T, g *testGateway, kid string) string {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: priv, KeyID: kid}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := identityClaims(alice)
		c.Issuer, c.Audience = g.keys.URL, jwt.Audience{audienceA}
		now := time.Now()
		c.IssuedAt, c.NotBefore, c.Expiry = jwt.NewNumericDate(now), jwt.NewNumericDate(now), jwt.NewNumericDate(now.Add(time.Minute))
		token, err := jwt.Signed(signer).Claims(c).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return token
	}
	// sameKeys mints with a second Signer on g's key file with opts
	// changed by change: same keys, other claims.
	sameKeys := func(t *testing.T, g *testGateway, change func(*Options)) string {
		opts := g.options("")
		change(&opts)
		return mint(t, open(t, opts), alice, audienceA)
	}
	for _, tc := range []struct {
		name string
		alg  string
		// token is what the gateway sends to target A.
		token func(t *testing.T, g *testGateway) string
		// want is what the tool sees; zero when refused.
		want whoami
		// refused is part of the 401 answer's body.
		refused string
	}{{
		name:  "user",
		token: func(t *testing.T, g *testGateway) string { return mint(t, g.signer, alice, audienceA) },
		want:  whoami{User: "alice@example.com", Node: "alice-laptop.example.ts.net", Tags: []string{}, Caps: []string{"example.com/cap/mcp"}},
	}, {
		name:  "tagged node is named by its node",
		token: func(t *testing.T, g *testGateway) string { return mint(t, g.signer, ciRunner, audienceA) },
		want:  whoami{User: "ci-runner.example.ts.net", Node: "ci-runner.example.ts.net", Tags: []string{"tag:ci"}},
	}, {
		name:  "ES256",
		alg:   ES256,
		token: func(t *testing.T, g *testGateway) string { return mint(t, g.signer, alice, audienceA) },
		want:  whoami{User: "alice@example.com", Node: "alice-laptop.example.ts.net", Tags: []string{}, Caps: []string{"example.com/cap/mcp"}},
	}, {
		name:    "token for another target",
		token:   func(t *testing.T, g *testGateway) string { return mint(t, g.signer, alice, audienceB) },
		refused: "not for this target",
	}, {
		name: "expired",
		token: func(t *testing.T, g *testGateway) string {
			return sameKeys(t, g, func(o *Options) { o.Now = func() time.Time { return time.Now().Add(-DefaultTTL - 2*Leeway) } })
		},
		refused: "expired",
	}, {
		name: "not valid yet",
		token: func(t *testing.T, g *testGateway) string {
			return sameKeys(t, g, func(o *Options) { o.Now = func() time.Time { return time.Now().Add(2 * Leeway) } })
		},
		refused: "not valid yet",
	}, {
		name: "wrong issuer",
		token: func(t *testing.T, g *testGateway) string {
			return sameKeys(t, g, func(o *Options) { o.Issuer = "https://other-gw.example.ts.net" })
		},
		refused: "issuer",
	}, {
		name: "another gateway's key",
		token: func(t *testing.T, g *testGateway) string {
			return mint(t, open(t, Options{Issuer: g.keys.URL}), alice, audienceA)
		},
		refused: "unknown signing key",
	}, {
		name: "another key under the gateway's key ID",
		token: func(t *testing.T, g *testGateway) string {
			return otherKeyToken(t, g, g.signer.ring.Load().current.kid())
		},
		refused: "bad signature",
	}, {
		name: "HMAC with the public key as secret",
		token: func(t *testing.T, g *testGateway) string {
			pub := g.signer.ring.Load().current.jwk.Public().Key.(ed25519.PublicKey)
			signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte(pub)},
				(&jose.SignerOptions{}).WithHeader("kid", g.signer.ring.Load().current.kid()))
			if err != nil {
				t.Fatal(err)
			}
			c, _ := identityClaims(alice)
			c.Issuer, c.Audience, c.Expiry = g.keys.URL, jwt.Audience{audienceA}, jwt.NewNumericDate(time.Now().Add(time.Minute))
			token, err := jwt.Signed(signer).Claims(c).Serialize()
			if err != nil {
				t.Fatal(err)
			}
			return token
		},
		refused: "not a JWT signed with EdDSA or ES256",
	}, {
		name: "unsigned",
		token: func(t *testing.T, g *testGateway) string {
			enc := base64.RawURLEncoding.EncodeToString
			return enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(`{"sub":"alice@example.com","aud":"`+audienceA+`"}`)) + "."
		},
		refused: "not a JWT",
	}, {
		name:    "no token",
		token:   func(*testing.T, *testGateway) string { return "" },
		refused: "no bearer token",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newTestGateway(t, tc.alg)
			target := newTarget(t, g.keys.URL, audienceA, g.keys.Client())
			token := tc.token(t, g)
			if tc.refused != "" {
				code, body := refusal(t, target, token)
				if code != http.StatusUnauthorized || !strings.Contains(body, tc.refused) {
					t.Fatalf("answer %d %q; want 401 with %q", code, body, tc.refused)
				}
				return
			}
			if got := header(t, token).Algorithm; got != g.signer.alg {
				t.Errorf("token signed with %s; want %s", got, g.signer.alg)
			}
			got := callWhoami(t, target, token)
			if got.User != tc.want.User || got.Node != tc.want.Node || !slices.Equal(got.Tags, tc.want.Tags) || !slices.Equal(got.Caps, tc.want.Caps) {
				t.Errorf("target saw %+v; want %+v", got, tc.want)
			}
		})
	}
}

// TestMintClaims checks every claim of a minted token, and that a token
// cannot be minted without a subject or an audience.
func TestMintClaims(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := open(t, Options{Issuer: "https://gw.example.ts.net/", Now: clk.Now})
	token, expires, err := s.Mint(alice, audienceA)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.ParseSigned(token, supportedAlgs)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	var c Claims
	if err := tok.Claims(s.ring.Load().current.jwk.Public().Key, &raw, &c); err != nil {
		t.Fatal(err)
	}
	now := clk.Now().Unix()
	for name, want := range map[string]any{
		"iss": "https://gw.example.ts.net", // without the trailing slash
		"sub": "alice@example.com",
		"aud": audienceA, // one string, not a list
		"iat": float64(now),
		"nbf": float64(now),
		"exp": float64(now + int64(DefaultTTL.Seconds())),
	} {
		if raw[name] != want {
			t.Errorf("%s = %v; want %v", name, raw[name], want)
		}
	}
	if c.Node != (Node{Name: "alice-laptop.example.ts.net", ID: "nALICE"}) || len(c.Tags) != 0 ||
		string(c.Caps["example.com/cap/mcp"][0]) != `{"tools":["*"]}` {
		t.Errorf("identity claims %+v", c)
	}
	if !expires.Equal(c.Expiry.Time()) {
		t.Errorf("Mint says it expires %v; token says %v", expires, c.Expiry.Time())
	}
	if h := header(t, token); h.KeyID != s.ring.Load().current.kid() || h.ExtraHeaders["typ"] != "JWT" {
		t.Errorf("header %+v", h)
	}
	c2 := unverifiedClaims(t, mint(t, s, alice, audienceA))
	if c2.ID == "" || c2.ID == c.ID {
		t.Errorf("jti %q then %q; want distinct", c.ID, c2.ID)
	}

	for _, tc := range []struct {
		name     string
		id       *tsnode.Identity
		audience string
		want     string
	}{
		{"no identity", nil, audienceA, "no caller identity"},
		{"no audience", alice, "", "no audience"},
		{"no login and no node name", &tsnode.Identity{NodeID: "n1"}, audienceA, "no login"},
		{"tagged without its node name", &tsnode.Identity{NodeID: "n1", UserLogin: "tagged-devices"}, audienceA, "no login"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := s.Mint(tc.id, tc.audience); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Mint: %v; want an error with %q", err, tc.want)
			}
		})
	}
}

// verifyDirect checks token with v, as the middleware would.
func verifyDirect(t *testing.T, v auth.TokenVerifier, token string) error {
	t.Helper()
	_, err := v(t.Context(), token, nil)
	return err
}

// publishedKIDs are the key IDs in s's JWKS, as served.
func publishedKIDs(t *testing.T, s *Signer) []string {
	t.Helper()
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, JWKSPath, nil))
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil {
		t.Fatalf("JWKS %q: %v", rec.Body, err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k["kid"].(string))
	}
	return kids
}

// TestRotationAndRestart rotates a persisted key and restarts the
// gateway: tokens minted before either still verify, the restarted gateway
// signs with the same key, the key file is private, and a retired key
// leaves the JWKS once its tokens have all expired; with either algorithm.
func TestRotationAndRestart(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{EdDSA, ES256} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			g := newTestGateway(t, alg)
			v := Verifier("", g.keys.URL, audienceA, g.keys.Client())
			before := mint(t, g.signer, alice, audienceA)
			kid1 := header(t, before).KeyID
			next := g.signer.ring.Load().next.kid()
			if !slices.Contains(publishedKIDs(t, g.signer), next) {
				t.Errorf("next key %s not published before it signs", next)
			}

			if err := g.signer.Rotate(); err != nil {
				t.Fatal(err)
			}
			after := mint(t, g.signer, alice, audienceA)
			if kid2 := header(t, after).KeyID; kid2 == kid1 || kid2 != next {
				t.Fatalf("after rotation signed by %s; want the next key %s (was %s)", kid2, next, kid1)
			}
			for _, tok := range []string{before, after} {
				if err := verifyDirect(t, v, tok); err != nil {
					t.Errorf("after rotation: %v", err)
				}
			}

			// Restart: a new Signer on the same directory, a new verifier.
			restarted := open(t, g.options(alg))
			g.keys.signer.Store(restarted)
			if kid := restarted.ring.Load().current.kid(); kid != next {
				t.Errorf("restarted gateway signs with %s; want %s, the key before the restart", kid, next)
			}
			v = Verifier("", g.keys.URL, audienceA, g.keys.Client())
			for _, tok := range []string{before, after, mint(t, restarted, alice, audienceA)} {
				if err := verifyDirect(t, v, tok); err != nil {
					t.Errorf("after restart: %v", err)
				}
			}

			fi, err := os.Stat(filepath.Join(g.dir, keyFileName))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("key file mode %v; want 0600", fi.Mode().Perm())
			}
			if di, err := os.Stat(g.dir); err != nil || di.Mode().Perm() != 0o700 {
				t.Errorf("state directory mode %v (%v); want 0700", di.Mode().Perm(), err)
			}
			if entries, _ := os.ReadDir(g.dir); len(entries) != 1 {
				t.Errorf("state directory holds %d files; want the key file only (no temporary files left)", len(entries))
			}

			g.clock.Advance(DefaultTTL + retireMargin - time.Second)
			if !slices.Contains(publishedKIDs(t, restarted), kid1) {
				t.Errorf("retired key %s unpublished while its tokens may be valid", kid1)
			}
			g.clock.Advance(time.Second)
			if slices.Contains(publishedKIDs(t, restarted), kid1) {
				t.Errorf("retired key %s still published after its tokens expired", kid1)
			}
			if err := restarted.Rotate(); err != nil {
				t.Fatal(err)
			}
			if data, _ := os.ReadFile(filepath.Join(g.dir, keyFileName)); strings.Contains(string(data), kid1) {
				t.Errorf("retired key %s still in the key file after the next rotation", kid1)
			}
		})
	}
}

// TestOpenKeys covers what Open does with the key file it finds: keep a
// valid key, rotate one that came due while the gateway was down, switch
// to a changed algorithm keeping the old key published, refuse a damaged
// file, and make a file others could read private.
func TestOpenKeys(t *testing.T) {
	t.Parallel()
	t.Run("overdue key rotates at start", func(t *testing.T) {
		t.Parallel()
		g := newTestGateway(t, "")
		old, next := g.signer.ring.Load().current.kid(), g.signer.ring.Load().next.kid()
		g.clock.Advance(DefaultRotateEvery + time.Hour)
		s := open(t, g.options(""))
		if kid := s.ring.Load().current.kid(); kid != next {
			t.Errorf("signs with %s; want the published next key %s", kid, next)
		}
		if !slices.Contains(publishedKIDs(t, s), old) {
			t.Errorf("overdue key %s unpublished at once", old)
		}
	})
	t.Run("algorithm change", func(t *testing.T) {
		t.Parallel()
		g := newTestGateway(t, EdDSA)
		before := mint(t, g.signer, alice, audienceA)
		s := open(t, g.options(ES256))
		g.keys.signer.Store(s)
		after := mint(t, s, alice, audienceA)
		if alg := header(t, after).Algorithm; alg != ES256 {
			t.Errorf("signed with %s after switching to ES256", alg)
		}
		v := Verifier("", g.keys.URL, audienceA, g.keys.Client())
		for _, tok := range []string{before, after} {
			if err := verifyDirect(t, v, tok); err != nil {
				t.Errorf("after switching algorithm: %v", err)
			}
		}
		if next := s.ring.Load().next.alg(); next != ES256 {
			t.Errorf("next key is %s", next)
		}
	})
	t.Run("damaged key file", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		s := open(t, Options{Dir: dir, Issuer: "https://gw.example.ts.net"})
		path := filepath.Join(dir, keyFileName)
		good, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for name, data := range map[string]string{
			"not JSON":     "{",
			"unknown role": strings.Replace(string(good), `"role": "next"`, `"role": "spare"`, 1),
			"kid not the thumbprint": strings.Replace(string(good), s.ring.Load().current.kid(),
				"made-up-kid", -1),
		} {
			if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(Options{Dir: dir, Issuer: "https://gw.example.ts.net"}); err == nil || !strings.Contains(err.Error(), "move it away") {
				t.Errorf("%s: Open: %v; want it refused", name, err)
			}
			if data2, _ := os.ReadFile(path); string(data2) != data {
				t.Errorf("%s: Open rewrote the damaged key file", name)
			}
		}
	})
	t.Run("key file readable by others", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		open(t, Options{Dir: dir, Issuer: "https://gw.example.ts.net"})
		path := filepath.Join(dir, keyFileName)
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		open(t, Options{Dir: dir, Issuer: "https://gw.example.ts.net"})
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("key file mode %v (%v); want 0600", fi.Mode().Perm(), err)
		}
	})
}

// TestOpenOptions refuses options that cannot make good tokens.
func TestOpenOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"no issuer", Options{}},
		{"issuer not a URL", Options{Issuer: "gw.example.ts.net"}},
		{"issuer not http", Options{Issuer: "ftp://gw.example.ts.net"}},
		{"issuer with query", Options{Issuer: "https://gw.example.ts.net/?a=b"}},
		{"unknown algorithm", Options{Issuer: "https://gw.example.ts.net", Algorithm: "RS256"}},
		{"negative TTL", Options{Issuer: "https://gw.example.ts.net", TTL: -time.Minute}},
		{"rotation shorter than TTL", Options{Issuer: "https://gw.example.ts.net", TTL: time.Hour, RotateEvery: time.Minute}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := Open(tc.opts); err == nil {
				t.Errorf("Open(%+v) succeeded", tc.opts)
			}
		})
	}
}

// TestHandler serves public keys only, discovery that points at them,
// with caching allowed, and nothing else.
func TestHandler(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{EdDSA, ES256} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := open(t, Options{Dir: dir, Issuer: "https://gw.example.ts.net", Algorithm: alg})
			if err := s.Rotate(); err != nil { // a retired key too
				t.Fatal(err)
			}
			get := func(method, path string) *httptest.ResponseRecorder {
				rec := httptest.NewRecorder()
				s.Handler().ServeHTTP(rec, httptest.NewRequest(method, path, nil))
				return rec
			}

			rec := get(http.MethodGet, JWKSPath)
			if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" ||
				!strings.Contains(rec.Header().Get("Cache-Control"), "max-age=") {
				t.Errorf("JWKS answer %d %v", rec.Code, rec.Header())
			}
			var set struct {
				Keys []map[string]any `json:"keys"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil {
				t.Fatal(err)
			}
			if len(set.Keys) != 3 {
				t.Errorf("JWKS has %d keys; want current, next and retired", len(set.Keys))
			}
			for _, k := range set.Keys {
				if _, ok := k["d"]; ok {
					t.Errorf("JWKS key %v has a private member", k["kid"])
				}
				if k["alg"] != alg || k["use"] != "sig" || k["kid"] == "" {
					t.Errorf("JWKS key %v", k)
				}
			}
			if data, _ := os.ReadFile(filepath.Join(dir, keyFileName)); !strings.Contains(string(data), `"d"`) {
				t.Error("key file has no private keys")
			}

			rec = get(http.MethodGet, DiscoveryPath)
			var doc map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
				t.Fatal(err)
			}
			if doc["issuer"] != "https://gw.example.ts.net" || doc["jwks_uri"] != "https://gw.example.ts.net"+JWKSPath ||
				!slices.Equal(doc["id_token_signing_alg_values_supported"].([]any), []any{alg}) {
				t.Errorf("discovery %v", doc)
			}

			if rec := get(http.MethodHead, JWKSPath); rec.Code != http.StatusOK || rec.Body.Len() != 0 {
				t.Errorf("HEAD: %d with %d bytes", rec.Code, rec.Body.Len())
			}
			if rec := get(http.MethodPost, JWKSPath); rec.Code != http.StatusMethodNotAllowed {
				t.Errorf("POST: %d", rec.Code)
			}
			if rec := get(http.MethodGet, "/.well-known/other"); rec.Code != http.StatusNotFound {
				t.Errorf("other path: %d", rec.Code)
			}
		})
	}
}

// TestRun rotates on schedule in a synctest bubble: the next key signs
// after RotateEvery, the old one stays published for the TTL and margin,
// and the rotation is persisted.
func TestRun(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		s := open(t, Options{Dir: dir, Issuer: "https://gw.example.ts.net"})
		first, next := s.ring.Load().current.kid(), s.ring.Load().next.kid()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- s.Run(ctx) }()

		time.Sleep(DefaultRotateEvery - time.Second)
		synctest.Wait()
		if kid := s.ring.Load().current.kid(); kid != first {
			t.Fatalf("rotated early, to %s", kid)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if kid := s.ring.Load().current.kid(); kid != next {
			t.Fatalf("signs with %s after RotateEvery; want the next key %s", kid, next)
		}
		if !slices.Contains(publishedKIDs(t, s), first) {
			t.Errorf("retired key unpublished at once")
		}
		if kid := open(t, Options{Dir: dir, Issuer: "https://gw.example.ts.net"}).ring.Load().current.kid(); kid != next {
			t.Errorf("reopened key file signs with %s; want %s", kid, next)
		}
		time.Sleep(DefaultTTL + retireMargin)
		synctest.Wait()
		if slices.Contains(publishedKIDs(t, s), first) {
			t.Errorf("retired key still published after its tokens expired")
		}
		time.Sleep(DefaultRotateEvery)
		synctest.Wait()
		if kid := s.ring.Load().current.kid(); kid == next {
			t.Errorf("no second rotation")
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// fakeKeys is a transport that answers JWKS fetches from a Signer's
// Handler without a network (so that it works in a synctest bubble),
// counting them, or fails them.
type fakeKeys struct {
	signer  *Signer
	fetches atomic.Int32
	fail    atomic.Bool
}

// RoundTrip answers r from the signer's handler.
func (f *fakeKeys) RoundTrip(r *http.Request) (*http.Response, error) {
	f.fetches.Add(1)
	if f.fail.Load() {
		return nil, errors.New("gateway unreachable")
	}
	rec := httptest.NewRecorder()
	f.signer.Handler().ServeHTTP(rec, r)
	return rec.Result(), nil
}

// TestVerifierKeyCache fetches keys once, again when they are stale or a
// token names an unknown key (at most every keysMinRefetch), knows a
// rotated-to key from before it signed, and keeps using cached keys while
// the gateway is unreachable.
func TestVerifierKeyCache(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const issuer = "https://gw.example.ts.net"
		s := open(t, Options{Issuer: issuer})
		f := &fakeKeys{signer: s}
		v := Verifier("", issuer, audienceA, &http.Client{Transport: f})
		stranger := open(t, Options{Issuer: issuer})
		check := func(step string, token string, wantFetches int32, wantErr error) {
			t.Helper()
			err := verifyDirect(t, v, token)
			if (wantErr == nil && err != nil) || (wantErr != nil && !errors.Is(err, wantErr)) {
				t.Errorf("%s: verify: %v; want %v", step, err, wantErr)
			}
			if got := f.fetches.Load(); got != wantFetches {
				t.Errorf("%s: %d fetches; want %d", step, got, wantFetches)
			}
		}

		check("first token", mint(t, s, alice, audienceA), 1, nil)
		check("second token", mint(t, s, alice, audienceA), 1, nil)
		check("unknown key right after a fetch", mint(t, stranger, alice, audienceA), 1, auth.ErrInvalidToken)
		time.Sleep(keysMinRefetch)
		check("unknown key later", mint(t, stranger, alice, audienceA), 2, auth.ErrInvalidToken)
		check("unknown key again", mint(t, stranger, alice, audienceA), 2, auth.ErrInvalidToken)
		if err := s.Rotate(); err != nil {
			t.Fatal(err)
		}
		check("rotated key, published before", mint(t, s, alice, audienceA), 2, nil)
		time.Sleep(keysMaxAge)
		check("stale keys", mint(t, s, alice, audienceA), 3, nil)

		f.fail.Store(true)
		time.Sleep(keysMaxAge)
		check("stale keys, gateway down", mint(t, s, alice, audienceA), 4, nil)
		time.Sleep(keysMinRefetch)
		err := verifyDirect(t, v, mint(t, stranger, alice, audienceA))
		if err == nil || errors.Is(err, auth.ErrInvalidToken) || !strings.Contains(err.Error(), "gateway unreachable") {
			t.Errorf("unknown key, gateway down: %v; want the fetch error, not a refusal", err)
		}
	})
}

// TestToken reuses a token for the same caller and target while it has
// half its lifetime left, and mints anew for another caller, another
// target, a changed grant or after a rotation, in a bounded cache.
func TestToken(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := open(t, Options{Issuer: "https://gw.example.ts.net", Now: clk.Now})
	token := func(id *tsnode.Identity, audience string) string {
		t.Helper()
		tok, expires, err := s.Token(id, audience)
		if err != nil {
			t.Fatal(err)
		}
		if expires.Before(clk.Now().Add(DefaultTTL / 2)) {
			t.Errorf("Token returned one with %v left", expires.Sub(clk.Now()))
		}
		return tok
	}
	first := token(alice, audienceA)
	if again := token(alice, audienceA); again != first {
		t.Error("same caller and target: new token")
	}
	regranted := *alice
	regranted.Caps = map[string][]json.RawMessage{"example.com/cap/mcp": {json.RawMessage(`{"tools":["read"]}`)}}
	for name, tok := range map[string]string{
		"other target":  token(alice, audienceB),
		"other caller":  token(ciRunner, audienceA),
		"other grants":  token(&regranted, audienceA),
		"same identity": token(&tsnode.Identity{NodeName: alice.NodeName, NodeID: alice.NodeID, UserLogin: alice.UserLogin, Caps: alice.Caps, NodeOS: "linux"}, audienceA),
	} {
		if (tok == first) != (name == "same identity") {
			t.Errorf("%s: reused %v", name, tok == first)
		}
	}

	clk.Advance(DefaultTTL/2 - time.Second)
	if token(alice, audienceA) != first {
		t.Error("new token while the cached one had more than half its lifetime")
	}
	clk.Advance(2 * time.Second)
	second := token(alice, audienceA)
	if second == first {
		t.Error("cached token reused with less than half its lifetime left")
	}
	if err := s.Rotate(); err != nil {
		t.Fatal(err)
	}
	if tok := token(alice, audienceA); tok == second || header(t, tok).KeyID != s.ring.Load().current.kid() {
		t.Error("cached token from before the rotation reused")
	}

	s.cacheSize = 3
	for i := range 10 {
		token(alice, "https://t"+string(rune('a'+i))+".example.ts.net")
	}
	s.cacheMu.Lock()
	n := len(s.cache)
	s.cacheMu.Unlock()
	if n > 3 {
		t.Errorf("cache holds %d tokens; bound is 3", n)
	}
}

// TestConcurrentMintAndRotate mints and serves keys while rotating; the
// race detector watches.
func TestConcurrentMintAndRotate(t *testing.T) {
	t.Parallel()
	s := open(t, Options{Dir: t.TempDir(), Issuer: "https://gw.example.ts.net"})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				if _, _, err := s.Token(alice, audienceA); err != nil {
					t.Error(err)
				}
				s.Handler().ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, JWKSPath, nil))
			}
		})
	}
	for range 5 {
		if err := s.Rotate(); err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
}
