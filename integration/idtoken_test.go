package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/gateway"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"github.com/tailgate-dev/tailgate/gateway/idtoken"
	"github.com/tailgate-dev/tailgate/tsnode"
)

// This file tests tailgate's signed caller identity (issue 21, items 3
// and 4) end to end on the in-process tailnet: remote targets on tailnet
// nodes that admit only tailgate's identity tokens, checked with go-sdk's
// bearer-token middleware and idtoken.Verifier against the JWKS they fetch
// from the gateway over WireGuard; and a stdio child handed the same kind
// of token.

// tokenCaller is what a token-checking target's whoami tool reports of
// its caller: the claims of the token that admitted the request.
type tokenCaller struct {
	Subject  string   `json:"subject"`
	NodeName string   `json:"nodeName"`
	NodeID   string   `json:"nodeID"`
	Tags     []string `json:"tags"`
}

// gatewayKeys is what a gateway's discovery document says about its
// tokens: who issues them and where the keys that verify them are.
type gatewayKeys struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
}

// awaitPeers waits until each of nodes has the node at addr in its
// netmap. Until then a tsnet node dials that address through the host's
// own network (where, on some machines, a proxy answers any address with
// a 404), so a node that joined before the one at addr waits for it
// before its first request there.
func awaitPeers(t *testing.T, addr netip.Addr, nodes ...*gatewaytest.Node) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range nodes {
		lc, err := n.LocalClient()
		if err != nil {
			t.Fatal(err)
		}
		for {
			st, err := lc.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			known := false
			for _, p := range st.Peer {
				known = known || slices.Contains(p.TailscaleIPs, addr)
			}
			if known {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no peer at %v in its netmap within 30s", n.Name, addr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// tailnetGet GETs url from node n over the tailnet and returns the body
// of its 200 answer. A dial the tailnet has no path for yet (a netmap
// still on its way) is tried again for a few seconds.
func tailnetGet(t *testing.T, n *gatewaytest.Node, url string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := n.HTTPGet(ctx, url)
		if err != nil {
			if gatewaytest.Retryable(err) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			t.Fatalf("%s: GET %s: %v", n.Name, url, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: GET %s: %d %q %v", n.Name, url, resp.StatusCode, body, err)
		}
		return body
	}
}

// discoverKeys learns the gateway's issuer and JWKS URL as a target
// would: from its OpenID-style discovery document, fetched by node n over
// the tailnet. The issuer must be the gateway's tailnet URL (its MagicDNS
// name and first port).
func discoverKeys(t *testing.T, n *gatewaytest.Node, gw *gatewaytest.Gateway) gatewayKeys {
	t.Helper()
	body := tailnetGet(t, n, gw.URL(3000, idtoken.DiscoveryPath))
	var keys gatewayKeys
	if err := json.Unmarshal(body, &keys); err != nil {
		t.Fatalf("discovery document %q: %v", body, err)
	}
	name := strings.TrimSuffix(gw.Node.DNSName(), ".")
	if want := "http://" + name + ":3000"; keys.Issuer != want || keys.JWKSURI != want+idtoken.JWKSPath {
		t.Fatalf("discovery says issuer %q, keys at %q; want %q and %q", keys.Issuer, keys.JWKSURI, want, want+idtoken.JWKSPath)
	}
	return keys
}

// publishedKeyIDs are the key IDs of the gateway's JWKS, fetched by n
// over the tailnet.
func publishedKeyIDs(t *testing.T, n *gatewaytest.Node, keys gatewayKeys) []string {
	t.Helper()
	body := tailnetGet(t, n, keys.JWKSURI)
	var set struct {
		Keys []struct {
			KeyID string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatalf("JWKS %q: %v", body, err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.KeyID)
	}
	return kids
}

// tokenKeyID is the key ID in token's JOSE header: which of the
// gateway's keys signed it.
func tokenKeyID(t *testing.T, token string) string {
	t.Helper()
	head, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(head)
	var h struct {
		KeyID string `json:"kid"`
	}
	if err == nil {
		err = json.Unmarshal(raw, &h)
	}
	if err != nil || h.KeyID == "" {
		t.Fatalf("token header %q: %v", raw, err)
	}
	return h.KeyID
}

// tokenTarget is a remote MCP server on a tailnet node, written as the
// README tells a target's author to: go-sdk's Streamable HTTP handler
// behind auth.RequireBearerToken with idtoken.Verifier, whose keys come
// from the gateway over the target node's own tailnet client. Its tool
// whoami reports the caller the token names.
type tokenTarget struct {
	// url is where it serves, "http://<node>:8080/mcp": also its tokens'
	// audience (tailgate's default for a remote target).
	url string

	mu sync.Mutex
	// accepted are the bearer tokens of the requests it admitted, in
	// order.
	accepted []string
}

// serveTokenTarget serves a tokenTarget from node, trusting the gateway
// that keys describes.
func serveTokenTarget(t *testing.T, node *gatewaytest.Node, keys gatewayKeys) *tokenTarget {
	t.Helper()
	tt := &tokenTarget{url: "http://" + node.Name + ":8080/mcp"}
	server := mcp.NewServer(&mcp.Implementation{Name: node.Name, Version: "v0.0.1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "whoami", Description: "Says who the identity token names."},
		func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, tokenCaller, error) {
			// The token of this request (req.Extra), not of the
			// session's initialize, which is what the handler's ctx
			// holds in a stateful session.
			c, err := idtoken.ClaimsFrom(req.Extra.TokenInfo)
			if err != nil {
				return nil, tokenCaller{}, err
			}
			return nil, tokenCaller{Subject: c.Subject, NodeName: c.Node.Name, NodeID: c.Node.ID, Tags: c.Tags}, nil
		})
	verify := idtoken.Verifier(keys.JWKSURI, keys.Issuer, tt.url, node.HTTPClient())
	url := node.RemoteMCP(t, "8080", server, nil, func(mcpHandler http.Handler) http.Handler {
		record := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tt.mu.Lock()
			tt.accepted = append(tt.accepted, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
			tt.mu.Unlock()
			mcpHandler.ServeHTTP(w, r)
		})
		return auth.RequireBearerToken(verify, &auth.RequireBearerTokenOptions{ClockSkew: idtoken.Leeway})(record)
	})
	if url != tt.url {
		t.Fatalf("target serves at %s, not %s", url, tt.url)
	}
	return tt
}

// lastToken is the token of the last request the target admitted.
func (tt *tokenTarget) lastToken(t *testing.T) string {
	t.Helper()
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if len(tt.accepted) == 0 {
		t.Fatalf("%s admitted no request", tt.url)
	}
	return tt.accepted[len(tt.accepted)-1]
}

// whoamiThrough calls tool (a target's whoami, as tailgate names it) as
// node n through gw, in a session of its own that it closes, and returns
// what the target was told.
func whoamiThrough(t *testing.T, n *gatewaytest.Node, gw *gatewaytest.Gateway, tool string) tokenCaller {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := n.Connect(ctx, gw.URL(3000, "/mcp"), nil)
	if err != nil {
		t.Fatalf("%s: connect: %v", n.Name, err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool})
	if err != nil {
		t.Fatalf("%s: %s: %v", n.Name, tool, err)
	}
	if res.IsError {
		t.Fatalf("%s: %s failed: %s", n.Name, tool, resultText(res))
	}
	raw, _ := json.Marshal(res.StructuredContent)
	var c tokenCaller
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatalf("%s: %s answered %s: %v", n.Name, tool, raw, err)
	}
	return c
}

// selfNode is n's MagicDNS name (without the trailing dot) and stable
// node ID, as the control server gave them.
func selfNode(t *testing.T, n *gatewaytest.Node) (name, id string) {
	t.Helper()
	lc, err := n.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	st, err := lc.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(st.Self.DNSName, "."), string(st.Self.ID)
}

// replay sends an MCP initialize to url from node n, straight over the
// tailnet (not through tailgate), with token as its bearer token (none
// when empty), as someone holding a token would; it returns the answer's
// status and body.
func replay(t *testing.T, n *gatewaytest.Node, url, token string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const initialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"replay","version":"0"}}}`
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(initialize))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := n.Client().Do(req)
		if err != nil {
			if gatewaytest.Retryable(err) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			t.Fatalf("%s: POST %s: %v", n.Name, url, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(body)
	}
}

// TestIdentityTokenAtRemoteTargets: two remote targets on tailnet nodes
// behind backendAuth.identityToken, each verifying tokens with go-sdk's
// middleware against the JWKS it fetches from the gateway over the
// tailnet, issuer learnt from the gateway's discovery document.
//   - callers: each call reaches the target with a token naming its
//     caller: alice's login and node for alice, bob's for bob, and for the
//     tagged CI runner its node name and tag.
//   - audience: a token target A admitted is refused (401) when replayed
//     at target B straight over the tailnet, though A itself still admits
//     it; and B's own token is refused at A.
//   - other keys: a token with the right issuer, audience and claims but
//     signed by another signer's keys is refused, as is a request with no
//     token (a client that bypasses tailgate).
func TestIdentityTokenAtRemoteTargets(t *testing.T) {
	tm := newTeam(t)
	nodeA, nodeB := tm.tn.Node(t, "target-a"), tm.tn.Node(t, "target-b")
	keyDir := t.TempDir()
	gw := tm.tn.Gateway(t, gatewaytest.ParseConfig(t, routeConfig("", `
          - name: a
            mcp:
              host: http://target-a:8080/mcp
              backendAuth: {identityToken: {}}
          - name: b
            mcp:
              host: http://target-b:8080/mcp
              backendAuth: {identityToken: {}}`)), gatewaytest.KeyDir(keyDir))
	awaitPeers(t, gw.Addr, tm.alice, tm.bob, tm.ci, nodeA, nodeB)
	awaitPeers(t, nodeB.IP(), tm.bob)
	awaitPeers(t, nodeA.IP(), tm.bob)
	keys := discoverKeys(t, nodeA, gw)
	a, b := serveTokenTarget(t, nodeA, keys), serveTokenTarget(t, nodeB, keys)

	t.Run("callers", func(t *testing.T) {
		for _, tc := range []struct {
			node    *gatewaytest.Node
			subject string
			tags    []string
		}{
			{tm.alice, tm.aliceID, nil},
			{tm.bob, tm.bobID, nil},
			{tm.ci, "", []string{"tag:ci"}}, // a tagged node is named by its node name
		} {
			name, id := selfNode(t, tc.node)
			want := tokenCaller{Subject: tc.subject, NodeName: name, NodeID: id, Tags: tc.tags}
			if want.Subject == "" {
				want.Subject = name
			}
			got := whoamiThrough(t, tc.node, gw, "a_whoami")
			if got.Subject != want.Subject || got.NodeName != want.NodeName || got.NodeID != want.NodeID || !slices.Equal(got.Tags, want.Tags) {
				t.Errorf("%s's call: target a was told %+v; want %+v", tc.node.Name, got, want)
			}
		}
	})

	t.Run("audience", func(t *testing.T) {
		if got := whoamiThrough(t, tm.alice, gw, "a_whoami"); got.Subject != tm.aliceID {
			t.Fatalf("target a was told %+v", got)
		}
		tokA := a.lastToken(t)
		if code, body := replay(t, tm.bob, b.url, tokA); code != http.StatusUnauthorized || !strings.Contains(body, "not for this target") {
			t.Errorf("alice's token for a, replayed at b: %d %q; want 401, not for this target", code, body)
		}
		// A itself still admits it: b refused it for its audience alone.
		if code, body := replay(t, tm.bob, a.url, tokA); code != http.StatusOK {
			t.Errorf("alice's token for a, replayed at a: %d %q; want 200", code, body)
		}
		if got := whoamiThrough(t, tm.alice, gw, "b_whoami"); got.Subject != tm.aliceID {
			t.Fatalf("target b was told %+v", got)
		}
		tokB := b.lastToken(t)
		if tokB == tokA {
			t.Fatal("a and b were sent the same token")
		}
		if code, body := replay(t, tm.bob, a.url, tokB); code != http.StatusUnauthorized || !strings.Contains(body, "not for this target") {
			t.Errorf("alice's token for b, replayed at a: %d %q; want 401, not for this target", code, body)
		}
	})

	t.Run("other keys", func(t *testing.T) {
		// Another gateway's keys (a signer of its own, in memory),
		// claiming to be this gateway, naming alice, for target a.
		other, err := idtoken.Open(idtoken.Options{Issuer: keys.Issuer})
		if err != nil {
			t.Fatal(err)
		}
		name, id := selfNode(t, tm.alice)
		forged, _, err := other.Mint(&tsnode.Identity{UserLogin: tm.aliceID, NodeName: name, NodeID: id}, a.url)
		if err != nil {
			t.Fatal(err)
		}
		if code, body := replay(t, tm.bob, a.url, forged); code != http.StatusUnauthorized || !strings.Contains(body, "unknown signing key") {
			t.Errorf("a token signed with other keys: %d %q; want 401, unknown signing key", code, body)
		}
		if code, body := replay(t, tm.bob, a.url, ""); code != http.StatusUnauthorized || !strings.Contains(body, "no bearer token") {
			t.Errorf("no token: %d %q; want 401, no bearer token", code, body)
		}
	})

	t.Run("expired", func(t *testing.T) {
		// The gateway's own signing key (a copy of its key directory),
		// for alice at target a, minted 10 minutes ago: it expired 5
		// minutes ago, far past the verifier's leeway.
		copied := t.TempDir()
		files, err := os.ReadDir(keyDir)
		if err != nil || len(files) == 0 {
			t.Fatalf("the gateway's key directory: %v (%d files)", err, len(files))
		}
		for _, f := range files {
			data, err := os.ReadFile(filepath.Join(keyDir, f.Name()))
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(copied, f.Name()), data, 0o600)
		}
		var clock atomic.Int64
		clock.Store(time.Now().UnixNano())
		same, err := idtoken.Open(idtoken.Options{Issuer: keys.Issuer, Dir: copied, Now: func() time.Time { return time.Unix(0, clock.Load()) }})
		if err != nil {
			t.Fatal(err)
		}
		clock.Store(time.Now().Add(-10 * time.Minute).UnixNano())
		name, id := selfNode(t, tm.alice)
		old, _, err := same.Mint(&tsnode.Identity{UserLogin: tm.aliceID, NodeName: name, NodeID: id}, a.url)
		if err != nil {
			t.Fatal(err)
		}
		if code, body := replay(t, tm.bob, a.url, old); code != http.StatusUnauthorized || !strings.Contains(body, "expired") {
			t.Errorf("an expired token of the gateway's own key: %d %q; want 401, expired", code, body)
		}
		// The same key signs a fresh token that a admits: only its age
		// refused the old one.
		clock.Store(time.Now().UnixNano())
		fresh, _, err := same.Mint(&tsnode.Identity{UserLogin: tm.aliceID, NodeName: name, NodeID: id}, a.url)
		if err != nil {
			t.Fatal(err)
		}
		if code, body := replay(t, tm.bob, a.url, fresh); code != http.StatusOK {
			t.Errorf("a fresh token of the same key: %d %q; want 200", code, body)
		}
	})
}

// startGatewayWithState starts tailgate as tn.Gateway does, but as a node
// whose state is kept in stateDir instead of memory, with its identity
// token keys in keyDir.
//
// A restarted gatewaytest.Gateway would be a new ephemeral node named
// "tailgate" beside the logged-out old one: testcontrol neither removes
// logged-out nodes nor renames a newcomer, so two peers would carry the
// MagicDNS name the issuer is made of. A gateway started again on the
// same stateDir is the same node (same node key, so the same name and
// address), as a real gateway restarted with its state directory is, and
// its issuer is the one its targets trust.
func startGatewayWithState(t *testing.T, tn *gatewaytest.Tailnet, cfg *gateway.Config, stateDir, keyDir string) *gatewaytest.Gateway {
	t.Helper()
	return tn.Gateway(t, cfg, gatewaytest.NodeState(stateDir), gatewaytest.KeyDir(keyDir))
}

// TestIdentityTokenAcrossRestartAndRotation: a gateway with its keys in
// a key directory, restarted on the same node state, keeps its issuer and
// its signing key, so a token minted before the restart still verifies;
// its keys rotated while it is down (idtoken's own Rotate on its key
// file, the rotation its schedule makes), it signs with the key it
// published as next before, which a target that cached the keys of the
// first start already knows, and keeps publishing the retired key, so
// tokens minted before still verify, at the target and with a verifier
// that fetches the keys afresh from the restarted gateway.
func TestIdentityTokenAcrossRestartAndRotation(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	alice, nodeA := tn.Node(t, "alice-laptop"), tn.Node(t, "target-a")
	login := alice.Login(t)
	stateDir, keyDir := filepath.Join(t.TempDir(), "state"), filepath.Join(t.TempDir(), "keys")
	cfg := func() *gateway.Config {
		return gatewaytest.ParseConfig(t, routeConfig("", `
          - name: a
            mcp:
              host: http://target-a:8080/mcp
              backendAuth: {identityToken: {}}`))
	}
	// call makes alice's call to target a through gw, and returns the
	// token that came with it.
	call := func(gw *gatewaytest.Gateway, a *tokenTarget) string {
		t.Helper()
		if got := whoamiThrough(t, alice, gw, "whoami"); got.Subject != login {
			t.Fatalf("target a was told %+v; want alice, %s", got, login)
		}
		return a.lastToken(t)
	}
	// freshlyVerified checks tokens with a new verifier for target a,
	// which fetches the keys from the gateway now running.
	freshlyVerified := func(keys gatewayKeys, tokens map[string]string) {
		t.Helper()
		v := idtoken.Verifier(keys.JWKSURI, keys.Issuer, "http://target-a:8080/mcp", nodeA.HTTPClient())
		for what, tok := range tokens {
			if info, err := v(t.Context(), tok, nil); err != nil || info.UserID != login {
				t.Errorf("%s, checked against the keys the running gateway publishes: %v %+v", what, err, info)
			}
		}
	}

	// stop shuts gw down, and has the nodes forget their idle
	// connections to it: the restarted gateway's node would answer them
	// with a reset.
	stop := func(gw *gatewaytest.Gateway) {
		gw.Shutdown(t)
		alice.Client().CloseIdleConnections()
		nodeA.Client().CloseIdleConnections()
	}

	gw1 := startGatewayWithState(t, tn, cfg(), stateDir, keyDir)
	awaitPeers(t, gw1.Addr, alice, nodeA)
	keys := discoverKeys(t, nodeA, gw1)
	firstKIDs := publishedKeyIDs(t, nodeA, keys)
	a := serveTokenTarget(t, nodeA, keys)
	before := call(gw1, a)
	kid1 := tokenKeyID(t, before)
	stop(gw1)

	// Restart on the same state and keys: the same issuer and key.
	gw2 := startGatewayWithState(t, tn, cfg(), stateDir, keyDir)
	if gw2.Addr != gw1.Addr {
		t.Fatalf("restarted gateway is at %v, not %v: another node", gw2.Addr, gw1.Addr)
	}
	if k := discoverKeys(t, nodeA, gw2); k != keys {
		t.Fatalf("restarted gateway says %+v; before the restart %+v", k, keys)
	}
	restarted := call(gw2, a)
	if kid := tokenKeyID(t, restarted); kid != kid1 {
		t.Errorf("restarted gateway signs with key %s; before the restart %s", kid, kid1)
	}
	if code, body := replay(t, alice, a.url, before); code != http.StatusOK {
		t.Errorf("token minted before the restart, replayed at a: %d %q", code, body)
	}
	freshlyVerified(keys, map[string]string{"token minted before the restart": before, "token minted after it": restarted})
	stop(gw2)

	// Rotate while the gateway is down, as its schedule would have.
	offline, err := idtoken.Open(idtoken.Options{Dir: keyDir, Issuer: keys.Issuer})
	if err != nil {
		t.Fatal(err)
	}
	if err := offline.Rotate(); err != nil {
		t.Fatal(err)
	}
	gw3 := startGatewayWithState(t, tn, cfg(), stateDir, keyDir)
	if k := discoverKeys(t, nodeA, gw3); k != keys {
		t.Fatalf("gateway after rotation says %+v; before %+v", k, keys)
	}
	rotated := call(gw3, a) // a's verifier has the keys of gw1's JWKS cached
	kid2 := tokenKeyID(t, rotated)
	if kid2 == kid1 || !slices.Contains(firstKIDs, kid2) {
		t.Errorf("after rotation signed by %s; want the key published as next from the first start (%v), not %s", kid2, firstKIDs, kid1)
	}
	if kids := publishedKeyIDs(t, nodeA, keys); !slices.Contains(kids, kid1) || !slices.Contains(kids, kid2) {
		t.Errorf("after rotation the JWKS has %v; want the retired %s and the current %s", kids, kid1, kid2)
	}
	for what, tok := range map[string]string{"minted before the restarts": before, "minted after the first restart": restarted} {
		if code, body := replay(t, alice, a.url, tok); code != http.StatusOK {
			t.Errorf("token %s, replayed at a after rotation: %d %q", what, code, body)
		}
	}
	freshlyVerified(keys, map[string]string{
		"token minted before the restarts": before, "token minted after the first restart": restarted, "token minted after rotation": rotated,
	})
}

// TestIdentityTokenForStdioChild: a stdio target with
// identityToken {audience: https://svc.example} gets, in each caller's
// child, TAILGATE_IDENTITY_TOKEN: a token that verifies against the
// gateway's JWKS (fetched over the tailnet) for that audience, naming
// alice in alice's child and bob in bob's, refused for any other
// audience; and no token is in the gateway's log.
func TestIdentityTokenForStdioChild(t *testing.T) {
	tm := newTeam(t)
	var logs gatewaytest.Logs
	gw := tm.tn.Gateway(t, gatewaytest.ParseConfig(t, routeConfig("", `
          - name: svc
            stdio:
              cmd: $DEMO
              identityToken: {audience: "https://svc.example"}`)), gatewaytest.CaptureLogs(&logs))
	awaitPeers(t, gw.Addr, tm.alice, tm.bob)
	keys := discoverKeys(t, tm.alice, gw)
	verify := idtoken.Verifier(keys.JWKSURI, keys.Issuer, "https://svc.example", tm.alice.HTTPClient())
	otherAudience := idtoken.Verifier(keys.JWKSURI, keys.Issuer, "tailgate-target:svc", tm.alice.HTTPClient())

	var tokens []string
	for _, tc := range []struct {
		node  *gatewaytest.Node
		login string
	}{{tm.alice, tm.aliceID}, {tm.bob, tm.bobID}} {
		cs := tc.node.MCP(t, gw, 3000, "/mcp")
		res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "env", Arguments: map[string]any{"names": []string{"TAILGATE_IDENTITY_TOKEN"}}})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(res.StructuredContent)
		var out struct{ Values map[string]string }
		json.Unmarshal(raw, &out)
		tok := out.Values["TAILGATE_IDENTITY_TOKEN"]
		if tok == "" {
			t.Fatalf("%s's child has no TAILGATE_IDENTITY_TOKEN: %s", tc.node.Name, raw)
		}
		tokens = append(tokens, tok)
		info, err := verify(t.Context(), tok, nil)
		if err != nil {
			t.Fatalf("%s's child's token: %v", tc.node.Name, err)
		}
		c, err := idtoken.ClaimsFrom(info)
		if err != nil {
			t.Fatal(err)
		}
		name, _ := selfNode(t, tc.node)
		if info.UserID != tc.login || c.Node.Name != name {
			t.Errorf("%s's child's token names %s on %s; want %s on %s", tc.node.Name, info.UserID, c.Node.Name, tc.login, name)
		}
		if _, err := otherAudience(t.Context(), tok, nil); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("%s's child's token, at another audience: %v; want it refused", tc.node.Name, err)
		}
		cs.Close()
	}
	if tokens[0] == tokens[1] {
		t.Error("alice's and bob's children have the same token")
	}
	for _, tok := range tokens {
		parts := strings.Split(tok, ".") // header, claims, signature
		if logs.Contains(tok) || logs.Contains(parts[len(parts)-1]) {
			t.Errorf("a child's token is in the gateway's log")
		}
	}
}
