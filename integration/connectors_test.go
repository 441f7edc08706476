package integration

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
)

// Connections are each person's own: against the conformance suite's
// OAuth-protected server (a real authorization server and resource
// server), alice's link serves alice only; once she has connected, her
// calls carry her token while bob still gets a link of his own; policy
// sees whether the caller is connected (mcp.connection), and who may
// connect (connectAuthorization: not carol, who gets no link); after she
// disconnects on her connections page, her next call is a tool error
// that carries a new link (her client declared no URL elicitations), and
// once she follows it her session hears that the elicitation completed.
func TestConnectorsArePerPerson(t *testing.T) {
	node, cli := conformanceCLI(t)
	tn := gatewaytest.NewTailnet(t)
	alice, bob, carol := tn.Node(t, "alice"), tn.Node(t, "bob"), tn.Node(t, "carol")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sc := startClientScenario(ctx, t, node, cli, "auth/metadata-default")
	defer sc.finish(ctx, t)
	// Who may connect is policy too: here everyone but carol.
	oauthCfg := strings.Replace(sc.oauthConfig(t), "{", `{connectAuthorization: {rules: ['source.tailscale.user.login != "`+carol.Login(t)+`"']}, `, 1)
	target := `
          targets:
          - name: hosted
            mcp: {host: "` + sc.serverURL + `", backendAuth: {oauth: ` + oauthCfg + `}}`
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, `
binds:
- port: 3000
  listeners:
  - routes:
    - name: open
      matches: [{path: {pathPrefix: /mcp}}]
      backends:
      - mcp:`+target+`
    - name: guarded
      matches: [{path: {pathPrefix: /guarded}}]
      policies:
        mcpAuthorization:
          rules: ['mcp.connection.connected']
      backends:
      - mcp:`+target+`
`))
	mcpURL := gw.URL(3000, "/mcp")
	awaitPeers(t, gw.Addr, alice, bob, carol)

	// Nobody is connected: each caller's session start answers with a
	// link of its own.
	_, aerr := alice.Connect(ctx, mcpURL, nil)
	aliceLink := connectLink.FindString(errText(aerr))
	_, berr := bob.Connect(ctx, mcpURL, nil)
	bobLink := connectLink.FindString(errText(berr))
	if aliceLink == "" || bobLink == "" || aliceLink == bobLink {
		t.Fatalf("want a link each: alice %v, bob %v", aerr, berr)
	}
	// bob cannot use alice's link, nor complete her flow.
	if code, page := fetchPage(ctx, t, browserOf(bob), aliceLink); code != http.StatusForbidden || !strings.Contains(page, "another user") {
		t.Fatalf("bob following alice's link: %d %s", code, page)
	}
	// carol may not connect: she gets no link, but why.
	if _, err := carol.Connect(ctx, mcpURL, nil); err == nil || connectLink.FindString(err.Error()) != "" || !strings.Contains(err.Error(), "may not connect") {
		t.Fatalf("carol, whom connectAuthorization refuses: %v", err)
	}
	if code, page := fetchPage(ctx, t, browserOf(alice), aliceLink); code != http.StatusOK || !strings.Contains(page, "Connected") {
		t.Fatalf("alice following her link: %d %s", code, page)
	}

	completed := make(chan string, 4)
	cs, err := alice.Connect(ctx, mcpURL, &mcp.ClientOptions{ElicitationCompleteHandler: func(_ context.Context, req *mcp.ElicitationCompleteNotificationRequest) {
		completed <- req.Params.ElicitationID
	}})
	if err != nil {
		t.Fatalf("alice after connecting: %v", err)
	}
	defer cs.Close()
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "test-tool", Arguments: map[string]any{}}); err != nil || res.IsError {
		t.Fatalf("alice's call: %v %v", res, err)
	}
	guarded, err := alice.Connect(ctx, gw.URL(3000, "/guarded"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer guarded.Close()
	if res, err := guarded.CallTool(ctx, &mcp.CallToolParams{Name: "test-tool", Arguments: map[string]any{}}); err != nil || res.IsError {
		t.Fatalf("alice's call where policy wants a connection: %v %v", res, err)
	}
	if _, err := bob.Connect(ctx, mcpURL, nil); connectLink.FindString(errText(err)) == "" {
		t.Fatalf("bob, still not connected: %v", err)
	}

	// Her connections page lists the target; disconnecting removes it.
	base := strings.TrimSuffix(aliceLink, aliceLink[strings.Index(aliceLink, "/oauth/"):])
	code, page := fetchPage(ctx, t, browserOf(alice), base+"/oauth/connections")
	form := formToken.FindStringSubmatch(page)
	if code != http.StatusOK || !strings.Contains(page, "hosted") || !strings.Contains(page, "Disconnect") || form == nil {
		t.Fatalf("alice's connections: %d %s", code, page)
	}
	if code, page := fetchPage(ctx, t, browserOf(bob), base+"/oauth/connections"); code != http.StatusOK || strings.Contains(page, "Disconnect") {
		t.Fatalf("bob's connections: %d %s", code, page)
	}
	disconnect := func(origin string, fields url.Values) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+"/oauth/disconnect/hosted", strings.NewReader(fields.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", origin)
		resp, err := browserOf(alice).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Another site can make alice's browser post, but neither from its
	// own origin nor without the page's form token.
	if code := disconnect("https://evil.example", url.Values{"form": {form[1]}}); code != http.StatusForbidden {
		t.Fatalf("a cross-site disconnect: %d", code)
	}
	if code := disconnect("null", url.Values{"form": {"forged"}}); code != http.StatusForbidden {
		t.Fatalf("a disconnect without the page's token: %d", code)
	}
	if code := disconnect("null", url.Values{"form": {form[1]}}); code != http.StatusOK {
		t.Fatalf("disconnect from the page (Origin null, as browsers send over http): %d", code)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "test-tool", Arguments: map[string]any{}})
	again := connectLink.FindString(contentText(res))
	if err != nil || !res.IsError || again == "" {
		t.Fatalf("alice's call after disconnecting: %v %v, want a tool error with a connect link", res, err)
	}
	if res, err := guarded.CallTool(ctx, &mcp.CallToolParams{Name: "test-tool", Arguments: map[string]any{}}); err == nil && !res.IsError {
		t.Fatalf("alice's call where policy wants a connection, after disconnecting: allowed")
	}
	// Connecting again completes the link's URL elicitation: her session
	// is told, so that her client can try again by itself.
	if code, page := fetchPage(ctx, t, browserOf(alice), again); code != http.StatusOK || !strings.Contains(page, "Connected") {
		t.Fatalf("alice following her new link: %d %s", code, page)
	}
	select {
	case id := <-completed:
		if !strings.HasSuffix(again, "/"+id) {
			t.Errorf("elicitation %q completed; want the link's, %s", id, again)
		}
	case <-ctx.Done():
		t.Fatal("alice's session was not told that her connection is made")
	}
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "test-tool", Arguments: map[string]any{}}); err != nil || res.IsError {
		t.Fatalf("alice's call after connecting again: %v %v", res, err)
	}

}

// formToken finds the connections page's form token.
var formToken = regexp.MustCompile(`name="form" value="([^"]+)"`)

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
