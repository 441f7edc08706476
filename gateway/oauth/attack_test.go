package oauth

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// Attacks on the connectors (a review's findings), each a test that
// failed before its fix.

// gwClient is a plain client: the gateway's own (gateway.oauthClient)
// also refuses addresses and redirects a target may not steer it to.
func gwClient() *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = d.DialContext
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func newConn(t *testing.T, store *Store, target, resource string, o Options) *Connector {
	o.Target, o.Resource, o.Store, o.Client = target, resource, store, gwClient()
	o.GatewayURL = func() string { return "http://gw.example" }
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func tmpStore(t *testing.T) *Store {
	s, err := NewStore(t.TempDir(), make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Two targets of one name (two routes may each name a target "docs"; a
// target's URL may change) never share a connection: a token issued for
// one server is never sent to another. Failed before: the store's slot
// was the name alone.
func TestConnectionBoundToTargetURL(t *testing.T) {
	store := tmpStore(t)
	a := newConn(t, store, "docs", "https://untrusted.example/mcp", Options{})
	b := newConn(t, store, "docs", "https://notion.example/mcp", Options{})
	if _, err := b.connected("alice@example.com", "", &oauth2.Config{ClientID: "x", Endpoint: oauth2.Endpoint{TokenURL: "https://as.notion.example/token"}},
		&oauth2.Token{AccessToken: "NOTION-TOKEN", Expiry: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	tok, err := a.Token(context.Background(), "alice@example.com")
	if tok != "" || err != nil {
		t.Errorf("connector for %s sends %q (%v): the token issued for %s", a.opts.Resource, tok, err, b.opts.Resource)
	}
}

// authServer is an authorization server under test: its metadata
// (extra endpoints given as paths of its own), and handlers for its other
// paths.
func authServer(t *testing.T, extra map[string]string, paths map[string]http.HandlerFunc) *httptest.Server {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.well-known/oauth-authorization-server" {
			m := map[string]any{"issuer": srv.URL, "authorization_endpoint": srv.URL + "/authorize", "token_endpoint": srv.URL + "/token",
				"registration_endpoint": srv.URL + "/register", "code_challenge_methods_supported": []string{"S256"}}
			for k, path := range extra {
				m[k] = srv.URL + path
			}
			b, _ := json.Marshal(m)
			jsonw(w, b)
			return
		}
		if h := paths[r.URL.Path]; h != nil {
			h(w, r)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// protectedResource serves a target's protected resource metadata,
// naming as as its authorization server, at every path.
func protectedResource(t *testing.T, resource func(self string) string, as string) *httptest.Server {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		jsonw(w, []byte(`{"resource":"`+resource(srv.URL)+`","authorization_servers":["`+as+`"]}`))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// posted records what a server was sent: basic credentials and form.
type posted struct {
	mu  sync.Mutex
	got string
}

// handler records a request and answers with a token.
func (p *posted) handler(w http.ResponseWriter, r *http.Request) {
	u, pw, _ := r.BasicAuth()
	r.ParseForm()
	p.mu.Lock()
	p.got += u + ":" + pw + " " + r.PostForm.Encode() + "\n"
	p.mu.Unlock()
	jsonw(w, []byte(`{"access_token":"x","token_type":"bearer","expires_in":3600}`))
}

func (p *posted) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got
}

func jsonw(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// What a target's servers answer while a flow begins stays in the log:
// a registration endpoint that redirects to an internal service does not
// get its page to the caller. Failed before: go-sdk's error, with the
// body, was the caller's answer.
func TestBeginErrorTellsCallerNoServerAnswer(t *testing.T) {
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "INTERNAL-ONLY-SECRET method="+r.Method)
	}))
	defer internal.Close()
	as := authServer(t, nil, map[string]http.HandlerFunc{"/register": func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, internal.URL+"/latest/meta-data/", http.StatusFound)
	}})
	var tg *httptest.Server
	tg = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/prm" {
			jsonw(w, []byte(`{"resource":"`+tg.URL+`/mcp","authorization_servers":["`+as.URL+`"]}`))
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer resource_metadata="`+tg.URL+`/prm"`)
		w.WriteHeader(401)
	}))
	defer tg.Close()
	c := newConn(t, tmpStore(t), "t", tg.URL+"/mcp", Options{})
	req, _ := http.NewRequest("POST", tg.URL+"/mcp", strings.NewReader("{}"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	uerr := c.Unauthorized(ctx, "bob@example.com", req, resp)
	if uerr == nil || strings.Contains(uerr.Error(), "INTERNAL-ONLY-SECRET") {
		t.Errorf("the caller's answer: %v", uerr)
	}
}

// A service's client secret goes to the authorization server its config
// names (issuer), not to one a target's refusal names. Failed before:
// tailgate followed the 401's resource_metadata to any server.
func TestServiceSecretOnlyToItsIssuer(t *testing.T) {
	var legitGot, evilGot posted
	legit := authServer(t, nil, map[string]http.HandlerFunc{"/token": legitGot.handler})
	evil := authServer(t, nil, map[string]http.HandlerFunc{"/token": evilGot.handler})
	target := "https://billing.example/mcp"
	evilPRM := protectedResource(t, func(string) string { return target }, evil.URL)
	c := newConn(t, tmpStore(t), "billing", target, Options{ClientID: "tailgate-prod", ClientSecret: "PROD-CLIENT-SECRET", ClientCredentials: true, Issuer: legit.URL})
	req, _ := http.NewRequest("POST", target, nil)
	resp := &http.Response{StatusCode: 401, Header: http.Header{"Www-Authenticate": {`Bearer resource_metadata="` + evilPRM.URL + `/x"`}}, Body: io.NopCloser(strings.NewReader(""))}
	err := c.Unauthorized(context.Background(), "", req, resp)
	if strings.Contains(evilGot.String(), "PROD-CLIENT-SECRET") {
		t.Errorf("the secret went to the server the 401 named: %s", evilGot.String())
	}
	if err != nil || !strings.Contains(legitGot.String(), "PROD-CLIENT-SECRET") {
		t.Errorf("the service's own server was not asked: %v", err)
	}
}

// Disconnect revokes only at the server that issued the token, as
// recorded when the connection was made: a target that names another
// server later does not get the refresh token and the client's secret.
// Failed before: revocation found its endpoint from the target anew.
func TestRevocationOnlyAtTheIssuer(t *testing.T) {
	var got posted
	evil := authServer(t, map[string]string{"revocation_endpoint": "/rev"}, map[string]http.HandlerFunc{"/rev": got.handler})
	tg := protectedResource(t, func(self string) string { return self + "/mcp" }, evil.URL)
	c := newConn(t, tmpStore(t), "t", tg.URL+"/mcp", Options{})
	if _, err := c.connected("alice@example.com", "", &oauth2.Config{ClientID: "cid", ClientSecret: "CLIENT-SECRET",
		Endpoint: oauth2.Endpoint{TokenURL: "https://legit-as.example/token", AuthStyle: oauth2.AuthStyleInHeader}},
		&oauth2.Token{AccessToken: "AT", RefreshToken: "ALICE-REFRESH", Expiry: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Disconnect(context.Background(), "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	if s := got.String(); strings.Contains(s, "ALICE-REFRESH") || strings.Contains(s, "CLIENT-SECRET") {
		t.Errorf("revocation went to a server that did not issue the token: %s", s)
	}
}

// A refresh that fails because the server cannot be reached keeps the
// connection (the call fails, saying so); only a refused grant removes
// it. Failed before: any failure deleted it, its refresh token lost.
func TestTransientRefreshFailureKeepsConnection(t *testing.T) {
	store := tmpStore(t)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + l.Addr().String() + "/token"
	l.Close()
	c := newConn(t, store, "t", "https://t.example/mcp", Options{})
	if _, err := c.connected("alice@example.com", "", &oauth2.Config{ClientID: "cid", Endpoint: oauth2.Endpoint{TokenURL: dead}},
		&oauth2.Token{AccessToken: "AT", RefreshToken: "RT", Expiry: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	tok, err := c.Token(context.Background(), "alice@example.com")
	rec, _ := store.Get(c.slotName(), "alice@example.com")
	if rec == nil || tok != "" || err == nil {
		t.Errorf("after a refused connection to the token endpoint: token %q, err %v, record kept %v", tok, err, rec != nil)
	}
}
