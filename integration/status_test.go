package integration

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "write the status page's screenshot to docs/status.png (the README's) as well as to the test's temp dir")

// statusPageConfig serves the status page on the tailnet to ALICE only,
// and an MCP route of a working target and one that cannot start
// (failOpen: sessions go on with the other), whose env tool only ALICE
// may call, and where each person may make 5 tool calls.
const statusPageConfig = `
config:
  readiness: {targets: any}
binds:
- port: 3000
  listeners:
  - routes:
    - name: status
      matches: [{path: {exact: /status}}]
      policies:
        authorization:
          rules: ['source.tailscale.user.login == "ALICE"']
      backends:
      - status: {}
    - name: mcp
      policies:
        localRateLimit:
        - maxTokens: 5
          tokensPerFill: 1
          fillInterval: 1h
          key: 'source.tailscale.user.login'
          match: 'mcp.method == "tools/call"'
        mcpAuthorization:
          rules:
          - deny: 'mcp.tool.name == "env" && source.tailscale.user.login != "ALICE"'
          - 'true'
      backends:
      - mcp:
          failureMode: failOpen
          prefixMode: never
          targets:
          - name: demo
            stdio: {cmd: $DEMO}
          - name: search
            stdio: {cmd: /nonexistent/search-server}
`

// The status page in a real browser (headless Chromium from the
// distribution, driven by chromedp): a gateway on the tailnet with alice's
// session, bob's and a CI runner's sessionless calls, denied calls, a call
// past a limit and a denied look at the page; the admin page shows the
// targets (one that cannot start, named with why), alice's login and
// client, bob's client name — markup — as text, the denials with their
// rules (and the limit), the calls per tool, alice's key at its limit;
// no script runs. On the tailnet, the page is alice's to see, not
// bob's. The screenshot goes to the test's temp dir (and, with
// -update-screenshot, to docs/status.png for the README).
func TestStatusPageInBrowser(t *testing.T) {
	browser := chromiumPath(t)
	tn := gatewaytest.NewTailnet(t, gatewaytest.AllowTags("tag:ci"))
	alice, bob := tn.Node(t, "alice-laptop"), tn.Node(t, "bob-desktop")
	ci := tn.Node(t, "ci-runner", gatewaytest.Tags("tag:ci"))
	aliceID := alice.Login(t)
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, strings.ReplaceAll(statusPageConfig, "ALICE", aliceID)))
	gw.Server.SetReady(true)

	const bobClient = `<script>alert("bob")</script>inspector`
	aliceCS := connectAs(t, alice, gw, "claude-code", gatewaytest.LegacySession)
	bobCS := connectAs(t, bob, gw, bobClient, nil)
	ciCS := connectAs(t, ci, gw, "ci-bot", nil)
	for _, call := range []struct {
		cs     *mcp.ClientSession
		tool   string
		args   map[string]any
		denied bool
	}{
		{aliceCS, "echo", map[string]any{"message": "hi"}, false},
		{aliceCS, "add", map[string]any{"a": 1, "b": 2}, false},
		{aliceCS, "env", map[string]any{"names": []string{"HOME"}}, false},
		{aliceCS, "echo", map[string]any{"message": "again"}, false},
		{aliceCS, "add", map[string]any{"a": 3, "b": 4}, false},
		{aliceCS, "echo", map[string]any{"message": "one too many"}, true}, // past the limit
		{bobCS, "echo", map[string]any{"message": "hi"}, false},
		{bobCS, "env", map[string]any{"names": []string{"HOME"}}, true},
		{ciCS, "add", map[string]any{"a": 2, "b": 3}, false},
		{ciCS, "env", map[string]any{"names": []string{"HOME"}}, true},
	} {
		res, err := call.cs.CallTool(context.Background(), &mcp.CallToolParams{Name: call.tool, Arguments: call.args})
		if denied := err != nil || res.IsError; denied != call.denied {
			t.Fatalf("%s: denied %v, want %v (%v)", call.tool, denied, call.denied, err)
		}
	}
	for _, look := range []struct {
		who  *gatewaytest.Node
		code int
	}{{alice, http.StatusOK}, {bob, http.StatusForbidden}} {
		if code := statusCode(t, look.who, gw.URL(3000, "/status")); code != look.code {
			t.Fatalf("%s GET /status on the tailnet: %d, want %d", look.who.Name, code, look.code)
		}
	}

	admin := httptest.NewServer(gw.Server.AdminHandler())
	t.Cleanup(admin.Close)
	got, png := renderInBrowser(t, browser, admin.URL+"/")
	for section, wants := range map[string][]string{
		"targets":  {"demo", "search", "cannot start", "/nonexistent/search-server"},
		"sessions": {aliceID, "alice-laptop", "claude-code", "2025-11-25", "Streamable HTTP", bobClient, "2026-07-28", "sessionless", "tag:ci", "ci-bot"},
		"children": {"demo", aliceID, "sessionless"},
		"denials": {"tool env", "binds[0].listeners[0].routes[1].policies.mcpAuthorization.rules[0]", "deny rule matched",
			"GET /status", "binds[0].listeners[0].routes[0].policies.authorization.rules", "no allow rule matched", "bob-desktop",
			"tool echo", "binds[0].listeners[0].routes[1].policies.localRateLimit[0]", "rate limit"},
		"calls":  {"tools/call", "echo", "add", "env"},
		"limits": {"localRateLimit[0] (requests)", aliceID, "near its bound"},
	} {
		for _, want := range wants {
			if !strings.Contains(got[section], want) {
				t.Errorf("#%s does not show %q:\n%s", section, want, got[section])
			}
		}
	}
	if got["scripts"] != "0" || got["dialog"] != "false" {
		t.Errorf("the page ran script: %s script elements, dialog opened: %s", got["scripts"], got["dialog"])
	}
	saveScreenshot(t, png)
}

// connectAs connects n to the gateway's MCP route as a client named
// name: with a session (opts LegacySession), or sessionless (nil).
func connectAs(t *testing.T, n *gatewaytest.Node, gw *gatewaytest.Gateway, name string, opts *mcp.ClientSessionOptions) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	transport := &mcp.StreamableClientTransport{Endpoint: gw.URL(3000, "/mcp"), HTTPClient: n.Client(), MaxRetries: -1}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: name, Version: "1.0.0"}, nil).Connect(ctx, transport, opts)
	if err != nil {
		t.Fatalf("%s: connect: %v", n.Name, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// statusCode is the status of n's GET of url over the tailnet.
func statusCode(t *testing.T, n *gatewaytest.Node, url string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := n.HTTPGet(ctx, url)
	if err != nil {
		t.Fatalf("%s GET %s: %v", n.Name, url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// chromiumPath is the browser the test drives: $TAILGATE_CHROMIUM, else
// Chromium or Chrome on PATH. Without one the test fails, saying how to
// get it: make test installs the distribution's package (make chromium).
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TAILGATE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("the status page's browser test needs Chromium and none is on PATH: run `make chromium` " +
		"(apt-get install chromium), or set TAILGATE_CHROMIUM to a Chromium or Chrome binary")
	return ""
}

// renderInBrowser loads url in headless Chromium and returns the text of
// each section of the page (by id), how many script elements it has
// ("scripts") and whether a dialog opened ("dialog"), and a screenshot of
// the whole page.
func renderInBrowser(t *testing.T, browser, url string) (map[string]string, []byte) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.WindowSize(1440, 900),
		chromedp.Flag("disable-dev-shm-usage", true))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium's sandbox refuses root
	}
	// The browser lives as long as this context; the deadline is for
	// each step (chromedp.Run: not on the context that starts it).
	ctx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelBrowser := chromedp.NewContext(ctx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	var dialog atomic.Bool
	if err := chromedp.Listen(ctx, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			dialog.Store(true)
		}
	}); err != nil {
		t.Fatalf("Chromium (%s) did not start: %v", browser, err)
	}
	step, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(step, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.ID("limits"))); err != nil {
		t.Fatalf("Chromium (%s) on %s: %v", browser, url, err)
	}
	got := map[string]string{"dialog": fmt.Sprint(dialog.Load())}
	for _, id := range []string{"targets", "sessions", "children", "denials", "calls", "limits"} {
		text, err := chromedp.Run(step, chromedp.Text(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("#%s: %v", id, err)
		}
		got[id] = text
	}
	scripts, err := chromedp.Run(step, chromedp.Evaluate[int](`document.querySelectorAll("script").length`))
	if err != nil {
		t.Fatal(err)
	}
	got["scripts"] = fmt.Sprint(scripts)
	png, err := chromedp.Run(step, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	return got, png
}

// saveScreenshot writes the page's screenshot to the test's temp dir, and
// with -update-screenshot to docs/status.png.
func saveScreenshot(t *testing.T, png []byte) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "status.png")
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", out, len(png))
	if *updateScreenshot {
		if err := os.MkdirAll("../docs", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("../docs/status.png", png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: docs/status.png updated")
	}
}
