package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
)

// authScenarios are the conformance suite's client scenarios for
// authorization of MCP 2025-03-26 to 2026-07-28 (0.2.0-alpha.12), run
// with tailgate as the OAuth client of the suite's server.
var authScenarios = []string{
	"auth/metadata-default", "auth/metadata-var1", "auth/metadata-var2", "auth/metadata-var3",
	"auth/basic-cimd",
	"auth/scope-from-www-authenticate", "auth/scope-from-scopes-supported", "auth/scope-omitted-when-undefined",
	"auth/scope-step-up", "auth/scope-retry-limit",
	"auth/token-endpoint-auth-basic", "auth/token-endpoint-auth-post", "auth/token-endpoint-auth-none",
	"auth/pre-registration",
	"auth/resource-mismatch", "auth/offline-access-scope", "auth/offline-access-not-supported",
	"auth/authorization-server-migration",
	"auth/iss-supported", "auth/iss-not-advertised", "auth/iss-supported-missing", "auth/iss-wrong-issuer",
	"auth/iss-unexpected", "auth/iss-normalized", "auth/metadata-issuer-mismatch",
	// An extension (io.modelcontextprotocol/oauth-client-credentials):
	// a target called as tailgate itself (backendAuth.oauth.clientCredentials).
	"auth/client-credentials-basic",
	// A server of MCP 2025-03-26's authorization: no protected resource
	// metadata, the authorization server's metadata at the server's own
	// origin, or only its default endpoints (/authorize, /token,
	// /register).
	"auth/2025-03-26-oauth-metadata-backcompat", "auth/2025-03-26-oauth-endpoint-fallback",
}

// modernOnly are the scenarios whose server speaks MCP 2026-07-28 only
// and refuses a session's initialize as a malformed request (not as an
// unknown method, which tailgate would bridge): their person's client
// speaks 2026-07-28, as go-sdk's own client does by default.
var modernOnly = map[string]bool{"auth/authorization-server-migration": true}

// connectLink finds the connect link in what tailgate answered.
var connectLink = regexp.MustCompile(`https?://[^\s"']+/oauth/connect/[^\s"'.,]+`)

// TestConformanceAuth runs the suite's authorization scenarios for a
// client with tailgate as the client: the suite's MCP server requires
// OAuth, tailgate's route has it as a backendAuth.oauth target, and a
// caller on the tailnet does what a person would: its first call is
// answered with a connect link, it follows the link (tailgate's page,
// the suite's authorization server, tailgate's callback), and calls
// again, now with its own token. Each scenario's checks must all pass.
func TestConformanceAuth(t *testing.T) {
	node, cli := conformanceCLI(t)
	tn := gatewaytest.NewTailnet(t)
	alice := tn.Node(t, "alice")
	only := os.Getenv("TAILGATE_CONFORMANCE_SCENARIO")
	for _, sc := range authScenarios {
		if only != "" && sc != only {
			continue
		}
		t.Run(strings.TrimPrefix(sc, "auth/"), func(t *testing.T) {
			checks, out := runAuthScenario(t, tn, alice, node, cli, sc)
			bad := 0
			for _, c := range checks {
				if c.Status == "FAILURE" || c.Status == "WARNING" {
					bad++
					t.Errorf("%s: %s: %s", c.Status, c.ID, c.ErrorMessage)
				}
			}
			if len(checks) == 0 {
				t.Errorf("no checks written; CLI output:\n%s", out)
			} else if bad > 0 {
				t.Logf("CLI output:\n%s", out)
			}
		})
	}
}

// runAuthScenario runs one scenario with a gateway whose target is the
// suite's server, and a person acting through it (actAsPerson).
func runAuthScenario(t *testing.T, tn *gatewaytest.Tailnet, caller *gatewaytest.Node, node, cli, scenario string) ([]conformanceCheck, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sc := startClientScenario(ctx, t, node, cli, scenario)
	oauth := sc.oauthConfig(t)
	if strings.HasPrefix(scenario, "auth/client-credentials-") {
		oauth = strings.Replace(oauth, "{", "{clientCredentials: true, ", 1)
	}
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, routeConfig("", `
          - name: hosted
            mcp: {host: "`+sc.serverURL+`", backendAuth: {oauth: `+oauth+`}}`)))
	awaitPeers(t, gw.Addr, caller)
	if err := actAsPerson(ctx, t, caller, gw.URL(3000, "/mcp"), modernOnly[scenario]); err != nil {
		t.Logf("the caller: %v", err)
	}
	return sc.finish(ctx, t)
}

// clientScenario is a client scenario of the suite under way: the CLI
// started the suite's server and a stand-in client command, which handed
// the server's URL over and waits; the test is the real client, and then
// lets the stand-in exit, so that the CLI writes its checks.
type clientScenario struct {
	serverURL, context string
	dir, done          string
	output             *strings.Builder
	exited             chan error
}

func startClientScenario(ctx context.Context, t *testing.T, node, cli, scenario string) *clientScenario {
	t.Helper()
	dir := t.TempDir()
	handoff, done := filepath.Join(dir, "handoff"), filepath.Join(dir, "done")
	for _, p := range []string{handoff, done} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	script := filepath.Join(dir, "client.sh")
	os.WriteFile(script, []byte("#!/bin/sh\nprintf '%s\\n%s\\n' \"$1\" \"$MCP_CONFORMANCE_CONTEXT\" > "+handoff+"\nread x < "+done+"\n"), 0o755)
	cmd := exec.CommandContext(ctx, node, cli, "client", "--scenario", scenario, "--command", script, "--timeout", "60000", "-o", filepath.Join(dir, "results"))
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	sc := &clientScenario{dir: dir, done: done, output: new(strings.Builder), exited: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = sc.output, sc.output
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { sc.exited <- cmd.Wait() }()
	t.Cleanup(func() { sc.release() })
	got := make(chan []byte, 1)
	go func() { b, _ := os.ReadFile(handoff); got <- b }()
	select {
	case b := <-got:
		lines := strings.SplitN(strings.TrimSpace(string(b)), "\n", 2)
		sc.serverURL = lines[0]
		if len(lines) > 1 {
			sc.context = lines[1]
		}
	case err := <-sc.exited:
		t.Fatalf("the CLI exited before starting the client: %v\n%s", err, sc.output)
	case <-ctx.Done():
		t.Fatalf("the CLI did not start the client\n%s", sc.output)
	}
	return sc
}

// oauthConfig is the target's backendAuth.oauth for the scenario: its
// pre-registered client where the scenario has one, else a client ID
// metadata document URL (and dynamic registration).
func (sc *clientScenario) oauthConfig(t *testing.T) string {
	var pre struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if json.Unmarshal([]byte(sc.context), &pre) == nil && pre.ClientID != "" {
		secret := filepath.Join(sc.dir, "client-secret")
		os.WriteFile(secret, []byte(pre.ClientSecret), 0o600)
		return fmt.Sprintf(`{clientId: %q, clientSecret: {file: %q}}`, pre.ClientID, secret)
	}
	return `{clientMetadataUrl: "https://conformance-test.local/client-metadata.json"}`
}

// release lets the stand-in client exit (once).
func (sc *clientScenario) release() {
	if f, err := os.OpenFile(sc.done, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
		io.WriteString(f, "done\n")
		f.Close()
	}
}

// finish lets the stand-in exit and reads the checks the CLI wrote.
func (sc *clientScenario) finish(ctx context.Context, t *testing.T) ([]conformanceCheck, string) {
	// The stand-in opens its end of the FIFO once it has handed over:
	// until it has, there is no reader to release.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for exited := false; !exited; {
		sc.release()
		select {
		case <-sc.exited:
			exited = true
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("the CLI did not finish\n%s", sc.output)
		}
	}
	return readChecks(t, filepath.Join(sc.dir, "results")), sc.output.String()
}

// actAsPerson is what a person in front of an MCP client does: connect,
// list tools and call test-tool; an answer that carries a connect link
// is followed in the browser (at most three times), and the step tried
// again.
func actAsPerson(ctx context.Context, t *testing.T, n *gatewaytest.Node, url string, modern bool) error {
	browser := browserOf(n)
	var cs *mcp.ClientSession
	defer func() {
		if cs != nil {
			cs.Close()
		}
	}()
	step := func() error {
		if modern {
			return modernSteps(ctx, n.Client(), url)
		}
		var err error
		if cs == nil {
			if cs, err = n.Connect(ctx, url, nil); err != nil {
				cs = nil
				return err
			}
		}
		if _, err = cs.ListTools(ctx, nil); err != nil {
			return err
		}
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "test-tool", Arguments: map[string]any{}})
		if err == nil && res.IsError {
			err = errors.New(contentText(res))
		}
		return err
	}
	var err error
	for range 4 {
		if err = step(); err == nil {
			return nil
		}
		link := connectLink.FindString(err.Error())
		if link == "" {
			return err
		}
		t.Logf("connect link: %s", link)
		if cs != nil {
			cs.Close()
			cs = nil
		}
		resp, ferr := browser.Get(link)
		if ferr != nil {
			return fmt.Errorf("following %s: %w", link, ferr)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("the connect flow ended on HTTP %d: %s", resp.StatusCode, page)
		}
	}
	return err
}

// contentText is the text of a tool result.
func contentText(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// browserOf is a person's browser on node n: tailnet hosts through the
// node, the suite's authorization server on this host directly; it
// follows redirects.
func browserOf(n *gatewaytest.Node) *http.Client {
	var d net.Dialer
	return &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, _ := net.SplitHostPort(addr)
			if host == "localhost" || net.ParseIP(host).IsLoopback() {
				return d.DialContext(ctx, network, addr)
			}
			return n.Dial(ctx, network, addr)
		},
	}}
}

// readChecks reads the checks.json the CLI wrote under dir.
func readChecks(t *testing.T, dir string) []conformanceCheck {
	var checks []conformanceCheck
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.Name() != "checks.json" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Error(err)
			return nil
		}
		var cs []conformanceCheck
		if err := json.Unmarshal(data, &cs); err != nil {
			t.Errorf("%s: %v", path, err)
		}
		checks = append(checks, cs...)
		return nil
	})
	return checks
}

// modernSteps is a client of MCP 2026-07-28 only (no session, every
// request self-describing), scripted: discover, list tools, call
// test-tool. An error answer is returned with its message and data, so
// that a connect link in either is found.
func modernSteps(ctx context.Context, client *http.Client, url string) error {
	meta := map[string]any{
		"io.modelcontextprotocol/protocolVersion":    "2026-07-28",
		"io.modelcontextprotocol/clientCapabilities": map[string]any{},
		"io.modelcontextprotocol/clientInfo":         map[string]any{"name": "person", "version": "1"},
	}
	for i, st := range []struct {
		method, name string
		params       map[string]any
	}{
		{"server/discover", "", map[string]any{}},
		{"tools/list", "", map[string]any{}},
		{"tools/call", "test-tool", map[string]any{"name": "test-tool", "arguments": map[string]any{}}},
	} {
		st.params["_meta"] = meta
		body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": i + 1, "method": st.method, "params": st.params})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(string(body)))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
		req.Header.Set("Mcp-Method", st.method)
		if st.name != "" {
			req.Header.Set("Mcp-Name", st.name)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answer := raw
		if i := strings.LastIndex(string(raw), "data: {"); i >= 0 { // an event stream: its last message
			answer = []byte(strings.TrimSpace(strings.SplitN(string(raw[i+len("data: "):]), "\n", 2)[0]))
		}
		var m struct {
			Result *struct {
				IsError bool `json:"isError"`
			} `json:"result"`
			Error *struct {
				Message string          `json:"message"`
				Data    json.RawMessage `json:"data"`
			} `json:"error"`
		}
		if err := json.Unmarshal(answer, &m); err != nil {
			return fmt.Errorf("%s: HTTP %d %s", st.method, resp.StatusCode, raw)
		}
		if m.Error != nil {
			return fmt.Errorf("%s: %s %s", st.method, m.Error.Message, m.Error.Data)
		}
		if m.Result == nil || m.Result.IsError {
			return fmt.Errorf("%s: %s", st.method, answer)
		}
	}
	return nil
}
