// Package oauth makes tailgate the OAuth 2.1 client of remote MCP targets
// that require their users' own accounts (hosted services), for each
// caller: a Connector per target discovers the target's authorization
// server (RFC 9728, RFC 8414), registers tailgate (pre-registered, client
// ID metadata document, or dynamic registration), and runs the
// authorization code flow with PKCE and the resource indicator for each
// login that connects, through pages tailgate serves on the tailnet
// (pages.go); tokens are kept per login and target, sealed (store.go), and
// refreshed as they expire. The protocol work is go-sdk's auth package:
// what is tailgate's is whose flow it is, where the code comes back, and
// where the token is kept.
package oauth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"golang.org/x/oauth2"
)

// Options configure the Connector of one target.
type Options struct {
	// Target is the target's name; Resource its URL, the resource tokens
	// are asked for.
	Target   string
	Resource string
	// GatewayURL is the URL the caller's browser reaches tailgate by on
	// the tailnet ("http://tailgate.example.ts.net"): its callback is
	// <GatewayURL>/oauth/callback, its connect links
	// <GatewayURL>/oauth/connect/<target>/<id>. Asked when a flow begins.
	GatewayURL func() string
	// ClientID and ClientSecret are a pre-registered client; else
	// ClientMetadataURL (a client ID metadata document) where the server
	// supports it, else dynamic registration.
	ClientID          string
	ClientSecret      string
	ClientMetadataURL string
	// Issuer, if set, is the authorization server the pre-registered
	// client belongs to: the only one its secret goes to.
	Issuer string
	// Scopes, if set, are asked for in place of those the target names.
	Scopes []string
	// Client reaches the target and its authorization server.
	Client *http.Client
	// TailnetHost reports whether a host is on the tailnet, where plain
	// http is encrypted (WireGuard) and may carry a token.
	TailnetHost func(host string) bool
	Store       *Store
	Log         *slog.Logger
	// FlowTimeout is how long a connect link can be followed; default 10m.
	FlowTimeout time.Duration
	// OnChange, if set, is told of each connection made
	// ("oauth.connected", with the flow's id: the URL elicitation it
	// completes) or removed ("oauth.disconnected"), for the audit trail
	// and the caller's sessions.
	OnChange func(event, login, flowID string)
	// ClientCredentials calls the target as tailgate itself, with the
	// pre-registered client's credentials (service.go).
	ClientCredentials bool
}

// Connector holds the connections of every login to one target.
type Connector struct {
	opts Options

	mu     sync.Mutex
	logins map[string]*login
	flows  map[string]*flow // by id, the connect link's last element
	// service is the token source of a ClientCredentials target.
	service oauth2.TokenSource
}

// login is one login's connection to the target, as far as it is known.
type login struct {
	ts   oauth2.TokenSource // nil until loaded or connected
	rec  *Record
	flow *flow // a connect in progress
}

// flow is one login's authorization in progress: its link, the
// authorization server's URL it leads to, and the code that comes back.
type flow struct {
	id, login string
	expires   time.Time

	ready   chan struct{} // closed once authURL is known, or the flow ended
	authURL string
	state   string

	code chan *auth.AuthorizationResult // the callback's, once
	done chan struct{}                  // closed when the flow ended; err says how
	err  error
}

// The pages' paths (pages.go).
const (
	ConnectPath     = "/oauth/connect/"
	CallbackPath    = "/oauth/callback"
	ConnectionsPath = "/oauth/connections"
)

// ErrConnectRequired is the error of a call whose caller has no
// connection to the target; ConnectRequired carries its link.
var ErrConnectRequired = errors.New("connect required")

// ConnectRequired says a caller must connect its account at a target
// before its calls can be served there: URL is the page to open.
type ConnectRequired struct {
	Target string
	ID     string // the flow's
	URL    string
}

func (e *ConnectRequired) Error() string {
	return fmt.Sprintf("target %q needs your own account: open %s to connect it, then try again", e.Target, e.URL)
}

func (e *ConnectRequired) Unwrap() error { return ErrConnectRequired }

// New is the connector opts describe.
func New(opts Options) (*Connector, error) {
	if opts.Store == nil {
		return nil, errors.New("oauth: no connection store")
	}
	if opts.Client == nil {
		opts.Client = http.DefaultClient
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.GatewayURL == nil {
		return nil, errors.New("oauth: no gateway URL")
	}
	if opts.FlowTimeout <= 0 {
		opts.FlowTimeout = 10 * time.Minute
	}
	return &Connector{opts: opts, logins: map[string]*login{}, flows: map[string]*flow{}}, nil
}

// Service reports whether the target is called as tailgate itself
// (client credentials), not as each person.
func (c *Connector) Service() bool { return c.opts.ClientCredentials }

// slotName is the store's name for the connector's connections: the
// target's name and its URL, so that a connection is never used for
// another server that has (or comes to have) the same name.
func (c *Connector) slotName() string { return c.opts.Target + "\x00" + c.opts.Resource }

// Target is the connector's target.
func (c *Connector) Target() string { return c.opts.Target }

// state is login's entry, made on first use. Called with c.mu held.
func (c *Connector) state(name string) *login {
	l := c.logins[name]
	if l == nil {
		l = &login{}
		c.logins[name] = l
	}
	return l
}

// Token is the access token to send for login: "" if login has no
// connection (or its token can no longer be refreshed, in which case the
// connection is removed).
func (c *Connector) Token(ctx context.Context, name string) (string, error) {
	if c.opts.ClientCredentials {
		return c.serviceToken()
	}
	ts, err := c.source(name)
	if err != nil || ts == nil {
		return "", err
	}
	tok, err := ts.Token()
	var re *oauth2.RetrieveError
	switch {
	case err == nil:
		return tok.AccessToken, nil
	case errors.As(err, &re) && re.ErrorCode == "invalid_grant":
		// The grant is gone (revoked, expired, or rotated by another
		// replica): the connection is.
		c.opts.Log.Info("oauth: refresh refused, connection removed", "target", c.opts.Target, "user", name, "err", redactErr(err))
		c.forget(name)
		return "", nil
	case errors.Is(err, errNoRefresh):
		c.opts.Log.Info("oauth: token expired without a refresh token, connection removed", "target", c.opts.Target, "user", name)
		c.forget(name)
		return "", nil
	}
	// The server could not be reached, or failed: the connection stays,
	// and this request fails saying so.
	c.opts.Log.Warn("oauth: token refresh failed", "target", c.opts.Target, "user", name, "err", redactErr(err))
	return "", fmt.Errorf("target %q: your token could not be refreshed (the authorization server did not answer); try again", c.opts.Target)
}

// source is login's token source, loaded from the store on first use.
func (c *Connector) source(name string) (oauth2.TokenSource, error) {
	c.mu.Lock()
	l := c.state(name)
	if l.ts != nil {
		ts := l.ts
		c.mu.Unlock()
		return ts, nil
	}
	c.mu.Unlock()
	rec, err := c.opts.Store.Get(c.slotName(), name)
	if err != nil {
		// Another key (rotated), or damaged: as good as none; connecting
		// again replaces it.
		c.opts.Log.Warn("oauth: stored connection unusable, treated as none", "target", c.opts.Target, "user", name, "err", err)
		return nil, nil
	}
	if rec == nil || rec.Token == nil {
		return nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if l.ts == nil {
		l.rec, l.ts = rec, c.tokenSource(rec)
	}
	return l.ts, nil
}

// Connection is login's connection, without its secrets; nil if none.
// Policy asks on every call: a connection in use is answered from memory.
func (c *Connector) Connection(name string) *Record {
	var rec *Record
	c.mu.Lock()
	if l := c.logins[name]; l != nil {
		rec = l.rec
	}
	c.mu.Unlock()
	if rec == nil {
		var err error
		if rec, err = c.opts.Store.Get(c.slotName(), name); err != nil || rec == nil {
			return nil
		}
	}
	return &Record{Target: rec.Target, Login: rec.Login, Resource: rec.Resource, Scopes: rec.Scopes, Connected: rec.Connected}
}

// forget drops login's token, here and in the store.
func (c *Connector) forget(name string) {
	c.mu.Lock()
	if l := c.logins[name]; l != nil {
		l.ts, l.rec = nil, nil
		if l.flow == nil {
			delete(c.logins, name) // nothing left of it here
		}
	}
	c.mu.Unlock()
	if err := c.opts.Store.Delete(c.slotName(), name); err != nil {
		c.opts.Log.Warn("oauth: remove connection", "target", c.opts.Target, "user", name, "err", err)
	}
	c.changed("oauth.disconnected", name, "")
}

func (c *Connector) changed(event, name, flowID string) {
	if c.opts.OnChange != nil {
		c.opts.OnChange(event, name, flowID)
	}
}

// tokenSource refreshes rec's token as it expires, storing each new one
// (a rotated refresh token included).
func (c *Connector) tokenSource(rec *Record) oauth2.TokenSource {
	cfg := &oauth2.Config{
		ClientID: rec.ClientID, ClientSecret: rec.ClientSecret,
		Endpoint: oauth2.Endpoint{AuthURL: rec.AuthURL, TokenURL: rec.TokenURL, AuthStyle: rec.AuthStyle},
		Scopes:   rec.Scopes,
	}
	client := *c.opts.Client
	client.Transport = &resourceParam{base: client.Transport, tokenURL: rec.TokenURL, resource: rec.Resource}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &client)
	return &storedSource{c: c, rec: rec, base: cfg.TokenSource(ctx, rec.Token)}
}

// resourceParam adds the resource indicator (RFC 8707) to the token
// requests x/oauth2 makes to refresh a token, which it leaves out: the
// MCP authorization spec wants it in every token request, and a server
// with several resources needs it to say which one the token is for.
type resourceParam struct {
	base               http.RoundTripper
	tokenURL, resource string
}

func (rp *resourceParam) RoundTrip(req *http.Request) (*http.Response, error) {
	base := rp.base
	if base == nil {
		base = http.DefaultTransport
	}
	if req.Method != http.MethodPost || req.URL.String() != rp.tokenURL || rp.resource == "" || req.GetBody == nil {
		return base.RoundTrip(req)
	}
	body, err := req.GetBody()
	if err != nil {
		return base.RoundTrip(req)
	}
	raw, err := io.ReadAll(io.LimitReader(body, 1<<20))
	body.Close()
	form, perr := url.ParseQuery(string(raw))
	if err != nil || perr != nil || form.Has("resource") {
		return base.RoundTrip(req)
	}
	form.Set("resource", rp.resource)
	enc := form.Encode()
	again := req.Clone(req.Context())
	again.Body = io.NopCloser(strings.NewReader(enc))
	again.ContentLength = int64(len(enc))
	again.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(enc)), nil }
	if req.Body != nil {
		req.Body.Close()
	}
	return base.RoundTrip(again)
}

// storedSource is a token source whose new tokens are stored.
type storedSource struct {
	c    *Connector
	base oauth2.TokenSource
	mu   sync.Mutex
	rec  *Record
}

// errNoRefresh is a token source's error for an expired token that
// has no refresh token.
var errNoRefresh = errors.New("the token expired and has no refresh token")

func (s *storedSource) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	cur := s.rec.Token
	s.mu.Unlock()
	if !cur.Valid() && cur.RefreshToken == "" {
		return nil, errNoRefresh
	}
	tok, err := s.base.Token()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if tok.AccessToken != s.rec.Token.AccessToken || tok.RefreshToken != s.rec.Token.RefreshToken {
		rec := *s.rec
		rec.Token = tok
		if err := s.c.opts.Store.Put(s.c.slotName(), &rec); err != nil {
			s.c.opts.Log.Warn("oauth: store refreshed token", "target", rec.Target, "user", rec.Login, "err", err)
		} else {
			s.c.opts.Log.Info("oauth: token refreshed", "target", rec.Target, "user", rec.Login, "expires", tok.Expiry)
		}
		s.rec = &rec
	}
	return tok, nil
}

// Unauthorized is told that the target refused login's request req with
// resp (401, or 403 insufficient_scope): the token login had is dropped,
// and a connect flow begins (or the one under way goes on). The error is
// a *ConnectRequired with the link to give the caller, or why no flow can
// begin (the target's metadata cannot be found, registration refused).
func (c *Connector) Unauthorized(ctx context.Context, name string, req *http.Request, resp *http.Response) error {
	if c.opts.ClientCredentials {
		return c.serviceUnauthorized(ctx, resp)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		c.mu.Lock()
		had := c.state(name).ts != nil
		c.mu.Unlock()
		if had {
			c.forget(name)
		}
	}
	f, err := c.begin(name, req, resp)
	if err != nil {
		return err
	}
	select {
	case <-f.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	c.mu.Lock()
	authURL := f.authURL
	c.mu.Unlock()
	if authURL == "" {
		<-f.done
		// What the target's servers answered stays in the log: their
		// answers are not the caller's to read.
		return fmt.Errorf("target %q: tailgate could not begin connecting your account (its authorization server could not be found or refused tailgate's registration; the gateway's log says why)", c.opts.Target)
	}
	return &ConnectRequired{Target: c.opts.Target, ID: f.id, URL: c.opts.GatewayURL() + ConnectPath + url.PathEscape(c.opts.Target) + "/" + f.id}
}

// begin is login's connect flow: the one under way, or a new one.
func (c *Connector) begin(name string, req *http.Request, resp *http.Response) (*flow, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.state(name)
	if f := l.flow; f != nil && time.Now().Before(f.expires) {
		select {
		case <-f.done:
		default:
			return f, nil
		}
	}
	id := make([]byte, 18)
	rand.Read(id)
	f := &flow{
		id: base64.RawURLEncoding.EncodeToString(id), login: name, expires: time.Now().Add(c.opts.FlowTimeout),
		ready: make(chan struct{}), code: make(chan *auth.AuthorizationResult, 1), done: make(chan struct{}),
	}
	h, err := auth.NewAuthorizationCodeHandler(c.handlerConfig(name, f, l.rec))
	if err != nil {
		return nil, fmt.Errorf("oauth client of target %q: %w", c.opts.Target, err)
	}
	l.flow = f
	c.flows[f.id] = f
	// The flow outlives the request that began it: it waits for its
	// login to follow the link.
	fctx, cancel := context.WithDeadline(context.WithValue(context.Background(), oauth2.HTTPClient, c.opts.Client), f.expires)
	challenge := &http.Response{StatusCode: resp.StatusCode, Header: resp.Header.Clone(), Body: io.NopCloser(strings.NewReader(""))}
	target := req.Clone(fctx)
	go func() {
		defer cancel()
		err := h.Authorize(fctx, target, challenge)
		c.mu.Lock()
		f.err = err
		delete(c.flows, f.id)
		select {
		case <-f.ready:
		default:
			close(f.ready)
		}
		close(f.done)
		c.mu.Unlock()
		if err != nil {
			c.opts.Log.Info("oauth: connect ended", "target", c.opts.Target, "user", name, "err", redactErr(err))
		}
	}()
	return f, nil
}

// handlerConfig is go-sdk's authorization code flow for login's flow f
// (prev, the connection it had, whose scopes a step-up keeps).
func (c *Connector) handlerConfig(name string, f *flow, prev *Record) *auth.AuthorizationCodeHandlerConfig {
	redirect := c.opts.GatewayURL() + CallbackPath
	cfg := &auth.AuthorizationCodeHandlerConfig{
		RedirectURL: redirect,
		AuthorizationCodeFetcher: func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
			return c.fetch(ctx, f, args)
		},
		RequestRefreshToken: true,
		Client:              c.opts.Client,
		DynamicClientRegistrationConfig: &auth.DynamicClientRegistrationConfig{Metadata: &oauthex.ClientRegistrationMetadata{
			RedirectURIs: []string{redirect},
			ClientName:   "tailgate",
			GrantTypes:   []string{"authorization_code", "refresh_token"},
		}},
		NewTokenSource: func(_ context.Context, oc *oauth2.Config, tok *oauth2.Token) (oauth2.TokenSource, error) {
			return c.connected(name, f.id, oc, tok)
		},
		ScopeFilter: func(discovered []string) []string {
			scopes := discovered
			if len(c.opts.Scopes) > 0 {
				scopes = slices.Clone(c.opts.Scopes)
			}
			if prev != nil {
				for _, s := range prev.Scopes {
					if !slices.Contains(scopes, s) {
						scopes = append(scopes, s)
					}
				}
			}
			return scopes
		},
	}
	if c.opts.ClientID != "" {
		cfg.PreregisteredClient = &oauthex.ClientCredentials{ClientID: c.opts.ClientID, Issuer: c.opts.Issuer}
		if c.opts.ClientSecret != "" {
			cfg.PreregisteredClient.ClientSecretAuth = &oauthex.ClientSecretAuth{ClientSecret: c.opts.ClientSecret}
		}
	}
	if c.opts.ClientMetadataURL != "" {
		cfg.ClientIDMetadataDocumentConfig = &auth.ClientIDMetadataDocumentConfig{URL: c.opts.ClientMetadataURL}
	}
	return cfg
}

// connected stores the token login's flow got, and is its token source
// from now on.
func (c *Connector) connected(name, flowID string, oc *oauth2.Config, tok *oauth2.Token) (oauth2.TokenSource, error) {
	rec := &Record{
		Target: c.opts.Target, Login: name, Resource: c.opts.Resource,
		ClientID: oc.ClientID, ClientSecret: oc.ClientSecret, AuthStyle: oc.Endpoint.AuthStyle,
		AuthURL: oc.Endpoint.AuthURL, TokenURL: oc.Endpoint.TokenURL, Scopes: oc.Scopes,
		Token: tok, Connected: time.Now().UTC(),
	}
	if s, ok := tok.Extra("scope").(string); ok && s != "" {
		rec.Scopes = strings.Fields(s)
	}
	// Revocation goes to the server that issued the token, as of now:
	// never to one the target names later.
	mctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	if asm, err := c.authServer(mctx, c.opts.Resource, ""); err == nil && asm.TokenEndpoint == oc.Endpoint.TokenURL {
		rec.Issuer = asm.Issuer
		if c.safeEndpoint(asm.RevocationEndpoint) {
			rec.RevocationURL = asm.RevocationEndpoint
		}
	}
	cancel()
	if err := c.opts.Store.Put(c.slotName(), rec); err != nil {
		return nil, err
	}
	ts := c.tokenSource(rec)
	c.mu.Lock()
	l := c.state(name)
	l.rec, l.ts = rec, ts
	c.mu.Unlock()
	c.opts.Log.Info("oauth: connected", "target", c.opts.Target, "user", name, "scopes", rec.Scopes, "expires", tok.Expiry)
	c.changed("oauth.connected", name, flowID)
	return ts, nil
}

// fetch is flow f's part of go-sdk's flow: it publishes the
// authorization URL (the link's destination) and waits for the code the
// callback brings back.
func (c *Connector) fetch(ctx context.Context, f *flow, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
	u, err := url.Parse(args.URL)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	f.authURL, f.state = args.URL, u.Query().Get("state")
	close(f.ready)
	c.mu.Unlock()
	select {
	case res := <-f.code:
		if res == nil {
			return nil, errors.New("the authorization server refused")
		}
		return res, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("the connect link was not followed in time: %w", ctx.Err())
	}
}

// flowFor is the flow of link id, if login may follow it.
func (c *Connector) flowFor(id, name string) (*flow, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.flows[id]
	if f == nil || time.Now().After(f.expires) {
		return nil, errors.New("this connect link has expired or was used: make the call again for a new one")
	}
	if f.login != name {
		return nil, errors.New("this connect link was made for another user")
	}
	return f, nil
}

// byState is the flow whose authorization request carried state.
func (c *Connector) byState(state string) *flow {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.flows {
		if f.state != "" && f.state == state {
			return f
		}
	}
	return nil
}

// complete hands the callback's result to flow f, whose login name
// followed it, and waits for the token.
func (c *Connector) complete(ctx context.Context, f *flow, name string, q url.Values) error {
	if f.login != name {
		return errors.New("this authorization was started by another user: it is not completed")
	}
	var res *auth.AuthorizationResult
	if q.Get("error") == "" {
		res = &auth.AuthorizationResult{Code: q.Get("code"), State: q.Get("state"), Iss: q.Get("iss")}
	}
	select {
	case f.code <- res:
	default:
		return errors.New("this authorization was already completed")
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if f.err != nil {
		if e := q.Get("error"); e != "" {
			return fmt.Errorf("the authorization server answered %s: %s", e, q.Get("error_description"))
		}
		return f.err
	}
	return nil
}

// Disconnect removes login's connection, revoking its tokens at the
// authorization server where it offers revocation (RFC 7009).
func (c *Connector) Disconnect(ctx context.Context, name string) error {
	rec, err := c.opts.Store.Get(c.slotName(), name)
	if err != nil {
		return err
	}
	c.forget(name)
	if rec == nil || rec.Token == nil {
		return nil
	}
	if err := c.revoke(ctx, rec); err != nil {
		c.opts.Log.Info("oauth: revocation", "target", c.opts.Target, "user", name, "err", redactErr(err))
	}
	c.opts.Log.Info("oauth: disconnected", "target", c.opts.Target, "user", name)
	return nil
}

// redactErr is err's text for a log: OAuth errors quote no tokens, but
// a URL in them may carry a code.
func redactErr(err error) string {
	s := err.Error()
	if i := strings.Index(s, "code="); i >= 0 {
		s = s[:i] + "code=…"
	}
	return s
}
