package gateway

//lint:file-ignore SA1019 roots, sampling and logging are deprecated by 2026-07-28 (SEP-2577) but clients and servers still use them, and the gateway relays them

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

// Sessionless (MCP 2026-07-28) requests: what tailgate refuses before any
// child sees them, and the HTTP statuses of the answers.
func TestSessionlessRequests(t *testing.T) {
	_, base := serveLoopback(t, demoConfig)
	const meta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`
	call := func(name string) string {
		return `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"` + name + `","arguments":{"message":"hi"},` + meta + `}}`
	}
	for _, tc := range []struct {
		name     string
		body     string
		header   map[string]string
		status   int
		contains string
	}{
		{"a call", call("echo"), map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "echo"}, 200, `"text":"hi"`},
		{"Mcp-Name base64", call("echo"), map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "=?base64?ZWNobw==?="}, 200, `"text":"hi"`},
		{"Mcp-Method mismatch", call("echo"), map[string]string{"Mcp-Method": "tools/list", "Mcp-Name": "echo"}, 400, `"code":-32020`},
		{"Mcp-Method missing", call("echo"), map[string]string{"Mcp-Name": "echo"}, 400, `"code":-32020`},
		{"Mcp-Name mismatch", call("echo"), map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "add"}, 400, `"code":-32020`},
		{"Mcp-Name missing", call("echo"), map[string]string{"Mcp-Method": "tools/call"}, 400, `"code":-32020`},
		{"version header missing", call("echo"), map[string]string{"Mcp-Protocol-Version": "", "Mcp-Method": "tools/call", "Mcp-Name": "echo"}, 400, `"code":-32020`},
		{"version header and _meta disagree", call("echo"), map[string]string{"Mcp-Protocol-Version": "2026-08-01", "Mcp-Method": "tools/call", "Mcp-Name": "echo"}, 400, `"code":-32020`},
		{"no client capabilities", `{"jsonrpc":"2.0","id":8,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`, map[string]string{"Mcp-Method": "tools/list"}, 400, `"code":-32602`},
		{"a removed method", `{"jsonrpc":"2.0","id":9,"method":"ping","params":{` + meta + `}}`, map[string]string{"Mcp-Method": "ping"}, 404, `"code":-32601`},
		{"server/discover", `{"jsonrpc":"2.0","id":10,"method":"server/discover","params":{` + meta + `}}`, map[string]string{"Mcp-Method": "server/discover"}, 200, `"supportedVersions"`},
		{"a notification", `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}`, map[string]string{"Mcp-Method": "notifications/cancelled"}, 202, ``},
		{"a notification without Mcp-Method", `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}`, nil, 400, `"code":-32020`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
			for k, v := range tc.header {
				if v == "" {
					req.Header.Del(k)
				} else {
					req.Header.Set(k, v)
				}
			}
			resp, body := do(t, req)
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.contains) {
				t.Errorf("got %d %s; want %d with %s", resp.StatusCode, body, tc.status, tc.contains)
			}
			if resp.Header.Get(sessionIDHeader) != "" {
				t.Errorf("a sessionless request got a session")
			}
		})
	}
}

// The cache hints of a list (SEP-2549) pass through: a joined list may be
// cached as long as its shortest-lived part, and shared between callers
// only if every target says public and policy did not filter it by the
// caller's identity.
func TestListCacheHints(t *testing.T) {
	const two = `
binds:
- port: 3000
  listeners:
  - routes:
    - name: mcp
%s      backends:
      - mcp:
          targets:
          - name: a
            stdio: {cmd: DEMO, env: {` + demoserver.CacheEnv + `: "%s"}}
%s`
	second := func(hints string) string {
		return "          - name: b\n            stdio: {cmd: DEMO, env: {" + demoserver.CacheEnv + ": \"" + hints + "\"}}\n"
	}
	const rules = "      policies:\n        mcpAuthorization:\n          rules: ['mcp.tool.name != \"env\"']\n"
	for _, tc := range []struct {
		name, policy, a, b string
		want               string
	}{
		{"one target", "", "60000,public", "", `"cacheScope":"public","ttlMs":60000`},
		{"one target, filtered", rules, "60000,public", "", `"cacheScope":"private","ttlMs":60000`},
		{"two targets", "", "60000,public", second("30000,public"), `"cacheScope":"public","ttlMs":30000`},
		{"two targets, one private", "", "60000,public", second("90000,private"), `"cacheScope":"private","ttlMs":60000`},
		{"two targets, filtered", rules, "60000,public", second("30000,public"), `"cacheScope":"private","ttlMs":30000`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, base := serveLoopback(t, fmt.Sprintf(two, tc.policy, tc.a, tc.b))
			resp, body := do(t, sessionlessRequest(t, base, "tools/list"))
			var res struct {
				Result struct {
					TTLMs      *int64 `json:"ttlMs"`
					CacheScope string `json:"cacheScope"`
				}
			}
			json.Unmarshal(body, &res)
			got := "<none>"
			if res.Result.TTLMs != nil {
				got = fmt.Sprintf(`"cacheScope":%q,"ttlMs":%d`, res.Result.CacheScope, *res.Result.TTLMs)
			}
			if got != tc.want {
				t.Errorf("hints %s, want %s (%d %.300s)", got, tc.want, resp.StatusCode, body)
			}
		})
	}
}

// A server of the session era asks its client for roots in the middle of a
// call; a sessionless (2026-07-28) client cannot be asked, so tailgate
// turns the request into the call's input_required result and carries the
// client's retry back to the waiting child (SEP-2322). go-sdk's client
// answers input requests by itself.
func TestLegacyServerRequestBecomesInputRequired(t *testing.T) {
	cfg := strings.Replace(demoConfig, "stdio: {cmd: DEMO}", "stdio: {cmd: DEMO, env: {"+demoserver.VersionsEnv+": 2025-11-25}}", 1)
	_, base := serveLoopback(t, cfg)
	c := mcp.NewClient(&mcp.Implementation{Name: "modern"}, nil)
	c.AddRoots(&mcp.Root{URI: "file:///work/project", Name: "project"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs := connectSessionless(t, c, base+"/mcp")
	for round := range 3 {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "roots"})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if got := res.Content[0].(*mcp.TextContent).Text; got != "file:///work/project" {
			t.Fatalf("round %d: the child got roots %q", round, got)
		}
	}
	// A requestState tailgate never issued is refused, not forwarded.
	req, _ := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"roots","requestState":"tailgate-mrtr:forged","inputResponses":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", "tools/call")
	req.Header.Set("Mcp-Name", "roots")
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "invalid requestState") {
		t.Errorf("forged requestState: %d %s", resp.StatusCode, body)
	}
}

// A sessionless client's subscriptions/listen on a backend of two targets:
// one stream, acknowledged once, on which either target's list_changed
// arrives; closing the client ends the targets' listens.
func TestListenAcrossTargets(t *testing.T) {
	older := "{cmd: DEMO, env: {" + demoserver.VersionsEnv + ": 2025-11-25}}"
	for _, tc := range []struct {
		name, a, b string // b "": a single target
		grow       []string
	}{
		{"two modern targets", "{cmd: DEMO}", "{cmd: DEMO}", []string{"a_grow", "b_grow"}},
		// An older child answers no listen: tailgate listens for it, and
		// its list_changed reaches the listen. Failed before: it was
		// left out, its list_changed dropped.
		{"a modern and an older target", "{cmd: DEMO}", older, []string{"a_grow", "b_grow"}},
		{"one older target", older, "", []string{"grow"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			targets := "          - name: a\n            stdio: " + tc.a
			if tc.b != "" {
				targets += "\n          - name: b\n            stdio: " + tc.b
			}
			_, base := serveLoopback(t, strings.Replace(demoConfig, "          - name: demo\n            stdio: {cmd: DEMO}", targets, 1))
			post := func(method, params string) *http.Response {
				t.Helper()
				name := ""
				if n, ok := strings.CutPrefix(params, `"name":"`); ok {
					name = n[:strings.IndexByte(n, '"')]
				}
				resp, err := http.DefaultClient.Do(modernRequest(t, base, method, name, params))
				if err != nil {
					t.Fatal(err)
				}
				return resp
			}
			listen := post("subscriptions/listen", `"notifications":{"toolsListChanged":true}`)
			defer listen.Body.Close()
			ev := newEvents(listen.Body)
			if msg, _ := ev.next(t, 10*time.Second); !strings.Contains(string(msg), `"notifications/subscriptions/acknowledged"`) || !strings.Contains(string(msg), `"toolsListChanged":true`) {
				t.Fatalf("first on the listen: %s, want the acknowledgement of toolsListChanged", msg)
			}
			for _, tool := range tc.grow {
				resp := post("tools/call", `"name":"`+tool+`"`)
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !strings.Contains(string(body), "added extra") {
					t.Fatalf("%s: %s", tool, body)
				}
				msg, _ := ev.next(t, 10*time.Second)
				if !strings.Contains(string(msg), `"notifications/tools/list_changed"`) || !strings.Contains(string(msg), `"io.modelcontextprotocol/subscriptionId":1`) {
					t.Fatalf("after %s: %s, want tools/list_changed tagged with the listen's id", tool, msg)
				}
			}
		})
	}
}

// MRTR through a multiplexed backend: an older target's request to the
// client, bridged to input_required, and the retry routed back to it by
// its prefixed name, beside a modern target.
func TestInputRequiredThroughMultiplexedBackend(t *testing.T) {
	cfg := strings.Replace(demoConfig, `          - name: demo
            stdio: {cmd: DEMO}`, `          - name: modern
            stdio: {cmd: DEMO}
          - name: legacy
            stdio: {cmd: DEMO, env: {`+demoserver.VersionsEnv+`: 2025-11-25}}`, 1)
	_, base := serveLoopback(t, cfg)
	c := mcp.NewClient(&mcp.Implementation{Name: "modern"}, nil)
	c.AddRoots(&mcp.Root{URI: "file:///srv", Name: "srv"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs := connectSessionless(t, c, base+"/mcp")
	for tool, args := range map[string]map[string]any{"legacy_roots": {}, "modern_echo": {"message": "file:///srv"}} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		if got := strings.TrimSpace(res.Content[0].(*mcp.TextContent).Text); got != "file:///srv" {
			t.Errorf("%s: %q", tool, got)
		}
	}
}

// connectSessionless connects go-sdk client c as it comes (MCP 2026-07-28,
// no session), failing the test if it ends up with a session.
func connectSessionless(t *testing.T, c *mcp.Client, url string) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	if cs.ID() != "" || cs.InitializeResult().ProtocolVersion != "2026-07-28" {
		t.Fatalf("want a sessionless 2026-07-28 client; session %q, version %q", cs.ID(), cs.InitializeResult().ProtocolVersion)
	}
	return cs
}

// A server of MCP 2026-07-28 only (it refuses initialize) serves a client
// of the session era: tailgate speaks 2026-07-28 to it for the client, and
// its input_required result becomes the client's elicitation request,
// whose answer goes back in the retried call. Failed before: the session
// could not start ("initialize: method not found").
func TestModernOnlyServerForSessionClient(t *testing.T) {
	for _, tc := range []struct{ name, targets, ask string }{
		{"alone", "          - name: new\n            stdio: {cmd: DEMO, env: {" + demoserver.ModernOnlyEnv + ": '1'}}", "ask_name"},
		{"beside an older server", "          - name: new\n            stdio: {cmd: DEMO, env: {" + demoserver.ModernOnlyEnv + ": '1'}}\n          - name: old\n            stdio: {cmd: DEMO}", "new_ask_name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, base := serveLoopback(t, strings.Replace(demoConfig, "          - name: demo\n            stdio: {cmd: DEMO}", tc.targets, 1))
			asked := 0
			changed := make(chan struct{}, 4)
			c := mcp.NewClient(&mcp.Implementation{Name: "legacy"}, &mcp.ClientOptions{
				ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { changed <- struct{}{} },
				// A client of the session era knows no input_required
				// (go-sdk's would answer it by itself).
				MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true},
				ElicitationHandler: func(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
					asked++
					return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "alice"}}, nil
				},
			})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: base + "/mcp"}, legacySession)
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			if v := cs.InitializeResult().ProtocolVersion; v != "2025-11-25" {
				t.Errorf("session version %q, want the client's 2025-11-25", v)
			}
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tc.ask})
			if err != nil || res.IsError || len(res.Content) == 0 || res.Content[0].(*mcp.TextContent).Text != "Hello, alice!" || asked != 1 {
				t.Fatalf("%s: %v %v (asked %d times)", tc.ask, res, err, asked)
			}
			prefix := strings.TrimSuffix(tc.ask, "ask_name")
			if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: prefix + "echo", Arguments: map[string]any{"message": "hi"}}); err != nil || res.Content[0].(*mcp.TextContent).Text != "hi" {
				t.Errorf("%secho: %v %v", prefix, res, err)
			}
			// Its list changes reach the client: tailgate listens for it.
			if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: prefix + "grow"}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-changed:
			case <-ctx.Done():
				t.Fatal("no tools/list_changed after grow")
			}
		})
	}
}

// Sessionless callers' children are kept per caller under a cap (here
// config.mcp.maxSessions, 2): past it, the caller idle longest gives its
// children up; and a caller idle past sessionTtl has its children reaped.
func TestSessionlessCallersCapAndIdle(t *testing.T) {
	s, base := serveLoopback(t, "config:\n  mcp:\n    maxSessions: 2\n    sessionTtl: 3s\n"+demoConfig)
	call := func(from string) {
		t.Helper()
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
		req := sessionlessRequest(t, base, "tools/list")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"echo"`) {
			t.Fatalf("caller %s: %d %s", from, resp.StatusCode, body)
		}
	}
	call("127.0.0.1")
	call("127.0.0.2")
	if n := s.Stats().ChildrenRunning; n != 2 {
		t.Fatalf("two callers: %d children, want 2", n)
	}
	call("127.0.0.3")
	waitFor(t, "the idlest caller's child gone, the new one's running", func() bool { return s.Stats().ChildrenRunning == 2 })
	call("127.0.0.3") // served by its kept children
	waitFor(t, "every child reaped once its caller is idle past sessionTtl", func() bool { return s.Stats().ChildrenRunning == 0 })
}

// Mcp-Param-* headers that cannot be checked against the tool's schema
// (the target's tools/list fails) are refused, not trusted: a route's
// rules may have read them. Failed before: the check was skipped.
func TestUncheckableParamHeadersRefused(t *testing.T) {
	srv := demoserver.New()
	srv.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method == "tools/list" {
				return nil, errors.New("tools/list is broken today")
			}
			return next(ctx, method, req)
		}
	})
	upstream := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{Stateless: true}))
	t.Cleanup(upstream.Close)
	_, base := serveLoopback(t, remoteConfig(upstream.URL))
	for _, tc := range []struct {
		name   string
		header string
		status int
		want   string
	}{
		{"no Mcp-Param header", "", 200, `"text":"hi"`},
		{"an Mcp-Param header", "Mcp-Param-Region", 400, `"code":-32020`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := modernRequest(t, base, "tools/call", "echo", `"name":"echo","arguments":{"message":"hi"}`)
			if tc.header != "" {
				req.Header.Set(tc.header, "eu-west")
			}
			resp, body := do(t, req)
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.want) {
				t.Errorf("%d %s, want %d with %s", resp.StatusCode, body, tc.status, tc.want)
			}
		})
	}
}

// A session client's requests to a server of 2026-07-28 only are given
// its _meta whatever shape their params have (none, null, a null _meta).
// Failed before: a null _meta or params panicked the relay.
func TestModernOnlyServerOddParams(t *testing.T) {
	_, base := serveLoopback(t, strings.Replace(demoConfig, "stdio: {cmd: DEMO}", "stdio: {cmd: DEMO, env: {"+demoserver.ModernOnlyEnv+": '1'}}", 1))
	rs := rawInitialize(t, base+"/mcp", `{}`)
	for i, body := range []string{
		`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"message":"x"},"_meta":null}}`,
		`{"jsonrpc":"2.0","id":%d,"method":"tools/list","params":null}`,
		`{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"message":"x"},"_meta":{"progressToken":"p"}}}`,
	} {
		resp := rs.post(fmt.Sprintf(body, i+1))
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(got), `"result"`) {
			t.Errorf("%s: %d %s", body, resp.StatusCode, got)
		}
	}
}

// A server without resource templates answers their list -32601: reads of
// its resources are still judged (and allowed) by name. Failed before:
// with any mcpAuthorization rule, every read was denied.
func TestResourceNamesWithoutTemplates(t *testing.T) {
	srv := demoserver.New()
	srv.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method == "resources/templates/list" {
				return nil, &jsonrpc.Error{Code: jsonrpc.CodeMethodNotFound, Message: "method not found"}
			}
			return next(ctx, method, req)
		}
	})
	upstream := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	t.Cleanup(upstream.Close)
	_, base := serveLoopback(t, denyingResource(remoteConfig(upstream.URL), "secret"))
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	if _, err := cs.ReadResource(context.Background(), &mcp.ReadResourceParams{URI: "demo://readme"}); err != nil {
		t.Errorf("read: %v", err)
	}
}

// A sessionless request's log line says its protocol version and client,
// as a session's lines say them once at initialize; a normal shutdown of
// the caller's children is no warning. Failed before: neither was on the
// line, and the shutdown logged WARN "children ... ended err=<nil>".
func TestSessionlessLogLines(t *testing.T) {
	var logs syncBuffer
	s, base := serveLoopbackOpts(t, demoConfig, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	cs := connectSessionless(t, mcp.NewClient(&mcp.Implementation{Name: "log-probe", Version: "1"}, nil), base+"/mcp")
	if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "hi"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the call's log line", func() bool { return strings.Contains(logs.String(), "method=tools/call") })
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `msg="mcp call"`) && strings.Contains(line, "method=tools/call") &&
			(!strings.Contains(line, "protocol=2026-07-28") || !strings.Contains(line, "client=log-probe")) {
			t.Errorf("a sessionless call's line lacks its protocol or client: %s", line)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("a normal shutdown logged a warning:\n%s", grepLines(logs.String(), "WARN"))
	}
}

// A caller's listens at one stdio child: each gets the list changes it
// asked for, tagged with its own id, and the end of one does not silence
// the others. Failed before: each went to the child as it was, and a
// go-sdk server keeps one listen per session (a stdio child is one): the
// newest took the others' notifications, and the end of any ended all
// (the conformance suite's server-stateless scenario lost its
// prompts/list_changed in 1 CI run of 6).
func TestListensShareAChild(t *testing.T) {
	_, base := serveLoopback(t, demoConfig)
	post := func(id int, method, name, params string) *http.Response {
		t.Helper()
		req := modernRequest(t, base, method, name, params)
		body, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(strings.NewReader(strings.Replace(string(body), `"id":1,`, `"id":`+strconv.Itoa(id)+`,`, 1)))
		req.ContentLength = -1
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	listen := func(id int) (*events, io.Closer) {
		t.Helper()
		resp := post(id, "subscriptions/listen", "", `"notifications":{"toolsListChanged":true}`)
		ev := newEvents(resp.Body)
		if msg, _ := ev.next(t, 10*time.Second); !strings.Contains(string(msg), `"notifications/subscriptions/acknowledged"`) || !strings.Contains(string(msg), `"toolsListChanged":true`) {
			t.Fatalf("listen %d: first %s, want the acknowledgement of toolsListChanged", id, msg)
		}
		return ev, resp.Body
	}
	grow := func(id int) { // adds a tool, or removes it
		t.Helper()
		resp := post(id, "tools/call", "grow", `"name":"grow"`)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), "added extra") && !strings.Contains(string(body), "removed extra") {
			t.Fatalf("grow: %s", body)
		}
	}
	changed := func(ev *events, id int) {
		t.Helper()
		msg, _ := ev.next(t, 10*time.Second)
		if !strings.Contains(string(msg), `"notifications/tools/list_changed"`) || !strings.Contains(string(msg), `"io.modelcontextprotocol/subscriptionId":`+strconv.Itoa(id)) {
			t.Fatalf("listen %d: %s, want tools/list_changed tagged with its id", id, msg)
		}
	}

	a, closeA := listen(7)
	b, closeB := listen(8)
	defer closeB.Close()
	grow(100)
	changed(a, 7)
	changed(b, 8)

	closeA.Close()
	c, closeC := listen(9)
	defer closeC.Close()
	grow(101)
	changed(b, 8)
	changed(c, 9)
}
