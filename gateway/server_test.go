package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

var demoBin string

// envDeniedConfig is the demo server with its env tool denied.
const envDeniedConfig = `
binds:
- port: 3000
  listeners:
  - routes:
    - name: mcp
      policies:
        mcpAuthorization:
          rules: ['mcp.tool.name != "env"']
      backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: DEMO}
`

// reloadConfig is a route of the demo server that reload tests change.
const reloadConfig = `
binds:
- port: 3000
  listeners:
  - routes:
    - name: mcp
      backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: DEMO}
`

// legacySession pins a go-sdk client to MCP 2025-11-25 and its session;
// unpinned, go-sdk v1.8.0 clients speak 2026-07-28 without one.
var legacySession = &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"}

func TestMain(m *testing.M) { demoserver.TestMain(m, &demoBin) }

// serveLoopback serves cfgYAML's first bind on 127.0.0.1 and returns the
// server and its base URL. %s in cfgYAML is replaced by the demo server.
func serveLoopback(t *testing.T, cfgYAML string) (*Server, string) {
	t.Helper()
	return serveLoopbackOpts(t, cfgYAML, Options{Logger: slog.New(slog.NewTextHandler(demoserver.LogWriter(t), nil))})
}

const demoConfig = `
binds:
- port: 3000
  listeners:
  - name: default
    protocol: HTTP
    routes:
    - name: mcp
      backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: DEMO}
`

func connect(t *testing.T, url string) *mcp.ClientSession {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "test-client"}, nil)
	cs, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: url}, legacySession)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// connectWith is connect with client and session options (nil session
// options: the client's latest protocol), closed when the test ends.
func connectWith(t *testing.T, url string, opts *mcp.ClientOptions, sess *mcp.ClientSessionOptions) *mcp.ClientSession {
	t.Helper()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test-client"}, opts).Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: url}, sess)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func TestServeMCPOnLoopback(t *testing.T) {
	s, base := serveLoopback(t, demoConfig)
	cs := connect(t, base+"/mcp")
	if got := cs.InitializeResult().ServerInfo.Name; got != "tailgate-demo-server" {
		t.Errorf("server = %q", got)
	}
	if err := cs.Ping(context.Background(), nil); err != nil {
		t.Errorf("ping: %v", err)
	}
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "add", Arguments: map[string]any{"a": 1, "b": 2}})
	if err != nil || res.Content[0].(*mcp.TextContent).Text != "3" {
		t.Fatalf("add: %v %+v", err, res)
	}
	if st := s.Stats(); st.Sessions != 1 || st.ChildrenStarted != 1 {
		t.Errorf("stats with one session: %+v", st)
	}
	// More requests on the same session start no more children.
	for range 5 {
		cs.ListTools(context.Background(), nil)
	}
	if st := s.Stats(); st.ChildrenStarted != 1 {
		t.Errorf("children after more requests: %d", st.ChildrenStarted)
	}
	// DELETE ends the session and its child.
	cs.Close()
	waitFor(t, "session closed", func() bool { return s.Stats().Sessions == 0 })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A connection that networkAuthorization denies is answered 403 with a
// one-line reason naming the rule (even with a body the gateway never
// reads), or, with denied: close, closed without a word.
func TestNetworkAuthorizationDenied(t *testing.T) {
	const rules = `
frontendPolicies:
  networkAuthorization:
    rules:
    - 'cidr("100.64.0.0/10").containsIP(source.address)'
`
	s, base := serveLoopback(t, rules+demoConfig)
	for _, body := range []string{`{}`, `{"pad":"` + strings.Repeat("x", 200<<10) + `"}`} {
		resp, err := http.Post(base+"/mcp", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("denied peer (%d-byte body) got no answer: %v", len(body), err)
		}
		reason, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := "tailgate: connection from 127.0.0.1 denied by frontendPolicies.networkAuthorization.rules: no allow rule matched\n"
		if resp.StatusCode != http.StatusForbidden || string(reason) != want {
			t.Errorf("denied peer got %d %q, want 403 %q", resp.StatusCode, reason, want)
		}
	}
	if st := s.Stats(); st.DeniedConnections != 2 || st.ChildrenStarted != 0 {
		t.Errorf("stats: %+v", st)
	}

	s, base = serveLoopback(t, strings.Replace(rules, "rules:", "denied: close\n    rules:", 1)+demoConfig)
	resp, err := http.Post(base+"/mcp", "application/json", strings.NewReader(`{}`))
	if err == nil {
		resp.Body.Close()
		t.Fatalf("denied peer got HTTP %d with denied: close", resp.StatusCode)
	}
	if st := s.Stats(); st.DeniedConnections == 0 || st.ChildrenStarted != 0 {
		t.Errorf("stats: %+v", st)
	}
}

func TestChildExitGivesErrorThen404(t *testing.T) {
	_, base := serveLoopback(t, demoConfig)
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "exit", Arguments: map[string]any{"code": 2, "stderr": "boom"}})
	if err == nil || !strings.Contains(err.Error(), `target \"demo\"`) && !strings.Contains(err.Error(), `target "demo"`) {
		t.Fatalf("call that killed the child: %v", err)
	}
	for _, want := range []string{"exit status 2", "boom"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// The session is gone: the next request on it gets 404.
	id := cs.ID()
	req, _ := http.NewRequest(http.MethodPost, base+"/mcp", bytes.NewReader([]byte(`{"jsonrpc":"2.0","id":9,"method":"tools/list"}`)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Session-Id", id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("request on dead session: %d %s", resp.StatusCode, body)
	}
}

func TestSessionBelongsToItsPeer(t *testing.T) {
	_, base := serveLoopback(t, demoConfig)
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	// Same session id from another address: 127.0.0.2 is loopback too.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
	req, _ := http.NewRequest(http.MethodPost, base+"/mcp", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Session-Id", cs.ID())
	resp, err := client.Do(req)
	if err != nil {
		t.Skipf("cannot bind 127.0.0.2: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("hijack attempt got %d, want 403", resp.StatusCode)
	}
}

func TestLegacySSE(t *testing.T) {
	_, base := serveLoopback(t, demoConfig)
	c := mcp.NewClient(&mcp.Implementation{Name: "sse-client"}, nil)
	cs, err := c.Connect(context.Background(), &mcp.SSEClientTransport{Endpoint: base + "/sse"}, legacySession)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "over sse"}})
	if err != nil || res.Content[0].(*mcp.TextContent).Text != "over sse" {
		t.Fatalf("echo over SSE: %v %+v", err, res)
	}
}

func TestStatelessMode(t *testing.T) {
	s, base := serveLoopback(t, strings.Replace(demoConfig, "      - mcp:\n", "      - mcp:\n          statefulMode: stateless\n", 1))
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	for i := range 3 {
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "add", Arguments: map[string]any{"a": i, "b": 1}})
		if err != nil || res.Content[0].(*mcp.TextContent).Text != fmt.Sprint(i+1) {
			t.Fatalf("stateless add: %v %+v", err, res)
		}
	}
	// Each request had a child of its own, reaped when it was answered.
	waitFor(t, "children reaped", func() bool { return s.Stats().ChildrenRunning == 0 })
	if st := s.Stats(); st.ChildrenStarted < 3 || st.Sessions != 0 {
		t.Errorf("stateless stats %+v", st)
	}
}

// postInitialize posts a client's initialize request to url as a
// Streamable HTTP client does; the answer's body is read and closed.
func postInitialize(t *testing.T, url string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func TestSessionCap(t *testing.T) {
	_, base := serveLoopback(t, "config:\n  mcp:\n    maxSessions: 2\n"+demoConfig)
	a, b := connect(t, base+"/mcp"), connect(t, base+"/mcp")
	defer a.Close()
	defer b.Close()
	resp := postInitialize(t, base+"/mcp")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("third session: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Existing sessions are unaffected.
	if _, err := a.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err != nil {
		t.Error(err)
	}
}

func TestListChangedReachesClient(t *testing.T) {
	_, base := serveLoopback(t, demoConfig)
	changed := make(chan struct{}, 4)
	c := mcp.NewClient(&mcp.Implementation{Name: "test-client"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { changed <- struct{}{} },
	})
	cs, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: base + "/mcp"}, legacySession)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if !cs.InitializeResult().Capabilities.Tools.ListChanged {
		t.Error("tools.listChanged not mirrored")
	}
	if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "grow", Arguments: map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("no tools/list_changed")
	}
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, tool := range res.Tools {
		found = found || tool.Name == "extra"
		if strings.HasPrefix(tool.Name, "tailgate.") {
			t.Errorf("internal marker listed: %s", tool.Name)
		}
	}
	if !found {
		t.Error("the new tool is not listed")
	}
}

func TestTimeouts(t *testing.T) {
	cfg := strings.Replace(demoConfig, "stdio: {cmd: DEMO}", "stdio: {cmd: DEMO, requestTimeout: 300ms}", 1)
	_, base := serveLoopback(t, cfg)
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	start := time.Now()
	_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"steps": 100, "delayMs": 100}})
	if err == nil || !strings.Contains(err.Error(), "no answer in time") || time.Since(start) > 5*time.Second {
		t.Errorf("hung call: %v after %v", err, time.Since(start))
	}
	if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err != nil {
		t.Errorf("session after a timeout: %v", err)
	}

	// A child that never answers initialize.
	s2, base2 := serveLoopback(t, strings.Replace(demoConfig, "stdio: {cmd: DEMO}", "stdio: {cmd: sleep, args: ['60'], initializeTimeout: 300ms}", 1))
	c := mcp.NewClient(&mcp.Implementation{Name: "test-client"}, nil)
	start = time.Now()
	_, err = c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: base2 + "/mcp"}, legacySession)
	if err == nil || !strings.Contains(err.Error(), `target \"demo\"`) && !strings.Contains(err.Error(), `target "demo"`) {
		t.Errorf("initialize of a silent child: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("initialize took %v", time.Since(start))
	}
	waitFor(t, "silent child reaped", func() bool { return s2.Stats().ChildrenRunning == 0 })
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestHealthAndMetrics(t *testing.T) {
	s, base := serveLoopback(t, envDeniedConfig)
	admin := s.AdminHandler()
	if code, _ := get(t, admin, "/healthz/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("ready before SetReady: %d", code)
	}
	s.SetReady(true)
	if code, _ := get(t, admin, "/healthz/ready"); code != http.StatusOK {
		t.Errorf("ready after SetReady: %d", code)
	}
	if code, _ := get(t, admin, "/healthz/live"); code != http.StatusOK {
		t.Errorf("live: %d", code)
	}
	cs := connect(t, base+"/mcp")
	awaitNamesLearnt(t, s)
	cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}})
	cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "env", Arguments: map[string]any{"names": []string{"HOME"}}})
	// A call is recorded once its answer is written: the client may have
	// read it first.
	var body string
	waitFor(t, "the calls recorded", func() bool {
		_, body = get(t, admin, "/metrics")
		return strings.Contains(body, `method="tools/call",outcome="denied"`)
	})
	for _, want := range []string{
		`tailgate_mcp_calls_total{method="tools/call",outcome="ok",route="mcp",target="demo",tool="echo"} 1`,
		`tailgate_mcp_calls_total{method="tools/call",outcome="denied",route="mcp",target="demo",tool="env"} 1`,
		`tailgate_mcp_calls_total{method="initialize",outcome="ok",route="mcp",target="",tool=""}`,
		`tailgate_mcp_call_duration_seconds_count{method="tools/call",route="mcp",target="demo"} 2`,
		`tailgate_mcp_sessions{route="mcp"} 1`,
		`tailgate_children_running{route="mcp"} 1`,
		`tailgate_connections_total{outcome="accepted",port="3000",rule=""}`,
		`tailgate_http_requests_total{code="200",route="mcp"}`,
		`tailgate_whois_duration_seconds_count`,
		`tailgate_ready 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(body, "tailgate_mcp_calls_total"))
		}
	}
	cs.Close()
	waitFor(t, "child reaped", func() bool { return s.Stats().ChildrenRunning == 0 })
	_, body = get(t, admin, "/metrics")
	if !strings.Contains(body, `tailgate_child_exits_total{cause="stopped",route="mcp",target="demo"} 1`) {
		t.Errorf("child exit not counted:\n%s", grepLines(body, "tailgate_child"))
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A reload swaps policies for running sessions, keeps their children,
// lets sessions of a replaced backend finish, and starts new sessions on
// the new backend.
func TestReload(t *testing.T) {
	const cfgA = reloadConfig
	s, base := serveLoopback(t, cfgA)
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	pid := func(cs *mcp.ClientSession) int {
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "info", Arguments: map[string]any{}})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(res.StructuredContent)
		var info demoserver.InfoOut
		json.Unmarshal(raw, &info)
		return info.PID
	}
	before := pid(cs)
	reload := func(y string) { reloadWith(t, s, y) }
	// 1. Same backend, new policy: the session keeps its child, and the new
	// policy applies to it at once.
	reload(strings.Replace(cfgA, "      backends:", "      policies:\n        mcpAuthorization:\n          rules: ['mcp.tool.name != \"echo\"']\n      backends:", 1))
	if got := pid(cs); got != before {
		t.Errorf("child changed across a policy reload: %d → %d", before, got)
	}
	if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err == nil || !strings.Contains(err.Error(), "not permitted") {
		t.Errorf("echo after the policy reload: %v", err)
	}
	// 2. A changed backend: the running session carries on with its child;
	// a new session gets the new backend.
	reload(strings.Replace(cfgA, "stdio: {cmd: DEMO}", "stdio: {cmd: DEMO, env: {GENERATION: '2'}}", 1))
	if got := pid(cs); got != before {
		t.Errorf("running session lost its child on a backend reload: %d → %d", before, got)
	}
	cs2 := connect(t, base+"/mcp")
	defer cs2.Close()
	res, err := cs2.CallTool(context.Background(), &mcp.CallToolParams{Name: "env", Arguments: map[string]any{"names": []string{"GENERATION"}}})
	if err != nil || !strings.Contains(fmt.Sprint(res.StructuredContent), "GENERATION:2") {
		t.Errorf("new session after the reload: %v %v", err, res)
	}
	_, body := get(t, s.AdminHandler(), "/metrics")
	if !strings.Contains(body, `tailgate_config_reloads_total{outcome="ok"} 2`) {
		t.Errorf("reload metric:\n%s", grepLines(body, "tailgate_"))
	}
	// The old backend goes away once its last session ends.
	cs.Close()
	waitFor(t, "old child reaped", func() bool { return s.Stats().ChildrenRunning == 1 })
}

// The root says what the gateway is; /.well-known/* is a JSON 404 so that
// clients probing for OAuth go on without it; MCP still works at "/" on a
// route that matches every path.
func TestRootAndWellKnown(t *testing.T) {
	_, base := serveLoopback(t, demoConfig)
	get := func(path string, header ...string) (int, string, string) {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
	}
	code, ctype, body := get("/")
	host := strings.TrimPrefix(base, "http://")
	want := "tailgate " + Version + ": an MCP gateway on the tailnet.\nMCP (Streamable HTTP): http://" + host + "/mcp\nLegacy SSE: http://" + host + "/sse\n"
	if code != 200 || !strings.HasPrefix(ctype, "text/plain") || body != want {
		t.Errorf("GET / = %d %s %q, want 200 text %q", code, ctype, body, want)
	}
	for _, p := range []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
		code, ctype, body := get(p)
		var v struct{ Error string }
		if code != 404 || ctype != "application/json" || json.Unmarshal([]byte(body), &v) != nil || v.Error != "not_found" {
			t.Errorf("GET %s = %d %s %q, want a JSON 404", p, code, ctype, body)
		}
	}
	// An MCP client's GET on "/" is still the route's.
	if code, _, _ := get("/", "Accept", "text/event-stream"); code == 200 {
		t.Errorf("an event-stream GET on / without a session got 200")
	}
	cs := connect(t, base+"/")
	defer cs.Close()
	if err := cs.Ping(context.Background(), nil); err != nil {
		t.Errorf("MCP on /: %v", err)
	}
}

// An npx target gets npm_config_yes=true, so that npx installs a missing
// package instead of asking a terminal that is not there — unless the
// target or the gateway's environment says otherwise.
func TestNpxTargetsInstallWithoutAsking(t *testing.T) {
	dir := t.TempDir()
	npx := filepath.Join(dir, "npx")
	if err := os.Symlink(demoBin, npx); err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(demoConfig, "          - name: demo\n            stdio: {cmd: DEMO}", `          - name: a
            stdio: {cmd: `+npx+`}
          - name: b
            stdio: {cmd: `+npx+`, env: {npm_config_yes: "false"}}
          - name: c
            stdio: {cmd: DEMO}`, 1)
	_, base := serveLoopback(t, cfg)
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	for _, tt := range []struct{ tool, want string }{
		{"a_env", `{"npm_config_yes":"true"}`},
		{"b_env", `{"npm_config_yes":"false"}`},
		{"c_env", `{}`},
	} {
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: tt.tool, Arguments: map[string]any{"names": []string{"npm_config_yes"}}})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(res.StructuredContent)
		if !strings.Contains(string(raw), tt.want) {
			t.Errorf("%s: %s, want %s", tt.tool, raw, tt.want)
		}
	}
	t.Setenv("npm_config_yes", "false")
	if env := npxEnv(&StdioTarget{Cmd: "npx"}, os.LookupEnv); env["npm_config_yes"] != "" {
		t.Errorf("the gateway's own npm_config_yes was overridden: %v", env)
	}
	if env := npxEnv(&StdioTarget{Cmd: "npx", ClearEnv: true}, os.LookupEnv); env["npm_config_yes"] != "true" {
		t.Errorf("clear_env: %v", env)
	}
}

// Warm pays a target's first, slow start before any client waits for it:
// while it runs, MCP requests get 503 and a line that says why; after it,
// a client with a short connect timeout gets in at once.
func TestWarmStartsTargetsBeforeClients(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// The first start waits for the test (as npx waits for the registry).
	script := filepath.Join(dir, "slow-first-start")
	os.WriteFile(script, []byte(`#!/bin/sh
if [ ! -e "`+dir+`/warm" ]; then touch "`+dir+`/started"; read x < "`+fifo+`"; touch "`+dir+`/warm"; fi
exec "`+demoBin+`"
`), 0o755)
	s, base := serveLoopback(t, strings.Replace(demoConfig, "stdio: {cmd: DEMO}", "stdio: {cmd: "+script+"}", 1))
	warmed := make(chan struct{})
	go func() {
		s.Warm(context.Background())
		close(warmed)
	}()
	waitFor(t, "the first start", func() bool { _, err := os.Stat(filepath.Join(dir, "started")); return err == nil })
	resp, err := http.Post(base+"/mcp", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "starting its MCP servers") {
		t.Errorf("during warm-up: %d %q", resp.StatusCode, body)
	}
	f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("go\n")
	f.Close()
	<-warmed
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "impatient"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: base + "/mcp"}, legacySession)
	if err != nil {
		t.Fatalf("first client after warm-up: %v", err)
	}
	defer cs.Close()
	if st := s.Stats(); st.ChildrenStarted != 2 {
		t.Errorf("children started: %d, want 2 (warm-up, client)", st.ChildrenStarted)
	}
}
