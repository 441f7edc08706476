package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tailgate-dev/tailgate/policy"
	"github.com/tailgate-dev/tailgate/tsnode"
)

// serveLoopbackOpts is serveLoopback for any testing.TB (a fuzz target's
// *testing.F too) with the server's Options: it serves cfgYAML's first
// bind on 127.0.0.1, "DEMO" in cfgYAML being the demo server, and returns
// the server and its base URL. The server is shut down at cleanup.
func serveLoopbackOpts(tb testing.TB, cfgYAML string, opts Options) (*Server, string) {
	tb.Helper()
	cfg, err := Parse("test.yaml", []byte(strings.ReplaceAll(cfgYAML, "DEMO", demoBin)), newEnv(tb))
	if err != nil {
		tb.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.StopGrace == 0 {
		opts.StopGrace = 500 * time.Millisecond
	}
	// Its clients name it by its loopback address.
	opts.Hosts = append(opts.Hosts, "127.0.0.1")
	s, err := New(cfg, opts)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Serve(s.Ports()[0], ln); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s, "http://" + ln.Addr().String()
}

// FuzzParseConfig: Parse never panics on any bytes; what it refuses it
// refuses with ConfigErrors, each with a line (0 when there is none) and a
// message; what it accepts New turns into a server or refuses with an
// error, without panicking.
func FuzzParseConfig(f *testing.F) {
	env := newEnv(f)
	// Every example config and every invalid config is a seed.
	for _, pattern := range []string{"../configs/*.yaml", "testdata/invalid/*.yaml"} {
		files, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	for _, s := range []string{
		"",
		"{}",
		"null",
		"[]",
		"mcp: {targets: [{name: a, stdio: {cmd: x}}]}",
		"binds: &a [*a]",
		"? [a, b]\n: c\n",
		"<<: {binds: []}\n",
		"binds: !!binary aGVsbG8=\n",
		"mcp: {port: 0x10000, targets: [{name: a, stdio: {cmd: x, pool: 1e3}}]}",
		"frontendPolicies: {networkAuthorization: {rules: [{allow: ''}, {deny: '1/0 == 1'}, {require: '\"\\u0000\"'}]}}\nmcp: {targets: [{name: a, stdio: {cmd: x}}]}",
		"tailscale: {hostname: '\xff\xfe', advertiseTags: ['tag:\x00']}\nmcp: {targets: [{name: a, stdio: {cmd: x}}]}",
		"mcp:\n  targets:\n  - name: a\n    stdio: {cmd: x, initializeTimeout: 9223372036854775807ns, requestTimeout: 1e9h}\n",
		"config: {mcp: {sessionTtl: 1ns, maxSessions: 9223372036854775807}}\nmcp: {targets: [{name: a, stdio: {cmd: x}}]}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data, env)
		if err != nil {
			if cfg != nil {
				t.Errorf("Parse returned a config and an error")
			}
			errs, ok := err.(ConfigErrors)
			if !ok {
				t.Fatalf("error is %T, want ConfigErrors: %v", err, err)
			}
			if len(errs) == 0 {
				t.Fatalf("empty ConfigErrors")
			}
			for _, e := range errs {
				if e == nil {
					t.Fatalf("nil *ConfigError in %v", errs)
				}
				if e.Line < 0 || e.Msg == "" || e.File != "fuzz.yaml" {
					t.Errorf("malformed error %#v", e)
				}
				if !strings.HasPrefix(e.Error(), "fuzz.yaml") {
					t.Errorf("error does not name the file: %q", e.Error())
				}
			}
			return
		}
		if cfg == nil {
			t.Fatal("Parse returned neither a config nor an error")
		}
		// New starts the pools' children right away: never run fuzzed
		// commands. Everything else New does is exercised.
		for _, m := range fuzzBackends(cfg) {
			for i := range m {
				if m[i].Stdio != nil {
					m[i].Stdio.Pool = 0
				}
			}
		}
		s, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return
		}
		_ = s.Ports()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown of a server that never started: %v", err)
		}
	})
}

// fuzzBackends are the target lists of every backend of cfg.
func fuzzBackends(cfg *Config) [][]Target {
	var out [][]Target
	for _, b := range cfg.Binds {
		for _, l := range b.Listeners {
			for _, r := range l.Routes {
				for _, be := range r.Backends {
					if be.MCP != nil {
						out = append(out, be.MCP.Targets)
					}
				}
			}
		}
	}
	if cfg.MCP != nil {
		out = append(out, cfg.MCP.Targets)
	}
	return out
}

// fuzzIdentityRules are rules a team would write about who a peer is,
// including ones that fail on some identities (a capability value that is
// not an object, an absent key, an empty string's substring, an address
// that is not an IP): a failing rule must deny, whatever its kind.
var fuzzIdentityRules = []policy.Rule{
	{Kind: policy.Allow, Expr: `"example.com/cap/tailgate" in source.tailscale.caps && source.tailscale.caps["example.com/cap/tailgate"].exists(c, has(c.tools) && mcp.tool.name in c.tools)`},
	{Kind: policy.Allow, Expr: `source.tailscale.caps["example.com/cap/tailgate"].exists(c, c.tools.exists(t, t == mcp.tool.name))`},
	{Kind: policy.Require, Expr: `source.tailscale.caps.all(k, source.tailscale.caps[k].size() >= 0)`},
	{Kind: policy.Deny, Expr: `has(source.tailscale.caps.admin) && source.tailscale.caps.admin[0] == false`},
	{Kind: policy.Allow, Expr: `source.tailscale.caps[source.tailscale.user.login][0] == true`},
	{Kind: policy.Allow, Expr: `source.tailscale.caps.exists(k, k.startsWith("example.com/") && source.tailscale.caps[k].exists(v, type(v) == map && "admin" in v && v.admin == true))`},
	{Kind: policy.Allow, Expr: `"tag:ci" in source.tailscale.node.tags`},
	{Kind: policy.Require, Expr: `source.tailscale.node.tags.all(t, t.startsWith("tag:") && t.lowerAscii() == t)`},
	{Kind: policy.Deny, Expr: `source.tailscale.node.tags.exists(t, t.split(":")[1] == "banned")`},
	{Kind: policy.Allow, Expr: `source.tailscale.user.login.endsWith("@example.com") && source.tailscale.user.login.split("@")[0] in ["alice", "bob"]`},
	{Kind: policy.Deny, Expr: `source.tailscale.user.displayName.upperAscii().contains("MALLORY")`},
	{Kind: policy.Require, Expr: `source.tailscale.node.name.split(".")[0] == source.tailscale.node.hostname || source.tailscale.node.name == ""`},
	{Kind: policy.Allow, Expr: `source.tailscale.node.name.matches("^[a-z0-9-]+\\.tail[0-9a-f]+\\.ts\\.net$")`},
	{Kind: policy.Deny, Expr: `source.tailscale.node.os.substring(1) == "indows"`},
	{Kind: policy.Allow, Expr: `source.tailscale.node.id.size() > 3 && source.tailscale.node.id.charAt(0) == "n"`},
	{Kind: policy.Require, Expr: `cidr("100.64.0.0/10").containsIP(source.address)`},
	{Kind: policy.Allow, Expr: `has(source.tailscale) && source.tailscale.user.login == "tagged-devices"`},
}

// FuzzSourceFromIdentity: any identity a control server could send (or
// garbage in its place) converts into CEL's source.tailscale without
// panicking, and rules about it evaluate without panicking; a rule that
// fails to evaluate denies.
func FuzzSourceFromIdentity(f *testing.F) {
	env := newEnv(f)
	sets := make([]*policy.RuleSet, len(fuzzIdentityRules))
	for i, r := range fuzzIdentityRules {
		r.Path = fmt.Sprintf("rules[%d]", i)
		rs, err := env.Compile(policy.ScopeMCP, "rules", []policy.Rule{r})
		if err != nil {
			f.Fatalf("rule %d: %v", i, err)
		}
		sets[i] = rs
	}
	all := make([]policy.Rule, len(fuzzIdentityRules))
	for i, r := range fuzzIdentityRules {
		r.Path = fmt.Sprintf("rules[%d]", i)
		all[i] = r
	}
	combined, err := env.Compile(policy.ScopeMCP, "rules", all)
	if err != nil {
		f.Fatal(err)
	}

	f.Add("laptop.tail1234.ts.net", "laptop", "nXXXXXCNTRL", "linux", "tag:ci,tag:mcp", "alice@example.com", "Alice",
		"example.com/cap/tailgate", []byte(`{"tools":["echo","add"]}`), []byte(`{"tools":"echo"}`), "100.101.1.7", "echo")
	f.Add("", "", "", "", "", "", "", "", []byte(``), []byte(`null`), "", "")
	f.Add("ci.tail1234.ts.net", "ci", "n1", "windows", "tag:banned", "tagged-devices", "", "admin",
		[]byte(`[false]`), []byte(`false`), "100.64.0.1", "x")
	f.Add("x", "y", "z", "w", ":,tag:,TAG:CI", "alice@example.com", "mallory", "alice@example.com",
		[]byte(`true`), []byte(`{"tools":[1,2,{"a":null}]}`), "fd7a:115c:a1e0::1", "")
	f.Add("\xff\xfe.tail.ts.net", "\xff", "n\x00", "\x80", "tag:\xff", "\xc3\x28@example.com", "\xed\xa0\x80", "example.com/cap/\xff",
		[]byte("{\"tools\":[\"\xff\"]}"), []byte("\"\xff\""), "not-an-ip", "\xff")
	f.Add("a", "a", "a", "a", "tag:a", "a", "a", "example.com/cap/tailgate",
		[]byte(`{"tools":`), []byte(`{"admin":true}`), "::", "a")
	f.Add("a", "a", "a", "a", "tag:a", "a", "a", "example.com/cap/tailgate",
		[]byte(strings.Repeat("[", 20000)), []byte(`1e999`), "1.2.3.4", "a")

	f.Fuzz(func(t *testing.T, nodeName, hostname, nodeID, osName, tags, login, displayName, capName string, cap1, cap2 []byte, address, tool string) {
		id := &tsnode.Identity{
			NodeName: nodeName, NodeHostname: hostname, NodeID: nodeID, NodeOS: osName,
			UserLogin: login, UserDisplayName: displayName,
			Caps: map[string][]json.RawMessage{
				capName:                    {cap1, cap2},
				"example.com/cap/tailgate": {cap2},
				"admin":                    {cap1},
			},
		}
		if tags != "" {
			id.Tags = strings.Split(tags, ",")
		}
		ts := tailscaleSource(id)
		if ts.Node.Name != nodeName || ts.Node.Hostname != hostname || ts.Node.ID != nodeID || ts.Node.OS != osName ||
			ts.User.Login != login || ts.User.DisplayName != displayName || !slices.Equal(ts.Node.Tags, id.Tags) {
			t.Fatalf("identity not carried over: %+v from %+v", ts, id)
		}
		// The source owns its tags: changing the identity's later does
		// not change a decision already being made.
		if len(id.Tags) > 0 {
			id.Tags[0] = "tag:changed-after"
			if ts.Node.Tags[0] == "tag:changed-after" {
				t.Fatal("source.tailscale.node.tags aliases the identity's")
			}
		}
		if got, ok := ts.Caps.Value().(map[string][]any); ok && len(got) != len(id.Caps) {
			t.Errorf("%d capabilities, want %d", len(got), len(id.Caps))
		}
		in := policy.Input{
			Source:  &policy.Source{Address: address, Port: 41641, Tailscale: ts},
			Request: requestInput("POST", "/mcp", "tailgate:3000", map[string][]string{"Content-Type": {"application/json"}}),
			MCP:     &policy.MCP{Method: "tools/call", Tool: policy.Tool{Name: tool, Target: "demo"}},
		}
		anyErr := false
		for i, rs := range sets {
			d := rs.Evaluate(in)
			if d.Err != nil {
				anyErr = true
				if d.Allow {
					t.Errorf("rule %d (%s) failed to evaluate (%v) and allowed", i, fuzzIdentityRules[i].Kind, d.Err)
				}
			}
			if again := rs.Evaluate(in); again.Allow != d.Allow || again.Rule != d.Rule {
				t.Errorf("rule %d: not deterministic: %+v then %+v", i, d, again)
			}
		}
		d := combined.Evaluate(in)
		if anyErr && d.Allow {
			t.Errorf("a rule failed to evaluate, yet the rule set allowed: %+v", d)
		}
		if d.Err != nil && d.Allow {
			t.Errorf("rule set failed to evaluate and allowed: %+v", d)
		}
		_ = d.Reason()
	})
}

// The MCP front's answers to anything a client may send: a status a client
// can act on, never a 500, never a hang.
var frontStatuses = map[int]bool{200: true, 202: true, 400: true, 404: true, 405: true, 406: true, 413: true, 415: true}

const fuzzInitialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"fuzz","version":"1"}}}`

// mcpPost posts body to url as a Streamable HTTP client would, on
// session id if not empty, and returns the status, the session id the
// server gave and the body.
func mcpPost(client *http.Client, url, session, body string) (int, string, string, error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, "", "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Mcp-Session-Id"), string(b), err
}

// mcpDelete ends a session.
func mcpDelete(client *http.Client, url, session string) (int, error) {
	req, _ := http.NewRequest(http.MethodDelete, url, nil)
	req.Header.Set("Mcp-Session-Id", session)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// frontHealthy opens a session with a valid initialize, checks that the
// demo server answered it, and ends the session.
func frontHealthy(tb testing.TB, client *http.Client, url string) {
	tb.Helper()
	code, session, body, err := mcpPost(client, url, "", fuzzInitialize)
	if err != nil || code != http.StatusOK || session == "" || !strings.Contains(body, "tailgate-demo-server") {
		tb.Fatalf("gateway unhealthy: initialize got %d %q %v: %.300s", code, session, err, body)
	}
	if code, err := mcpDelete(client, url, session); err != nil || code != http.StatusNoContent {
		tb.Fatalf("gateway unhealthy: DELETE of a new session got %d %v", code, err)
	}
}

// FuzzMCPFront sends fuzzed bodies, with fuzzed choices of method, path
// and headers, to the MCP front of one gateway (served on loopback with
// the demo server, reused by every input of the run). Every answer is a
// status a client can act on and never a 500; a session the input opened
// is ended; and every 32 inputs, and at the end, a fresh client can still
// initialize.
func FuzzMCPFront(f *testing.F) {
	// requestTimeout bounds what a fuzzed call can make the demo server do
	// (its hang and slow tools) well inside the client's timeout.
	_, base := serveLoopbackOpts(f, strings.Replace(demoConfig, "stdio: {cmd: DEMO}", "stdio: {cmd: DEMO, requestTimeout: 1s}", 1), Options{})
	client := &http.Client{Timeout: 15 * time.Second}
	frontHealthy(f, client, base+"/mcp")
	// A live, initialized session that inputs can address, so that bodies
	// also reach the forwarding path (and the demo server).
	code, live, body, err := mcpPost(client, base+"/mcp", "", fuzzInitialize)
	if err != nil || code != http.StatusOK || live == "" {
		f.Fatalf("initialize: %d %v %s", code, err, body)
	}
	if code, _, _, err := mcpPost(client, base+"/mcp", live, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); err != nil || code != http.StatusAccepted {
		f.Fatalf("initialized: %d %v", code, err)
	}
	f.Cleanup(func() { frontHealthy(f, client, base+"/mcp") }) // runs before the shutdown serveLoopbackOpts registered

	for _, body := range []string{
		fuzzInitialize,
		`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"hang","arguments":{}}}`,
		`{"jsonrpc":"2.0","id":"x","method":"ping"}`,
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"}]`,
		`{"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"demo://x"}}`,
		`{"jsonrpc":"2.0","id":5,"method":"prompts/get","params":{"name":"nope"}}`,
		`{"jsonrpc":"2.0","id":6,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"},"argument":{"name":"a","value":"b"}}}`,
		`{"jsonrpc":"2.0","id":7,"method":"logging/setLevel","params":{"level":"debug"}}`,
		`{"jsonrpc":"2.0","id":8,"method":"no/such/method"}`,
		`{"jsonrpc":"2.0","id":9,"result":{}}`,
		`{"jsonrpc":"1.0","id":null,"method":"initialize"}`,
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":null}`,
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2099-01-01","capabilities":{"sampling":{},"roots":{"listChanged":true}}}}`,
		`{`,
		`[]`,
		`null`,
		``,
		"\x00\xff",
	} {
		for _, v := range []uint8{0, 1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80} {
			f.Add(v, uint8(0), []byte(body))
		}
		for route := uint8(1); route < 6; route++ {
			f.Add(uint8(0), route, []byte(body))
		}
	}

	var n atomic.Int64
	f.Fuzz(func(t *testing.T, variant, route uint8, body []byte) {
		method, path := http.MethodPost, "/mcp"
		switch route % 8 {
		case 1:
			path = "/sse?sessionId=nope" // legacy SSE: a POST to a session that is not there
		case 2:
			path = "/mcp/deeper/path"
		case 3:
			method = http.MethodPut
		case 4:
			method = http.MethodDelete
		case 5:
			method = http.MethodGet // never with the live session: that is a stream that stays open
		case 6:
			method = http.MethodPatch
		}
		req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		switch variant & 3 {
		case 0:
			req.Header.Set("Accept", "application/json, text/event-stream")
		case 1:
			req.Header.Set("Accept", "application/json")
		case 2:
			req.Header.Set("Accept", "text/event-stream")
		}
		switch (variant >> 2) & 3 {
		case 0:
			req.Header.Set("Content-Type", "application/json")
		case 1:
			req.Header.Set("Content-Type", "application/json; charset=utf-8")
		case 2:
			req.Header.Set("Content-Type", "text/plain")
		}
		switch (variant >> 4) & 3 {
		case 1:
			req.Header.Set("Mcp-Session-Id", "no-such-session")
		case 2:
			if method == http.MethodPost {
				req.Header.Set("Mcp-Session-Id", live)
			} else {
				req.Header.Set("Mcp-Session-Id", "\u00e9\t")
			}
		}
		switch variant >> 6 {
		case 1:
			req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		case 2:
			req.Header.Set("Mcp-Protocol-Version", "1999-01-01")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		resp, err := client.Do(req.WithContext(ctx))
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("%s %s: reading the answer: %v", method, path, err)
		}
		if !frontStatuses[resp.StatusCode] {
			t.Fatalf("%s %s (variant %#x) %q: status %d", method, path, variant, body, resp.StatusCode)
		}
		if session := resp.Header.Get("Mcp-Session-Id"); session != "" && session != live {
			if code, err := mcpDelete(client, base+"/mcp", session); err != nil || (code != http.StatusNoContent && code != http.StatusNotFound) {
				t.Fatalf("DELETE of the session the input opened: %d %v", code, err)
			}
		}
		if n.Add(1)%32 == 0 {
			frontHealthy(t, client, base+"/mcp")
		}
	})
}
