package gateway

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"tailscale.com/net/tsaddr"

	"github.com/tailgate-dev/tailgate/gateway/audit"
	"github.com/tailgate-dev/tailgate/gateway/oauth"
	"github.com/tailgate-dev/tailgate/gateway/remote"
	"github.com/tailgate-dev/tailgate/policy"
	"github.com/tailgate-dev/tailgate/tsnode"
)

// OAuthConfig is config.oauth: where tailgate keeps its callers'
// connections to backendAuth.oauth targets (gateway/oauth). Each is
// sealed with Key, which must not be in Dir's clear text: a key file
// kept elsewhere, an environment variable, or a setec secret. Replicas
// behind one Tailscale Service share connections when they share Dir
// (shared storage) and Key.
type OAuthConfig struct {
	// Key is 32 bytes, raw, hex or base64 (`openssl rand -hex 32`).
	Key *SecretRef `yaml:"key"`
	// Dir holds the connections; default <stateDir>/oauth.
	Dir string `yaml:"dir"`
}

// connectors are the gateway's OAuth connectors, one per
// backendAuth.oauth target, kept across reloads while the target's
// config is unchanged (a caller's flow under way survives a reload).
type connectors struct {
	mu       sync.Mutex
	store    *oauth.Store
	storeSig string                     // the store's dir and key
	by       map[string]*connectorEntry // by target name
	// runKey and runDir keep a gateway's connections for its run when
	// config.oauth names no key (tailgate dev).
	runKey []byte
	runDir string
	// formKey signs the connections page's forms (oauth.Pages.FormKey).
	formKey []byte
}

type connectorEntry struct {
	sig string
	c   *oauth.Connector
	// mayConnect is the target's connectAuthorization (nil: anyone);
	// replaced at each load.
	mayConnect *policy.RuleSet
}

// connectorFor is target name's connector (at url, configured as o),
// made or kept. A changed store (config.oauth's dir or key) drops every
// connector: their flows and tokens belonged to the old one.
func (s *Server) connectorFor(ctx context.Context, cfg *Config, cr *credentials, name, url string, o *OAuthBackendAuth, client *http.Client) (*oauth.Connector, error) {
	dir, key, err := s.connectionStore(ctx, cfg, cr)
	if err != nil {
		return nil, err
	}
	cs := &s.oauth
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if storeSig := dir + "\x00" + string(key); cs.store == nil || cs.storeSig != storeSig {
		store, err := oauth.NewStore(dir, key)
		if err != nil {
			return nil, err
		}
		cs.store, cs.storeSig, cs.by = store, storeSig, nil
	}
	sig := fmt.Sprintf("%s|%s|%s|%v|%v|%v|%s", url, o.ClientID, o.ClientMetadataURL, o.Scopes, o.ClientSecret, o.ClientCredentials, o.Issuer)
	if e := cs.by[name]; e != nil && e.sig == sig {
		e.mayConnect = o.connectAuthz
		return e.c, nil
	}
	var secret string
	if o.ClientSecret != nil {
		v, err := cr.resolver.Resolve(ctx, o.ClientSecret.Ref, nil)
		if err != nil {
			return nil, fmt.Errorf("target %q: backendAuth.oauth.clientSecret: %w", name, err)
		}
		secret = v
	}
	c, err := oauth.New(oauth.Options{
		Target: name, Resource: url, GatewayURL: s.gatewayURL,
		ClientID: o.ClientID, ClientSecret: secret, ClientMetadataURL: o.ClientMetadataURL, Scopes: o.Scopes, Issuer: o.Issuer,
		ClientCredentials: o.ClientCredentials, Client: client, Store: cs.store, TailnetHost: isTailnetHost,
		Log: s.log.With("component", "oauth"),
		OnChange: func(event, owner, flowID string) {
			s.auditConnectionChange(event, name, owner)
			if event == "oauth.connected" && flowID != "" {
				go s.elicitationComplete(owner, flowID)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	if cs.by == nil {
		cs.by = make(map[string]*connectorEntry)
	}
	cs.by[name] = &connectorEntry{sig: sig, c: c, mayConnect: o.connectAuthz}
	return c, nil
}

// connectionStoreDir is where config.oauth keeps connections: its dir,
// else <stateDir>/oauth beside the identity keys; "" for a gateway
// without a state dir (tailgate dev, tests).
func (s *Server) connectionStoreDir(cfg *Config) string {
	if oc := cfg.Global.OAuth; oc != nil && oc.Dir != "" {
		return oc.Dir
	}
	if s.opts.KeyDir != "" {
		return filepath.Join(filepath.Dir(s.opts.KeyDir), "oauth")
	}
	return ""
}

// connectionStore is config.oauth's store: its dir and key. With no key
// configured, a gateway without a state dir (tailgate dev) keeps its
// connections for the run only: a key of its own, made once, and a
// temporary directory.
func (s *Server) connectionStore(ctx context.Context, cfg *Config, cr *credentials) (dir string, key []byte, err error) {
	oc := cfg.Global.OAuth
	dir = s.connectionStoreDir(cfg)
	if oc == nil || oc.Key == nil {
		if s.opts.KeyDir != "" {
			return "", nil, errors.New("config.oauth.key is required when a target has backendAuth.oauth: the key that seals its callers' tokens ({file: …}, {env: …} or {setec: …}, 32 bytes: `openssl rand -hex 32`)")
		}
		cs := &s.oauth
		cs.mu.Lock()
		defer cs.mu.Unlock()
		if cs.runKey == nil {
			cs.runKey = make([]byte, oauth.KeySize)
			rand.Read(cs.runKey)
			if cs.runDir, err = os.MkdirTemp("", "tailgate-oauth-"); err != nil {
				return "", nil, err
			}
			s.log.Warn("oauth: no config.oauth.key: connections are kept for this run only", "dir", cs.runDir)
		}
		return cs.runDir, cs.runKey, nil
	}
	v, err := cr.resolver.Resolve(ctx, oc.Key.Ref, nil)
	if err != nil {
		return "", nil, fmt.Errorf("config.oauth.key: %w", err)
	}
	if key, err = oauth.ParseKey([]byte(v)); err != nil {
		return "", nil, fmt.Errorf("config.oauth.key: %w", err)
	}
	if dir == "" {
		return "", nil, errors.New("config.oauth.dir is required without a state dir")
	}
	return dir, key, nil
}

// oauthPages are the connect pages of the connectors the config uses;
// nil if none.
func (s *Server) oauthPages() http.Handler {
	cs := &s.oauth
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if len(cs.by) == 0 {
		return nil
	}
	by := make(map[string]*oauth.Connector, len(cs.by))
	for name, e := range cs.by {
		by[name] = e.c
	}
	rules := make(map[string]*policy.RuleSet, len(cs.by))
	for name, e := range cs.by {
		rules[name] = e.mayConnect
	}
	if cs.formKey == nil {
		cs.formKey = make([]byte, 32)
		rand.Read(cs.formKey)
	}
	p := &oauth.Pages{Connectors: by, Log: s.log.With("component", "oauth"), FormKey: cs.formKey,
		Identify: func(r *http.Request) (string, error) {
			return connectionOwner(tailnetIdentity(sourceFrom(r.Context()))), nil
		},
		MayConnect: func(r *http.Request, target string) error {
			return s.mayConnect(rules[target], sourceFrom(r.Context()), target)
		},
	}
	return p.Handler()
}

// mayConnect applies a target's connectAuthorization (rs; nil allows
// everyone) to src, auditing the decision.
func (s *Server) mayConnect(rs *policy.RuleSet, src *policy.Source, target string) error {
	if rs == nil {
		return nil
	}
	d := rs.Evaluate(policy.Input{Source: src})
	s.auditConnect(src, target, d)
	if d.Allow {
		return nil
	}
	return fmt.Errorf("your tailnet identity may not connect an account at %s (%s: %s)", target, d.Rule, d.Reason())
}

// gatewayURL is the URL callers' browsers reach the gateway by.
func (s *Server) gatewayURL() string {
	if self := s.self.Load(); self != nil {
		return s.issuerURL(self.full)
	}
	return ""
}

// connectionOwner is whose connection a caller uses: its login; a tagged
// node (no person) its stable node ID.
func connectionOwner(id *tsnode.Identity) string {
	switch {
	case id == nil:
		return ""
	case id.UserLogin != "" && id.UserLogin != "tagged-devices" && len(id.Tags) == 0:
		return id.UserLogin
	case id.NodeID != "":
		// A tagged node by its stable ID: a node made later with the
		// same name is another node, and no login contains a space.
		return "node " + id.NodeID
	}
	return ""
}

// connectorAuth is a connector as a remote target's Authorizer.
type connectorAuth struct {
	c *oauth.Connector
	s *Server
}

func (a connectorAuth) Token(ctx context.Context, id *tsnode.Identity) (string, error) {
	owner := connectionOwner(id)
	if owner == "" && !a.c.Service() {
		return "", nil
	}
	return a.c.Token(ctx, owner)
}

func (a connectorAuth) Unauthorized(ctx context.Context, id *tsnode.Identity, req *http.Request, resp *http.Response) error {
	owner := connectionOwner(id)
	if owner == "" && !a.c.Service() {
		return fmt.Errorf("target %q needs a person's account: the caller has no tailnet login", a.c.Target())
	}
	if !a.c.Service() {
		// Someone who may not connect gets no link (and no client is
		// registered for a flow that could not end).
		a.s.oauth.mu.Lock()
		var rs *policy.RuleSet
		if e := a.s.oauth.by[a.c.Target()]; e != nil && e.c == a.c {
			rs = e.mayConnect
		}
		a.s.oauth.mu.Unlock()
		if err := a.s.mayConnect(rs, &policy.Source{Tailscale: tailscaleSource(id)}, a.c.Target()); err != nil {
			return err
		}
	}
	err := a.c.Unauthorized(ctx, owner, req, resp)
	var cr *oauth.ConnectRequired
	if errors.As(err, &cr) {
		return &remote.ConnectRequired{ID: cr.ID, URL: cr.URL, Message: cr.Error()}
	}
	return err
}

// connectionOf says whether owner has a connection to target, and its
// scopes (policy's mcp.connection).
func (s *Server) connectionOf(target, owner string) (bool, []string) {
	cs := &s.oauth
	cs.mu.Lock()
	e := cs.by[target]
	cs.mu.Unlock()
	if e == nil || owner == "" {
		return false, nil
	}
	rec := e.c.Connection(owner)
	if rec == nil {
		return false, nil
	}
	return true, slices.Clone(rec.Scopes)
}

// oauthClient reaches the authorization servers of the target at
// targetURL, whose answers (metadata, registration, tokens) name further
// URLs that tailgate then fetches. A target and its servers must not
// steer tailgate to what only the gateway can reach: an address is dialled
// only if it is of a kind the target's own host is (public always;
// loopback, private or the tailnet only for a target there; link-local,
// cloud metadata, never), a tailnet host through tailgate's node, and a
// redirect never leaves its host or https.
func (s *Server) oauthClient(targetURL string, timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	var targetHost string
	if u, err := url.Parse(targetURL); err == nil {
		targetHost = u.Hostname()
	}
	allowed := addressKinds(targetHost)
	d := &net.Dialer{Timeout: timeout, Control: func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return err
		}
		if k := addressKind(ip.Unmap()); !allowed[k] {
			return fmt.Errorf("oauth: %s is a %s address, which target %s's authorization does not reach", ip, k, targetHost)
		}
		return nil
	}}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, _, err := net.SplitHostPort(addr); err == nil && isTailnetHost(host) {
			if !allowed["tailnet"] {
				return nil, fmt.Errorf("oauth: %s is on the tailnet, which target %s's authorization does not reach", host, targetHost)
			}
			return s.dialTailnet(ctx, network, addr)
		}
		return d.DialContext(ctx, network, addr)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext, tr.TLSHandshakeTimeout = dial, timeout
	tr.Proxy = func(r *http.Request) (*url.URL, error) {
		if isTailnetHost(r.URL.Hostname()) {
			return nil, nil // reached through the node, never a proxy
		}
		return http.ProxyFromEnvironment(r)
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		prev := via[len(via)-1]
		if len(via) > 3 || req.URL.Host != prev.URL.Host || prev.URL.Scheme == "https" && req.URL.Scheme != "https" {
			return fmt.Errorf("oauth: a redirect from %s to %s is not followed", prev.URL.Host, req.URL.Host)
		}
		return nil
	}}
}

// addressKind is the kind of ip, as oauthClient allows them.
func addressKind(ip netip.Addr) string {
	switch {
	case ip.IsLoopback():
		return "loopback"
	case ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() || ip.IsInterfaceLocalMulticast():
		return "link-local"
	case tsaddr.IsTailscaleIP(ip):
		return "tailnet"
	case ip.IsPrivate():
		return "private"
	}
	return "public"
}

// addressKinds are the kinds of address the authorization of a target
// on host may reach: public ones, and the kind of the target's own.
func addressKinds(host string) map[string]bool {
	kinds := map[string]bool{"public": true}
	switch {
	case isTailnetHost(host):
		kinds["tailnet"] = true
	case host == "localhost":
		kinds["loopback"] = true
	default:
		if ip, err := netip.ParseAddr(host); err == nil {
			if k := addressKind(ip.Unmap()); k != "link-local" {
				kinds[k] = true
			}
		} else if ips, err := net.DefaultResolver.LookupNetIP(context.Background(), "ip", host); err == nil {
			for _, ip := range ips {
				if k := addressKind(ip.Unmap()); k != "link-local" {
					kinds[k] = true
				}
			}
		}
	}
	return kinds
}

// auditConnect records a connectAuthorization decision: who followed a
// connect link (or came back from the authorization server) for target.
func (s *Server) auditConnect(src *policy.Source, target string, d policy.Decision) {
	if s.audit == nil {
		return
	}
	r := audit.Record{Event: "oauth.connect", Caller: auditCaller(src, netip.AddrPort{}), Target: target, Decision: decisionOf(d), Rule: d.Rule}
	if !d.Allow {
		r.Reason = d.Reason()
	}
	s.writeAudit(r)
}

// auditConnectionChange records a connection made or removed (event
// "oauth.connected", "oauth.disconnected") for owner at target.
func (s *Server) auditConnectionChange(event, target, owner string) {
	if s.audit == nil {
		return
	}
	s.writeAudit(audit.Record{Event: event, Caller: audit.Caller{Login: owner}, Target: target, Decision: "allow"})
}

// hiddenConnections are the connection stores children are kept from:
// config.oauth's dir (made now, so that it can be hidden before any child
// starts) and a run's own, if any.
func (s *Server) hiddenConnections(cfg *Config) []string {
	var paths []string
	uses := false
	for _, tp := range configTargets(cfg) {
		if r, _ := tp.t.remote(); r != nil && r.BackendAuth != nil && r.BackendAuth.OAuth != nil {
			uses = true
		}
	}
	if dir := s.connectionStoreDir(cfg); uses && dir != "" {
		if err := os.MkdirAll(dir, 0o700); err == nil {
			paths = append(paths, dir)
		}
	}
	s.oauth.mu.Lock()
	if s.oauth.runDir != "" {
		paths = append(paths, s.oauth.runDir)
	}
	s.oauth.mu.Unlock()
	return paths
}

// elicitationComplete tells owner's sessions that the URL elicitation
// flowID (a connect link they were given) is complete (MCP 2025-11-25's
// notifications/elicitation/complete): a client that showed the link can
// retry the call by itself. Sessions of other callers hear nothing.
func (s *Server) elicitationComplete(owner, flowID string) {
	msg := fmt.Appendf(nil, `{"jsonrpc":"2.0","method":"notifications/elicitation/complete","params":{"elicitationId":%q}}`, flowID)
	var to []*frontSession
	for _, f := range s.allFronts() {
		f.mu.Lock()
		for _, fs := range f.sessions {
			if connectionOwner(tailnetIdentity(fs.owner)) == owner {
				to = append(to, fs)
			}
		}
		f.mu.Unlock()
	}
	for _, fs := range to {
		fs.enqueue(msg)
	}
}
