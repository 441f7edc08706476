package integration

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/tailscale/setec/acl"
	"github.com/tailscale/setec/server"
	"github.com/tailscale/setec/setectest"
	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/tailcfg"

	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

// These tests are issue 21's acceptance for per-caller secrets, as users
// notice them over the in-process tailnet: each caller's stdio child and
// each caller's link to a remote target carry that caller's own secret
// (read from a file per login, or from a real setec server on the
// tailnet), a caller without one gets an MCP error that says which target
// needs what, policy sees whether a caller has a secret, and no secret
// value reaches the gateway's log, its metrics or any error a client sees.

// secretsSeen collects what a leak scan looks through besides the log:
// every secret value the test handed out and every error a client saw.
type secretsSeen struct {
	mu     sync.Mutex
	values []string
	errs   []string
}

// secret registers value as a secret the scan must not find, and
// returns it.
func (s *secretsSeen) secret(value string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values = append(s.values, value)
	return value
}

// sawError records the message of err, an error a client saw.
func (s *secretsSeen) sawError(err error) {
	if err == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, err.Error())
}

// scan fails t for each secret value found in the gateway's log, its
// /metrics or an error a client saw.
func (s *secretsSeen) scan(t *testing.T, gw *gatewaytest.Gateway, logs *gatewaytest.Logs) {
	t.Helper()
	rec := httptest.NewRecorder()
	gw.Server.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	metrics := rec.Body.String()
	if rec.Code != http.StatusOK || !strings.Contains(metrics, "tailgate_") {
		t.Fatalf("/metrics answered %d with %d bytes, want tailgate's metrics", rec.Code, len(metrics))
	}
	log := logs.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) == 0 || log == "" {
		t.Fatalf("nothing to scan: %d client errors, %d bytes of log", len(s.errs), len(log))
	}
	for _, v := range s.values {
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, v) {
				t.Errorf("the gateway's log carries secret %q: %s", v, line)
			}
		}
		if strings.Contains(metrics, v) {
			t.Errorf("/metrics carries secret %q", v)
		}
		for _, e := range s.errs {
			if strings.Contains(e, v) {
				t.Errorf("a client's error carries secret %q: %s", v, e)
			}
		}
	}
	t.Logf("scanned %d bytes of log, %d bytes of /metrics and %d client errors for %d secret values", len(log), len(metrics), len(s.errs), len(s.values))
}

// writeSecret writes value as the secret file dir/name (created 0700).
func writeSecret(t *testing.T, dir, name, value string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// envOfChild calls the demo server's env tool in cs and returns the
// values the child has of names.
func envOfChild(t *testing.T, cs *mcp.ClientSession, names ...string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "env", Arguments: map[string]any{"names": names}})
	if err != nil {
		t.Fatalf("env: %v", err)
	}
	if res.IsError {
		t.Fatalf("env answered an error: %s", resultText(res))
	}
	raw, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	var out demoserver.EnvOut
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("env answered %s: %v", raw, err)
	}
	return out.Values
}

// connectSessionless opens an unpinned go-sdk client from n to url: it
// speaks MCP 2026-07-28, without a session, so the gateway serves it from
// children kept for n.
func connectSessionless(ctx context.Context, n *gatewaytest.Node, url string) (*mcp.ClientSession, error) {
	c := mcp.NewClient(&mcp.Implementation{Name: n.Name + "-sessionless"}, nil)
	return c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: n.Client(), MaxRetries: -1}, nil)
}

// refusedFor checks that connect, a caller's attempt to use a target
// it lacks a secret for, fails with an error that holds every one of
// want, and records the error for the leak scan. A sessionless client
// may connect (server/discover needs no child) and be refused at its
// first call instead; the call is tried then.
func refusedFor(t *testing.T, seen *secretsSeen, who string, connect func(context.Context) (*mcp.ClientSession, error), want ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := connect(ctx)
	if err == nil {
		_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}})
		cs.Close()
	}
	if err == nil {
		t.Fatalf("%s was served without the secret", who)
	}
	seen.sawError(err)
	var wire *jsonrpc.Error
	if !errors.As(err, &wire) {
		t.Errorf("%s: %v, want an MCP (JSON-RPC) error", who, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s's error does not say %q: %v", who, w, err)
		}
	}
	t.Logf("%s was told: %v", who, err)
}

// TestCallerSecrets runs one gateway, on a tailnet of alice, bob, carol
// (a person with no secrets), a tag:ci runner and a remote MCP server,
// with three routes: /gh, a stdio target whose GITHUB_TOKEN is the
// caller's own file (and whose args name it); /tickets, a remote target
// sent the caller's X-Api-Key and Authorization: Bearer; /policy, a
// stdio target behind a rule on mcp.secrets. After the subtests it scans
// the log, /metrics and every error the clients saw for the secrets.
func TestCallerSecrets(t *testing.T) {
	tm := newTeam(t)
	carol := tm.tn.Node(t, "carol-laptop")
	carolID := carol.Login(t)
	if carolID == tm.aliceID || carolID == tm.bobID {
		t.Fatalf("carol shares login %s", carolID)
	}

	// The remote target records, per request, who tailgate says calls
	// (identityHeaders) and the caller's secrets as it received them.
	type upstreamRequest struct{ login, apiKey, auth string }
	var upMu sync.Mutex
	var upstream []upstreamRequest
	tm.tn.Node(t, "tickets").RemoteMCP(t, "8080", demoserver.New(), nil, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			upMu.Lock()
			upstream = append(upstream, upstreamRequest{r.Header.Get("X-Tailgate-User-Login"), r.Header.Get("X-Api-Key"), r.Header.Get("Authorization")})
			upMu.Unlock()
			h.ServeHTTP(w, r)
		})
	})

	dir := t.TempDir()
	var seen secretsSeen
	var logs gatewaytest.Logs
	// The gh child's argument carries its token ("${GITHUB_TOKEN}"),
	// which a wrapper hands on as TOKEN_ARG for the env tool to report.
	// The loud child is gh's that also prints its token on stderr, as
	// servers that log their settings do: the gateway logs its stderr,
	// and must redact the token there.
	gw := tm.tn.Gateway(t, gatewaytest.ParseConfig(t, `
binds:
- port: 3000
  listeners:
  - routes:
    - name: gh
      matches: [{path: {exact: /gh}}]
      backends:
      - mcp:
          targets:
          - name: gh
            stdio:
              cmd: /bin/sh
              args: ["-c", "export TOKEN_ARG=\"$1\"; exec $DEMO", "sh", "--token=${GITHUB_TOKEN}"]
              callerEnv:
                GITHUB_TOKEN: {file: "`+dir+`/gh/{login}"}
    - name: loud
      matches: [{path: {exact: /loud}}]
      backends:
      - mcp:
          targets:
          - name: loud
            stdio:
              cmd: /bin/sh
              args: ["-c", "echo \"loud child starting with token $GITHUB_TOKEN\" >&2; exec $DEMO"]
              callerEnv:
                GITHUB_TOKEN: {file: "`+dir+`/gh/{login}"}
    - name: tickets
      matches: [{path: {exact: /tickets}}]
      backends:
      - mcp:
          targets:
          - name: tickets
            mcp:
              host: http://tickets:8080/mcp
              identityHeaders: true
              callerHeaders:
                X-Api-Key: {file: "`+dir+`/apikey/{login}"}
              backendAuth:
                key: {file: "`+dir+`/bearer/{login}"}
    - name: policy
      matches: [{path: {exact: /policy}}]
      policies:
        mcpAuthorization:
          rules:
          - 'mcp.tool.name == "echo"'
          - 'mcp.tool.name == "env" && mcp.secrets["GITHUB_TOKEN"]'
      backends:
      - mcp:
          targets:
          - name: gh
            stdio:
              cmd: $DEMO
              callerEnv:
                GITHUB_TOKEN: {file: "`+dir+`/policy/{login}"}
`), gatewaytest.CaptureLogs(&logs))
	ghURL := gw.URL(3000, "/gh")

	// Each caller's child has that caller's token, in its environment and
	// in its argument; whoever has no file is refused, saying so; a
	// rewritten file reaches the caller's next child.
	t.Run("stdio", func(t *testing.T) {
		tokens := map[string]string{
			tm.aliceID: seen.secret("ghp-alice-0f3b9c1d7e2a"),
			tm.bobID:   seen.secret("ghp-bob-8a4e6d2c0b1f"),
		}
		for login, tok := range tokens {
			writeSecret(t, filepath.Join(dir, "gh"), login, tok)
		}
		check := func(who, login string, cs *mcp.ClientSession) {
			t.Helper()
			env := envOfChild(t, cs, "GITHUB_TOKEN", "TOKEN_ARG")
			if want := tokens[login]; env["GITHUB_TOKEN"] != want || env["TOKEN_ARG"] != "--token="+want {
				t.Errorf("%s's child has GITHUB_TOKEN %q and argument %q, want %q", who, env["GITHUB_TOKEN"], env["TOKEN_ARG"], want)
			}
		}
		check("alice", tm.aliceID, tm.alice.MCP(t, gw, 3000, "/gh"))
		check("bob", tm.bobID, tm.bob.MCP(t, gw, 3000, "/gh"))

		// Sessionless (2026-07-28) clients are served by children kept per
		// caller: each has its caller's token too.
		for _, c := range []struct {
			who   string
			node  *gatewaytest.Node
			login string
		}{{"alice", tm.alice, tm.aliceID}, {"bob", tm.bob, tm.bobID}} {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			cs, err := connectSessionless(ctx, c.node, ghURL)
			cancel()
			if err != nil {
				t.Fatalf("%s sessionless: %v", c.who, err)
			}
			if id := cs.ID(); id != "" {
				t.Errorf("%s's unpinned client got session %q, want none", c.who, id)
			}
			check(c.who+" (sessionless)", c.login, cs)
			cs.Close()
		}

		// Carol has no file: her session, and her unpinned client (which
		// tries 2026-07-28 first), are refused with an error naming the
		// target, the secret, her and the file she lacks.
		carolFile := filepath.Join(dir, "gh", carolID)
		for _, how := range []struct {
			who     string
			connect func(context.Context) (*mcp.ClientSession, error)
		}{
			{"carol", func(ctx context.Context) (*mcp.ClientSession, error) { return carol.Connect(ctx, ghURL, nil) }},
			{"carol (unpinned)", func(ctx context.Context) (*mcp.ClientSession, error) { return connectSessionless(ctx, carol, ghURL) }},
		} {
			refusedFor(t, &seen, how.who, how.connect, `target "gh"`, "GITHUB_TOKEN", carolID, carolFile, "does not exist")
		}
		// A tagged caller has no login of its own to name its file by.
		refusedFor(t, &seen, "ci", func(ctx context.Context) (*mcp.ClientSession, error) { return tm.ci.Connect(ctx, ghURL, nil) },
			`target "gh"`, "GITHUB_TOKEN", "tagged node", "{node}")

		// Alice's token changes: her next session's child has the new one.
		tokens[tm.aliceID] = seen.secret("ghp-alice-rotated-5c7d9e1f3a")
		writeSecret(t, filepath.Join(dir, "gh"), tm.aliceID, tokens[tm.aliceID])
		check("alice after rotation", tm.aliceID, tm.alice.MCP(t, gw, 3000, "/gh"))
	})

	// A child that prints its caller's token on stderr has the line
	// logged with the token redacted (the scan below finds it otherwise).
	t.Run("stderr", func(t *testing.T) {
		envOfChild(t, tm.alice.MCP(t, gw, 3000, "/loud"), "GITHUB_TOKEN")
		// The line is logged as the child starts; the env call answered
		// after the child's first stderr line was read, but not
		// necessarily this one's log record: wait for it.
		deadline := time.Now().Add(10 * time.Second)
		for !logs.Contains("loud child starting with token") && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if !logs.Contains("loud child starting with token [redacted]") {
			t.Error(`the child's stderr line "loud child starting with token …" was not logged redacted`)
		}
	})

	// Each caller's link to the remote target carries that caller's
	// X-Api-Key and Authorization: Bearer; whoever has none is refused.
	t.Run("remote", func(t *testing.T) {
		keys := map[string][2]string{
			tm.aliceID: {seen.secret("tk-alice-api-4d2f8b6a"), seen.secret("tk-alice-bearer-9e1c3a5b")},
			tm.bobID:   {seen.secret("tk-bob-api-7b3e1d9c"), seen.secret("tk-bob-bearer-2a8f6c4e")},
		}
		for login, k := range keys {
			writeSecret(t, filepath.Join(dir, "apikey"), login, k[0])
			writeSecret(t, filepath.Join(dir, "bearer"), login, k[1])
		}
		for _, n := range []*gatewaytest.Node{tm.alice, tm.bob} {
			cs := n.MCP(t, gw, 3000, "/tickets")
			res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": n.Name}})
			if err != nil {
				t.Fatalf("%s: %v", n.Name, err)
			}
			if got := strings.TrimSpace(resultText(res)); got != n.Name {
				t.Errorf("%s's echo answered %q", n.Name, got)
			}
		}
		refusedFor(t, &seen, "carol", func(ctx context.Context) (*mcp.ClientSession, error) {
			return carol.Connect(ctx, gw.URL(3000, "/tickets"), nil)
		}, `target "tickets"`, "secret header", carolID, "does not exist")

		upMu.Lock()
		defer upMu.Unlock()
		served := map[string]int{}
		for _, r := range upstream {
			k, ok := keys[r.login]
			if !ok {
				t.Errorf("the remote target got a request for %q, who has no keys", r.login)
				continue
			}
			served[r.login]++
			if r.apiKey != k[0] || r.auth != "Bearer "+k[1] {
				t.Errorf("a request for %s carried X-Api-Key %q and Authorization %q, want %q and %q", r.login, r.apiKey, r.auth, k[0], "Bearer "+k[1])
			}
		}
		if served[tm.aliceID] == 0 || served[tm.bobID] == 0 {
			t.Errorf("the remote target served alice %d and bob %d requests, want some each", served[tm.aliceID], served[tm.bobID])
		}
	})

	// A rule on mcp.secrets sees whether the caller has the secret now:
	// both have it and may call env; once bob's is taken away, his
	// running session no longer lists env and his call is refused, while
	// alice's goes on and bob may still call echo.
	t.Run("policy", func(t *testing.T) {
		tokens := map[string]string{
			tm.aliceID: seen.secret("ghp-policy-alice-3e5a7c9b"),
			tm.bobID:   seen.secret("ghp-policy-bob-6f8d0b2e"),
		}
		for login, tok := range tokens {
			writeSecret(t, filepath.Join(dir, "policy"), login, tok)
		}
		alice, bob := tm.alice.MCP(t, gw, 3000, "/policy"), tm.bob.MCP(t, gw, 3000, "/policy")
		for _, c := range []struct {
			who   string
			cs    *mcp.ClientSession
			login string
		}{{"alice", alice, tm.aliceID}, {"bob", bob, tm.bobID}} {
			if got := toolNames(t, c.cs); !slices.Contains(got, "env") {
				t.Errorf("%s, who has the secret, is not shown env: %v", c.who, got)
			}
			if got := envOfChild(t, c.cs, "GITHUB_TOKEN")["GITHUB_TOKEN"]; got != tokens[c.login] {
				t.Errorf("%s's child has GITHUB_TOKEN %q, want %q", c.who, got, tokens[c.login])
			}
		}

		if err := os.Remove(filepath.Join(dir, "policy", tm.bobID)); err != nil {
			t.Fatal(err)
		}
		if got := toolNames(t, bob); slices.Contains(got, "env") || !slices.Contains(got, "echo") {
			t.Errorf("bob, without the secret, is shown %v; want echo and not env", got)
		}
		_, err := bob.CallTool(context.Background(), &mcp.CallToolParams{Name: "env", Arguments: map[string]any{"names": []string{"GITHUB_TOKEN"}}})
		seen.sawError(err)
		var wire *jsonrpc.Error
		if !errors.As(err, &wire) || !strings.Contains(wire.Message, "not permitted by tailgate policy") {
			t.Errorf("bob's env call without the secret: %v, want a policy denial", err)
		}
		if _, err := bob.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err != nil {
			t.Errorf("bob's echo after the denial: %v", err)
		}
		if got := toolNames(t, alice); !slices.Contains(got, "env") {
			t.Errorf("alice, who still has the secret, is not shown env: %v", got)
		}
		if got := envOfChild(t, alice, "GITHUB_TOKEN")["GITHUB_TOKEN"]; got != tokens[tm.aliceID] {
			t.Errorf("alice's child has GITHUB_TOKEN %q after bob's was removed", got)
		}
	})

	seen.scan(t, gw, &logs)
}

// TestSetecSecretsOverTheTailnet runs a real setec server (setectest's,
// its database and HTTP API) on a node of the tailnet: tailgate reads a
// caller's secret from it over WireGuard as its own node, and a stdio
// child gets it. Once setec is stopped, a new session of that target is
// refused with an error naming setec, and the gateway stays up: its other
// route serves, the target serves again once setec is back, and nothing
// it logged, counted or answered carries the secret.
func TestSetecSecretsOverTheTailnet(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	// The tailnet policy grants setec's "get" on tailgate/* (its
	// capability tailscale.com/cap/secrets) to every node, as a grant
	// {"src": ["*"], "dst": ["*"], "app": …} would; set before any node
	// joins, so every netmap has it.
	rule, err := json.Marshal(acl.Rule{Action: []acl.Action{acl.ActionGet}, Secret: []acl.Secret{"tailgate/*"}})
	if err != nil {
		t.Fatal(err)
	}
	tn.Control.SetGlobalAppCaps(tailcfg.PeerCapMap{server.ACLCap: {tailcfg.RawMessage(rule)}})
	setecNode := tn.Node(t, "setec")
	laptop := tn.Node(t, "laptop")
	login := laptop.Login(t)

	var seen secretsSeen
	db := setectest.NewDB(t, nil)
	value := seen.secret("setec-gh-token-1b3d5f7a9c")
	db.MustPut(db.Superuser, "tailgate/gh/"+login, value)

	// setec identifies its callers by WhoIs of the connection's remote
	// address (server.Config.WhoIs); setectest lets the test supply it,
	// and here it is the setec node's own, real WhoIs from its tailnet
	// node, so tailgate is known by its tailnet identity and granted what
	// the tailnet policy grants it. The wrapper only records who asked.
	lc, err := setecNode.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	var askMu sync.Mutex
	var askedBy []string
	whois := func(ctx context.Context, addr string) (*apitype.WhoIsResponse, error) {
		who, err := lc.WhoIs(ctx, addr)
		if err == nil {
			askMu.Lock()
			askedBy = append(askedBy, who.Node.Name)
			askMu.Unlock()
		}
		return who, err
	}
	ss := setectest.NewServer(t, db, &setectest.ServerOptions{WhoIs: whois})
	ln, err := setecNode.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	setecServer := &http.Server{Handler: ss.Mux}
	go setecServer.Serve(ln)
	t.Cleanup(func() { setecServer.Close() })

	var logs gatewaytest.Logs
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, `
config:
  secrets:
    setec: {url: "http://setec:8080", timeout: 5s}
binds:
- port: 3000
  listeners:
  - routes:
    - name: gh
      matches: [{path: {exact: /gh}}]
      backends:
      - mcp:
          targets:
          - name: gh
            stdio:
              cmd: $DEMO
              callerEnv:
                GITHUB_TOKEN: {setec: "tailgate/gh/{login}"}
    - name: plain
      matches: [{path: {exact: /plain}}]
      backends:
      - mcp:
          targets:
          - name: plain
            stdio: {cmd: $DEMO}
`), gatewaytest.CaptureLogs(&logs))

	if got := envOfChild(t, laptop.MCP(t, gw, 3000, "/gh"), "GITHUB_TOKEN")["GITHUB_TOKEN"]; got != value {
		t.Fatalf("the child has GITHUB_TOKEN %q, want the setec secret %q", got, value)
	}
	askMu.Lock()
	asked := slices.Clone(askedBy)
	askMu.Unlock()
	if len(asked) == 0 {
		t.Fatal("setec was never asked who calls")
	}
	for _, name := range asked {
		if !strings.HasPrefix(name, "tailgate.") {
			t.Errorf("setec was called by %q, want tailgate's own node", name)
		}
	}

	// setec goes down.
	if err := setecServer.Close(); err != nil {
		t.Fatal(err)
	}
	refusedFor(t, &seen, "laptop with setec down", func(ctx context.Context) (*mcp.ClientSession, error) {
		return laptop.Connect(ctx, gw.URL(3000, "/gh"), nil)
	}, `target "gh"`, "GITHUB_TOKEN", "setec secret tailgate/gh/"+login, "setec server")

	// The gateway is up: the route without secrets serves. (Readiness is
	// cmd/tailgate's to set, so /healthz/ready says nothing here.)
	cs := laptop.MCP(t, gw, 3000, "/plain")
	if res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "still up"}}); err != nil || strings.TrimSpace(resultText(res)) != "still up" {
		t.Errorf("the route without secrets after setec went down: %v", err)
	}

	// setec comes back: the next session of the target gets its secret
	// again, without a restart of the gateway.
	ln, err = setecNode.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	setecAgain := &http.Server{Handler: ss.Mux}
	go setecAgain.Serve(ln)
	t.Cleanup(func() { setecAgain.Close() })
	if got := envOfChild(t, laptop.MCP(t, gw, 3000, "/gh"), "GITHUB_TOKEN")["GITHUB_TOKEN"]; got != value {
		t.Errorf("after setec came back, the child has GITHUB_TOKEN %q, want the setec secret", got)
	}

	seen.scan(t, gw, &logs)
}
