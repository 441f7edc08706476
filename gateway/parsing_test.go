package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	m3 "github.com/mark3labs/mcp-go/mcp"
	m3server "github.com/mark3labs/mcp-go/server"
)

// m3ServerEnv, set in a child's environment to a directory, makes this
// test binary a mark3labs/mcp-go stdio server (which decodes with Go's
// encoding/json, case-insensitively) with tools echo and secret; secret
// leaves a file named "secret-ran" in that directory.
const m3ServerEnv = "TAILGATE_TEST_M3_SERVER"

func init() {
	dir := os.Getenv(m3ServerEnv)
	if dir == "" {
		return
	}
	s := m3server.NewMCPServer("m3", "1.0.0", m3server.WithToolCapabilities(false))
	s.AddTool(m3.NewTool("echo", m3.WithString("message")), func(_ context.Context, req m3.CallToolRequest) (*m3.CallToolResult, error) {
		return m3.NewToolResultText(req.GetString("message", "")), nil
	})
	s.AddTool(m3.NewTool("secret"), func(context.Context, m3.CallToolRequest) (*m3.CallToolResult, error) {
		os.WriteFile(filepath.Join(dir, "secret-ran"), nil, 0o600)
		return m3.NewToolResultText("the secret tool ran"), nil
	})
	if err := m3server.ServeStdio(s); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// echoOnlyM3Config is a route that allows only the tool echo, served by
// this test binary as a mark3labs/mcp-go server (m3ServerEnv).
func echoOnlyM3Config(t *testing.T, dir string) string {
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`
binds:
- port: 3000
  listeners:
  - routes:
    - name: mcp
      policies:
        mcpAuthorization:
          rules: ['mcp.tool.name == "echo"']
      backends:
      - mcp:
          targets:
          - name: m3
            stdio: {cmd: %q, env: {%s: %q}}
`, bin, m3ServerEnv, dir)
}

// A message whose keys a case-insensitive decoder (Go's encoding/json:
// mark3labs/mcp-go, most hand-written Go servers) reads otherwise than
// tailgate is refused with -32600 before the child sees it, on a session
// and on a sessionless (2026-07-28) request, and counted: with a rule
// allowing only echo, the secret tool never runs. Failed before: tailgate
// judged echo (or a ping) and the child ran secret.
func TestKeysReadOneWayOnly(t *testing.T) {
	dir := t.TempDir()
	s, base := serveLoopback(t, echoOnlyM3Config(t, dir))
	ran := func() bool {
		_, err := os.Stat(filepath.Join(dir, "secret-ran"))
		return err == nil
	}
	rs := rawInitialize(t, base+"/mcp", `{}`)
	post := func(body string) (int, string) {
		resp := rs.post(body)
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(got)
	}
	// The setup works: echo runs, secret is denied.
	if code, got := post(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}`); code != http.StatusOK || !strings.Contains(got, `"text":"hi"`) {
		t.Fatalf("echo: %d %s", code, got)
	}
	if code, got := post(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"secret"}}`); !strings.Contains(got, "not permitted") || ran() {
		t.Fatalf("secret by its name: %d %s", code, got)
	}
	for i, tc := range []struct {
		name string
		// method is what a client would put in Mcp-Method; members are
		// the top-level members besides jsonrpc, id and method.
		method, members string
	}{
		{"Name beside name", "tools/call", `"params":{"name":"echo","Name":"secret",META}`},
		{"Method beside method", "ping", `"Method":"tools/call","params":{"name":"secret",META}`},
		{"paramſ beside params", "tools/call", `"params":{"name":"echo",META},"param\u017f":{"name":"secret",META}`},
		{"Name escaped", "tools/call", `"params":{"name":"echo","\u004eame":"secret",META}`},
	} {
		session := `{"jsonrpc":"2.0","id":` + fmt.Sprint(10+i) + `,"method":"` + tc.method + `",` + strings.ReplaceAll(tc.members, ",META", "") + `}`
		t.Run(tc.name+" on a session", func(t *testing.T) {
			code, got := post(session)
			if code != http.StatusBadRequest || !strings.Contains(got, `"code":-32600`) || !strings.Contains(got, "case-insensitive") {
				t.Errorf("%s: %d %s, want 400 with -32600 naming the key", session, code, got)
			}
			if ran() {
				t.Fatal("the secret tool ran")
			}
		})
		t.Run(tc.name+" sessionless", func(t *testing.T) {
			body := `{"jsonrpc":"2.0","id":1,"method":"` + tc.method + `",` + strings.ReplaceAll(tc.members, "META", modernMeta) + `}`
			req := modernRequest(t, base, tc.method, "", "")
			req.Body = io.NopCloser(strings.NewReader(body))
			req.ContentLength = int64(len(body))
			if tc.method == "tools/call" {
				req.Header.Set("Mcp-Name", "echo") // as params.name says
			}
			resp, got := do(t, req)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(got), `"code":-32600`) {
				t.Errorf("%s: %d %s, want 400 with -32600", body, resp.StatusCode, got)
			}
			if ran() {
				t.Fatal("the secret tool ran")
			}
		})
	}
	// The session goes on.
	if code, got := post(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"message":"still"}}}`); code != http.StatusOK || !strings.Contains(got, `"text":"still"`) {
		t.Errorf("echo after the refusals: %d %s", code, got)
	}
	_, metrics := get(t, s.AdminHandler(), "/metrics")
	if want := `tailgate_messages_refused_total{reason="ambiguous",route="mcp"} 8`; !strings.Contains(metrics, want) {
		t.Errorf("metrics lack %s:\n%s", want, grepLines(metrics, "refused"))
	}
}

// Arguments nested deeper than servers read are refused before the
// child sees them: go-sdk's decoder (the demo server's) stops at 1000
// levels and its stdio session, and the child, end there. Failed before:
// a call 999 deep in arguments killed the caller's child.
func TestDeepNestingRefused(t *testing.T) {
	_, base := serveLoopback(t, demoConfig)
	deep := strings.Repeat("[", 999) + strings.Repeat("]", 999)
	rs := rawInitialize(t, base+"/mcp", `{}`)
	post := func(body string) (int, string) {
		resp := rs.post(body)
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(got)
	}
	if code, got := post(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"x","deep":` + deep + `}}}`); code != http.StatusBadRequest || !strings.Contains(got, `"code":-32600`) || !strings.Contains(got, "nested") {
		t.Errorf("999 deep on a session: %d %.200s, want 400 with -32600", code, got)
	}
	req := modernRequest(t, base, "tools/call", "echo", `"name":"echo","arguments":{"message":"x","deep":`+deep+`}`)
	if resp, got := do(t, req); resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(got), `"code":-32600`) {
		t.Errorf("999 deep sessionless: %d %.200s, want 400 with -32600", resp.StatusCode, got)
	}
	// The child lives on, and as deep as servers read passes.
	ok := strings.Repeat("[", 60) + strings.Repeat("]", 60) // 63 levels in all
	if code, got := post(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"alive"},"_meta":{"deep":` + ok + `}}}`); code != http.StatusOK || !strings.Contains(got, `"text":"alive"`) {
		t.Errorf("a call after: %d %.300s", code, got)
	}
}
