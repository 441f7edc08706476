package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"

	"github.com/tailgate-dev/tailgate/gateway/idtoken"
	"github.com/tailgate-dev/tailgate/gateway/oauth"
	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
	"github.com/tailgate-dev/tailgate/tsnode"
)

// BenchmarkRemoteToolCallCredentials is BenchmarkRemoteToolCall's call
// through tailgate to a remote mcp target (go-sdk's Streamable HTTP server
// with the demo tools, on loopback, in this process), side by side:
//
//   - plain: the target as BenchmarkRemoteToolCall's;
//   - callerHeader: with callerHeaders X-Api-Key read from a {file:}
//     source templated by the caller's login (read once, as the caller's
//     link starts; sent on every request);
//   - identityToken: with backendAuth.identityToken, a token tailgate
//     signs for the caller and the target, cached until half its life is
//     gone, so a call costs a cache lookup, not a signature;
//   - oauth: with backendAuth.oauth, the caller connected: her own
//     access token, opened from the sealed store once, then from memory.
//
// The four gateways are started the same way, through Start on a
// loopback network that says it is a tailnet node (loopbackNode), which
// is what gives a gateway its signing keys; the caller is a tailnet
// identity (Options.Identify). The differences between the three are
// the per-call cost of each credential. Each sub-benchmark then checks
// that the target was sent what it should have been: nothing, the
// caller's secret, or one token, the same for every call, that verifies
// against the gateway's JWKS for the caller.
//
//	go test -run '^$' -bench RemoteToolCallCredentials -benchmem -benchtime=2000x -count=3 -timeout 10m ./gateway/
func BenchmarkRemoteToolCallCredentials(b *testing.B) {
	if n := benchClientAllocs(b); n != 0 {
		b.Fatalf("the benchmark client allocates %v times per call", n)
	}
	caller := &tsnode.Identity{NodeName: "laptop.tail1234.ts.net", NodeID: "nLAPTOP", UserLogin: "alice@example.com"}
	const apiKey = "alice-api-key-for-bench"
	secrets := b.TempDir()
	if err := os.WriteFile(filepath.Join(secrets, caller.UserLogin), []byte(apiKey+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}

	// The target notes the credential headers of every request the same
	// way in each case, so that its share of the cost does not differ.
	var seen benchSeenHeaders
	upstream := httptest.NewServer(seen.wrap(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil)))
	b.Cleanup(upstream.Close)
	target := upstream.URL + "/mcp"

	// oauth: alice has connected the target (her record is in the
	// store, sealed under the key the config names).
	oauthDir, oauthKey := b.TempDir(), filepath.Join(b.TempDir(), "oauth.key")
	if err := os.WriteFile(oauthKey, []byte(strings.Repeat("5a", 32)), 0o600); err != nil {
		b.Fatal(err)
	}
	store, err := oauth.NewStore(oauthDir, bytes.Repeat([]byte{0x5a}, 32))
	if err != nil {
		b.Fatal(err)
	}
	const oauthToken = "alice-oauth-access-token"
	if err := store.Put("demo\x00"+target, &oauth.Record{Target: "demo", Login: caller.UserLogin, Resource: target, ClientID: "bench",
		TokenURL: "http://127.0.0.1:1/token", Token: &oauth2.Token{AccessToken: oauthToken, TokenType: "Bearer", Expiry: time.Now().Add(time.Hour)}}); err != nil {
		b.Fatal(err)
	}

	for _, tc := range []struct {
		name, target, global string
		check                func(b *testing.B, addr string, seen benchHeaders)
	}{{
		name:   "plain",
		target: `            mcp: {host: "` + target + `"}`,
		check: func(b *testing.B, _ string, seen benchHeaders) {
			if seen.apiKey != "" || seen.lastAuth != "" {
				b.Errorf("a plain target was sent X-Api-Key %q, Authorization %q", seen.apiKey, seen.lastAuth)
			}
		},
	}, {
		name: "callerHeader",
		target: `            mcp:
              host: "` + target + `"
              callerHeaders:
                X-Api-Key: {file: "` + secrets + `/{login}"}`,
		check: func(b *testing.B, _ string, seen benchHeaders) {
			if seen.apiKey != apiKey {
				b.Errorf("the target was sent X-Api-Key %q; want the caller's secret", seen.apiKey)
			}
		},
	}, {
		name: "identityToken",
		target: `            mcp:
              host: "` + target + `"
              backendAuth: {identityToken: {}}`,
		check: func(b *testing.B, addr string, seen benchHeaders) {
			if seen.firstAuth != seen.lastAuth {
				b.Errorf("the target was sent a new token during the run: tokens are signed per call, not cached")
			}
			tok, ok := strings.CutPrefix(seen.lastAuth, "Bearer ")
			if !ok {
				b.Fatalf("the target was sent Authorization %q; want a bearer token", seen.lastAuth)
			}
			issuer := benchIssuer(b, addr)
			info, err := idtoken.Verifier("http://"+addr+idtoken.JWKSPath, issuer, target, nil)(context.Background(), tok, nil)
			if err != nil || info.UserID != caller.UserLogin {
				b.Errorf("the target's token: %v %+v; want one that names %s", err, info, caller.UserLogin)
			}
		},
	}, {
		name:   "oauth",
		global: "config:\n  oauth: {key: {file: " + oauthKey + "}, dir: " + oauthDir + "}\n",
		target: `            mcp:
              host: "` + target + `"
              backendAuth: {oauth: {}}`,
		check: func(b *testing.B, _ string, seen benchHeaders) {
			if seen.firstAuth != "Bearer "+oauthToken || seen.lastAuth != seen.firstAuth {
				b.Errorf("the target was sent Authorization %q, then %q; want alice's own token", seen.firstAuth, seen.lastAuth)
			}
		},
	}} {
		b.Run(tc.name, func(b *testing.B) {
			seen.reset()
			addr := startNodeBenchGateway(b, tc.global+remoteConfigTarget(tc.target), caller)
			benchCallsTo(b, addr)
			b.StopTimer()
			tc.check(b, addr, seen.snapshot())
		})
	}
}

// remoteConfigTarget is demoConfig with target (YAML lines at the
// target's indentation, after its name) in place of the demo stdio
// server.
func remoteConfigTarget(target string) string {
	return strings.Replace(demoConfig, `            stdio: {cmd: DEMO}`, target, 1)
}

// startNodeBenchGateway serves cfgYAML as a tailnet gateway would, but on
// 127.0.0.1: through Start on loopbackNode, a network with a MagicDNS
// name (so the gateway opens its signing keys, in memory), every client
// identified as caller. It returns the address it listens on.
func startNodeBenchGateway(b *testing.B, cfgYAML string, caller *tsnode.Identity) string {
	b.Helper()
	cfg, err := Parse("bench.yaml", []byte(cfgYAML), newEnv(b))
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(cfg, Options{
		// A text handler, not a discarding one: the access log is part
		// of what a call costs.
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		StopGrace: 500 * time.Millisecond,
		Identify:  identifyAs(caller),
	})
	if err != nil {
		b.Fatal(err)
	}
	node := &loopbackNode{}
	if err := s.Start(node); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return node.ln.Addr().String()
}

// benchIssuer is the issuer in the discovery document of the gateway at
// addr.
func benchIssuer(b *testing.B, addr string) string {
	b.Helper()
	resp, err := http.Get("http://" + addr + idtoken.DiscoveryPath)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Issuer string `json:"issuer"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || doc.Issuer == "" {
		b.Fatalf("discovery document: %d %v", resp.StatusCode, err)
	}
	return doc.Issuer
}

// benchHeaders are the credential headers a benchmark's target was
// sent: X-Api-Key of the last request, Authorization of the first and
// the last.
type benchHeaders struct {
	apiKey, firstAuth, lastAuth string
	requests                    int
}

// benchSeenHeaders notes a target's benchHeaders as requests come;
// noting them allocates nothing.
type benchSeenHeaders struct {
	mu sync.Mutex
	benchHeaders
}

// wrap notes each request's headers before h serves it.
func (s *benchSeenHeaders) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.apiKey, s.lastAuth = r.Header.Get("X-Api-Key"), r.Header.Get("Authorization")
		if s.requests == 0 {
			s.firstAuth = s.lastAuth
		}
		s.requests++
		s.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// reset forgets what was seen.
func (s *benchSeenHeaders) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.benchHeaders = benchHeaders{}
}

// snapshot is a copy of what was seen so far.
func (s *benchSeenHeaders) snapshot() benchHeaders {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.benchHeaders
}
