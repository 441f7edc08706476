package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
	"github.com/tailgate-dev/tailgate/policy"
	"github.com/tailgate-dev/tailgate/tsnode"
)

// explainConfig has a route only tag:ops may enter, and a team route
// whose tools are allowed and denied by login, by tag, by grant and by
// whether the caller has a per-caller secret (the keyed target's, read
// from KEYS/{login}).
const explainConfig = `
frontendPolicies:
  networkAuthorization:
    rules:
    - deny: 'source.tailscale.user.login == "mallory@example.com"'
binds:
- port: 3000
  listeners:
  - name: default
    protocol: HTTP
    routes:
    - name: ops
      matches: [{path: {pathPrefix: /ops}}]
      policies:
        authorization:
          rules:
          - require: '"tag:ops" in source.tailscale.node.tags'
      backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: DEMO, env: {TAILGATE_DEMO_PIDDIR: PIDS}}
    - name: team
      policies:
        mcpAuthorization:
          rules:
          - 'mcp.tool.name in ["echo", "add"]'
          - 'mcp.tool.name == "env" && source.tailscale.user.login == "alice@example.com"'
          - deny: '"tag:ci" in source.tailscale.node.tags && mcp.tool.name != "add"'
          - 'mcp.method == "prompts/get"'
          - '"example.com/cap/tailgate" in source.tailscale.caps && source.tailscale.caps["example.com/cap/tailgate"].exists(c, has(c.tools) && mcp.tool.name in c.tools)'
          - 'mcp.tool.target == "keyed" && mcp.secrets["TOKEN"]'
      backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: DEMO, env: {TAILGATE_DEMO_PIDDIR: PIDS}}
          - name: keyed
            stdio:
              cmd: DEMO
              env: {TAILGATE_DEMO_PIDDIR: PIDS}
              callerEnv: {TOKEN: {file: "KEYS/{login}"}}
`

const (
	teamRules = "binds[0].listeners[0].routes[1].policies.mcpAuthorization.rules"
	opsRule   = "binds[0].listeners[0].routes[0].policies.authorization.rules[0]"
)

// explainServer serves explainConfig on loopback, every connection
// identified as alice@example.com (alice-laptop), who has the keyed
// target's secret. It returns the server, its URL and the demo servers'
// pid directory.
func explainServer(t *testing.T) (*Server, string, string) {
	t.Helper()
	pids, keys := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(keys, "alice@example.com"), []byte("alice-token-1234"), 0o600); err != nil {
		t.Fatal(err)
	}
	alice := func(_ context.Context, remote netip.AddrPort) (*policy.Source, error) {
		return &policy.Source{Address: remote.Addr().String(), Port: int(remote.Port()), Tailscale: tailscaleSource(&tsnode.Identity{
			NodeName: "alice-laptop.example.ts.net", NodeHostname: "alice-laptop", NodeID: "nALICE", UserLogin: "alice@example.com",
		})}, nil
	}
	cfg := strings.NewReplacer("PIDS", pids, "KEYS", keys).Replace(explainConfig)
	s, base := serveLoopbackOpts(t, cfg, Options{Logger: slog.New(slog.NewTextHandler(demoserver.LogWriter(t), nil)), Identify: alice})
	return s, base, pids
}

// findItem is the explanation of the item of kind named name on a route's
// target, or fails the test.
func findItem(t *testing.T, ex *Explanation, route, target, kind, name string) ItemExplained {
	t.Helper()
	for _, re := range ex.Routes {
		for _, te := range re.Targets {
			if re.Name != route || te.Name != target {
				continue
			}
			for _, k := range itemKinds {
				if k.name != kind {
					continue
				}
				for _, it := range k.of(&te) {
					if it.Name == name {
						return it
					}
				}
			}
		}
	}
	t.Fatalf("route %s: target %s lists no %s %q", route, target, kind, name)
	return ItemExplained{}
}

// runningPIDs are the demo servers started with pid directory dir that
// are still running.
func runningPIDs(t *testing.T, dir string) []int {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var running []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && !strings.Contains(string(stat), ") Z ") {
				running = append(running, pid)
			}
		}
	}
	return running
}

// Each identity is told, item by item, what it may use and which rule
// decided: by login, by tag, by grant, by route authorization and by
// networkAuthorization; the children started to list the targets are
// gone when Explain returns.
func TestExplainRules(t *testing.T) {
	s, _, pids := explainServer(t)
	type want struct {
		route, target, kind, name string
		allow                     bool
		rule                      string
	}
	for _, tt := range []struct {
		who   ExplainIdentity
		wants []want
	}{
		{ExplainIdentity{Login: "alice@example.com"}, []want{
			{"team", "demo", "tool", "demo_echo", true, teamRules + "[0]"},
			{"team", "demo", "tool", "demo_env", true, teamRules + "[1]"},
			{"team", "demo", "tool", "demo_exit", false, teamRules},
			{"team", "demo", "prompt", "demo_greet", true, teamRules + "[3]"},
			{"team", "demo", "resource", "demo+demo://readme", false, teamRules},
			{"ops", "demo", "tool", "echo", false, opsRule},
		}},
		{ExplainIdentity{Login: "bob@example.com", Caps: map[string][]json.RawMessage{"example.com/cap/tailgate": {json.RawMessage(`{"tools":["info"]}`)}}}, []want{
			{"team", "demo", "tool", "demo_env", false, teamRules},
			{"team", "demo", "tool", "demo_info", true, teamRules + "[4]"},
		}},
		{ExplainIdentity{Tags: []string{"tag:ci"}}, []want{
			{"team", "demo", "tool", "demo_add", true, teamRules + "[0]"},
			{"team", "demo", "tool", "demo_echo", false, teamRules + "[2]"},
		}},
		{ExplainIdentity{Tags: []string{"tag:ops"}}, []want{
			{"ops", "demo", "tool", "exit", true, ""},
		}},
		{ExplainIdentity{Login: "mallory@example.com"}, []want{
			{"team", "demo", "tool", "demo_add", false, "frontendPolicies.networkAuthorization.rules[0]"},
		}},
	} {
		ex, err := s.Explain(t.Context(), tt.who)
		if err != nil {
			t.Fatalf("%+v: %v", tt.who, err)
		}
		for _, w := range tt.wants {
			it := findItem(t, ex, w.route, w.target, w.kind, w.name)
			if it.Allow != w.allow || it.Rule != w.rule {
				t.Errorf("%s %s %s on %s: allow %v by %q (%s), want allow %v by %q", tt.who.Login+strings.Join(tt.who.Tags, ","), w.kind, w.name, w.route, it.Allow, it.Rule, it.Reason, w.allow, w.rule)
			}
		}
	}
	if running := runningPIDs(t, pids); len(running) > 0 {
		t.Errorf("children still running after the explanations: %v", running)
	}
}

// A target whose children start with the caller's own secrets is not
// started for an identity only asked about: it says so while no caller's
// child of it runs, and once alice's session runs one, it is listed by
// that child, with mcp.secrets read for who is explained (alice has the
// secret's file, bob not).
func TestExplainPerCallerSecrets(t *testing.T) {
	s, base, _ := explainServer(t)
	ex, err := s.Explain(t.Context(), ExplainIdentity{Login: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	var keyed TargetExplained
	for _, te := range ex.Routes[1].Targets {
		if te.Name == "keyed" {
			keyed = te
		}
	}
	if !strings.Contains(keyed.Error, "not started") || !strings.Contains(keyed.Error, "no caller's child of it runs") || len(keyed.Tools) > 0 {
		t.Fatalf("keyed target with no child running: %+v", keyed)
	}

	cs := connect(t, base+"/mcp") // alice's session: a keyed child with her token
	defer cs.Close()
	for _, tt := range []struct {
		login string
		allow bool
		rule  string
	}{
		{"alice@example.com", true, teamRules + "[5]"},
		{"bob@example.com", false, teamRules},
	} {
		ex, err := s.Explain(t.Context(), ExplainIdentity{Login: tt.login})
		if err != nil {
			t.Fatal(err)
		}
		it := findItem(t, ex, "team", "keyed", "tool", "keyed_info")
		if it.Allow != tt.allow || it.Rule != tt.rule {
			t.Errorf("%s: keyed_info allow %v by %q (%s), want %v by %q", tt.login, it.Allow, it.Rule, it.Reason, tt.allow, tt.rule)
		}
		for _, te := range ex.Routes[1].Targets {
			if te.Name == "keyed" && (te.Error != "" || !strings.Contains(te.Note, "another caller's running child")) {
				t.Errorf("%s: keyed target listed by alice's child: error %q, note %q", tt.login, te.Error, te.Note)
			}
		}
	}
}

// The admin address's GET /explain answers JSON, or text when asked, and
// 400 naming the mistake for a query that says no one or says it wrongly.
func TestExplainAdminEndpoint(t *testing.T) {
	s, _, _ := explainServer(t)
	admin := httptest.NewServer(s.AdminHandler())
	defer admin.Close()
	get := func(query, accept string) (int, string, string) {
		req, _ := http.NewRequest(http.MethodGet, admin.URL+"/explain?"+query, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
	}
	who := ExplainIdentity{Tags: []string{"tag:ci"}, Node: "ci-runner.example.ts.net"}
	code, ctype, body := get(who.Query().Encode(), "")
	var ex Explanation
	if code != http.StatusOK || ctype != "application/json" || json.Unmarshal([]byte(body), &ex) != nil {
		t.Fatalf("JSON: %d %s %s", code, ctype, body)
	}
	if ex.Identity.Login != "tagged-devices" || ex.Identity.Node != "ci-runner.example.ts.net" || ex.Real {
		t.Errorf("identity as explained: %+v, real %v", ex.Identity, ex.Real)
	}
	for _, accept := range []string{"text/plain", ""} {
		query := who.Query()
		if accept == "" {
			query.Set("format", "text")
		}
		code, ctype, body = get(query.Encode(), accept)
		if code != http.StatusOK || !strings.HasPrefix(ctype, "text/plain") || !strings.Contains(body, "TARGET  KIND") || !regexp.MustCompile(`may use: 1 of \d+ tools`).MatchString(body) {
			t.Errorf("text (Accept %q): %d %s\n%s", accept, code, ctype, body)
		}
	}
	for _, tt := range []struct{ query, says string }{
		{"", "say who"},
		{"tags=ci", `"ci" is not a tag`},
		{"login=a@b.c&logn=x", `unknown parameter "logn"`},
		{"login=a@b.c&caps=" + url.QueryEscape(`{"x": 1}`), "caps: want a JSON object"},
		{"peer=100.64.0.1&login=a@b.c", "names a real node"},
	} {
		if code, _, body := get(tt.query, ""); code != http.StatusBadRequest || !strings.Contains(body, tt.says) {
			t.Errorf("?%s: %d %q, want 400 saying %q", tt.query, code, body, tt.says)
		}
	}
}

// A caller asks what it may use at WhoamiPath: its own identity, only the
// routes it gets into and the items it may use there, listed by its own
// children (the keyed target's too, with its secret).
func TestExplainWhoami(t *testing.T) {
	_, base, _ := explainServer(t)
	resp, err := http.Get(base + WhoamiPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ex Explanation
	if err := json.NewDecoder(resp.Body).Decode(&ex); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %v", resp.StatusCode, err)
	}
	if !ex.Self || !ex.Real || ex.Identity.Login != "alice@example.com" || len(ex.Routes) != 1 || ex.Routes[0].Name != "team" {
		t.Fatalf("whoami: self %v real %v identity %+v routes %d", ex.Self, ex.Real, ex.Identity, len(ex.Routes))
	}
	var tools []string
	for _, te := range ex.Routes[0].Targets {
		if te.Error != "" {
			t.Errorf("target %s: %s", te.Name, te.Error)
		}
		for _, it := range te.Tools {
			tools = append(tools, it.Name)
		}
	}
	if got := strings.Join(tools, " "); !strings.Contains(got, "demo_env") || strings.Contains(got, "demo_exit") || !strings.Contains(got, "keyed_exit") {
		t.Errorf("alice may use %s", got)
	}
	post, err := http.Post(base+WhoamiPath, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s, want 405", post.Status)
	}
}
