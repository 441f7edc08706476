package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tailscale/setec/client/setec"

	"github.com/tailgate-dev/tailgate/gateway/idtoken"
	"github.com/tailgate-dev/tailgate/gateway/relay"
	"github.com/tailgate-dev/tailgate/gateway/remote"
	"github.com/tailgate-dev/tailgate/gateway/secrets"
	"github.com/tailgate-dev/tailgate/mcpstdio/buffers"
	"github.com/tailgate-dev/tailgate/policy"
	"github.com/tailgate-dev/tailgate/tsnode"
)

// This file is the credentials stage: what a target is given to know, or
// act for, its caller. A stdio child gets the caller's own secrets in its
// environment (stdio.callerEnv) and a token naming the caller
// (stdio.identityToken) as it starts; a remote target gets the caller's
// secrets as headers (callerHeaders, backendAuth.key) on its link and a
// token tailgate signs for that caller and that target
// (backendAuth.identityToken) on each request. Secrets are read when the
// child or link starts, so a changed secret reaches the next one; tokens
// are cached per caller and target until half their life is gone.

// callerIdentity is who a session or a request is for, as the relay passes it on
// to targets (relay.Identity): its source, and its tailnet identity
// made of it when a credential needs it.
type callerIdentity struct {
	src  *policy.Source
	once sync.Once
	id   *tsnode.Identity
}

func newCaller(src *policy.Source) *callerIdentity { return &callerIdentity{src: src} }

// Env is the caller as the environment of a child with identityEnv.
func (c *callerIdentity) Env() map[string]string { return identityEnv(c.src) }

// tailnet is the caller's tailnet identity, as WhoIs said it; nil for a
// peer that is not a tailnet node.
func (c *callerIdentity) tailnet() *tsnode.Identity {
	c.once.Do(func() { c.id = tailnetIdentity(c.src) })
	return c.id
}

// tailnetOf is the tailnet identity of a caller the relay passed on.
func tailnetOf(id relay.Identity) *tsnode.Identity {
	if c, ok := id.(*callerIdentity); ok && c != nil {
		return c.tailnet()
	}
	return nil
}

// tailnetIdentity is src's tailnet identity, its grants as JSON again.
func tailnetIdentity(src *policy.Source) *tsnode.Identity {
	ts := src.Tailscale
	if ts == nil {
		return nil
	}
	id := &tsnode.Identity{
		NodeName: ts.Node.Name, NodeHostname: ts.Node.Hostname, NodeID: ts.Node.ID, NodeOS: ts.Node.OS,
		Tags: ts.Node.Tags, UserLogin: ts.User.Login, UserDisplayName: ts.User.DisplayName,
	}
	if caps, ok := ts.Caps.Value().(map[string][]any); ok && len(caps) > 0 {
		id.Caps = make(map[string][]json.RawMessage, len(caps))
		for name, vals := range caps {
			for _, v := range vals {
				if raw, err := json.Marshal(v); err == nil {
					id.Caps[name] = append(id.Caps[name], raw)
				}
			}
		}
	}
	return id
}

// credentials are what a gateway's targets are given per caller: the
// secret sources and the signing keys.
type credentials struct {
	resolver *secrets.Resolver
	// signer is set once the gateway knows its tailnet name (Start).
	signer func() *idtoken.Signer
}

// missingSecretError is a caller without a secret its target needs.
type missingSecretError struct {
	target, what string
	err          error
}

func (e *missingSecretError) Error() string {
	return fmt.Sprintf("target %q needs %s of its caller, and %v", e.target, e.what, e.err)
}

func (e *missingSecretError) Unwrap() error { return e.err }

// resolveAll reads refs for caller id, by name; what is missing is said
// with the target's name. It also returns the values, for redaction.
func (cr *credentials) resolveAll(ctx context.Context, target, kind string, refs map[string]SecretRef, id *tsnode.Identity) (map[string]string, []string, error) {
	if len(refs) == 0 {
		return nil, nil, nil
	}
	out := make(map[string]string, len(refs))
	values := make([]string, 0, len(refs))
	for _, name := range sortedNames(refs) {
		v, err := cr.resolver.Resolve(ctx, refs[name].Ref, id)
		if err != nil {
			return nil, nil, &missingSecretError{target: target, what: kind + " " + name, err: err}
		}
		out[name] = v
		values = append(values, v)
	}
	return out, values, nil
}

// sortedNames are m's names in order: secrets are read, and missing ones
// said, in the same order every time.
func sortedNames(m map[string]SecretRef) []string { return slices.Sorted(maps.Keys(m)) }

// token is a token for id at audience, from the signer.
func (cr *credentials) token(id *tsnode.Identity, audience string) (string, error) {
	s := cr.signer()
	if s == nil {
		return "", errors.New("tailgate has no signing key yet (it is not on the tailnet)")
	}
	if id == nil {
		return "", errors.New("the caller is not a tailnet node: there is no identity to sign")
	}
	tok, _, err := s.Token(id, audience)
	return tok, err
}

// stdioCallerEnv is the relay's CallerEnv of stdio target t: its
// callerEnv read for the caller, "${NAME}" in its args replaced, and its
// identity token; nil when t has none of them.
func (cr *credentials) stdioCallerEnv(name string, t *StdioTarget) func(context.Context, relay.Identity) (map[string]string, []string, []string, error) {
	if len(t.CallerEnv) == 0 && t.IdentityToken == nil {
		return nil
	}
	return func(ctx context.Context, identity relay.Identity) (map[string]string, []string, []string, error) {
		id := tailnetOf(identity)
		env, redact, err := cr.resolveAll(ctx, name, "the secret", t.CallerEnv, id)
		if err != nil {
			return nil, nil, nil, err
		}
		var args []string
		if len(env) > 0 {
			args = make([]string, len(t.Args))
			for i, a := range t.Args {
				args[i] = expandArg(a, env)
			}
		}
		if tt := t.IdentityToken; tt != nil {
			tok, err := cr.token(id, tt.audience(name, ""))
			if err != nil {
				return nil, nil, nil, fmt.Errorf("target %q: identity token: %w", name, err)
			}
			if env == nil {
				env = make(map[string]string, 1)
			}
			env[tt.envName()] = tok
			redact = append(redact, tok)
		}
		return env, args, redact, nil
	}
}

// expandArg replaces each "${NAME}" in arg whose NAME is in env.
func expandArg(arg string, env map[string]string) string {
	if !strings.Contains(arg, "${") {
		return arg
	}
	for k, v := range env {
		arg = strings.ReplaceAll(arg, "${"+k+"}", v)
	}
	return arg
}

// envName is the child's variable for its token.
func (it *IdentityToken) envName() string {
	if it.Env != "" {
		return it.Env
	}
	return "TAILGATE_IDENTITY_TOKEN"
}

// audience is the token's audience at target name (whose URL is url,
// for a remote one).
func (it *IdentityToken) audience(name, url string) string {
	switch {
	case it.Audience != "":
		return it.Audience
	case url != "":
		return url
	}
	return "tailgate-target:" + name
}

// header is the token's header and how its value reads.
func (it *IdentityToken) header(token string) (string, string) {
	if it.Header == "" || strings.EqualFold(it.Header, "Authorization") {
		return "Authorization", "Bearer " + token
	}
	return http.CanonicalHeaderKey(it.Header), token
}

// remoteDial is the relay's dialer of remote target rt (named name, at
// url, configured as r): each link carries its caller's secrets, read as
// it is made; a caller without one gets a link that has ended, saying
// what is missing.
func (cr *credentials) remoteDial(name string, r *RemoteTarget, rt *remote.Target) func(relay.Identity, func([]byte, *buffers.Charge), *buffers.Share, *slog.Logger) relay.Conn {
	refs := maps.Clone(r.CallerHeaders)
	if ba := r.BackendAuth; ba != nil && ba.Key != nil {
		if refs == nil {
			refs = make(map[string]SecretRef, 1)
		}
		refs["Authorization"] = *ba.Key
	}
	return func(identity relay.Identity, handle func([]byte, *buffers.Charge), mem *buffers.Share, log *slog.Logger) relay.Conn {
		id := tailnetOf(identity)
		var headers http.Header
		if len(refs) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), secretReadTimeout)
			vals, _, err := cr.resolveAll(ctx, name, "the secret header", refs, id)
			cancel()
			if err != nil {
				return remoteConn{remote.Failed(err)}
			}
			headers = make(http.Header, len(vals))
			for k, v := range vals {
				if k == "Authorization" && r.BackendAuth != nil && r.BackendAuth.Key != nil {
					v = "Bearer " + v
				}
				headers.Set(k, v)
			}
		}
		return remoteConn{rt.Dial(id, headers, handle, mem, log)}
	}
}

// secretReadTimeout bounds reading a link's secrets (setec over the
// tailnet among them).
const secretReadTimeout = 15 * time.Second

// remoteTokenHeaders are the per-request headers of a remote target
// with backendAuth.identityToken: its token for the request's caller.
func (cr *credentials) remoteTokenHeaders(name, url string, it *IdentityToken) func(*tsnode.Identity) (http.Header, error) {
	if it == nil {
		return nil
	}
	aud := it.audience(name, url)
	return func(id *tsnode.Identity) (http.Header, error) {
		tok, err := cr.token(id, aud)
		if err != nil {
			return nil, fmt.Errorf("identity token: %w", err)
		}
		k, v := it.header(tok)
		return http.Header{k: {v}}, nil
	}
}

// remoteConn is a remote link as the relay reaches it: the caller the
// relay passes on is the link's tailnet identity.
type remoteConn struct{ remote.Conn }

// Write posts msg for identity's caller.
func (c remoteConn) Write(msg []byte, headers map[string]string, identity relay.Identity) error {
	return c.Conn.Write(msg, headers, tailnetOf(identity))
}

// SetIdentity makes identity the link's caller from now on.
func (c remoteConn) SetIdentity(identity relay.Identity) {
	c.Conn.SetIdentity(tailnetOf(identity))
}

// credentials are the credentials of cfg's targets: secrets read from
// files, the gateway's environment and config.secrets.setec, tokens
// signed with the gateway's keys once it is on the tailnet.
func (s *Server) credentials(cfg *Config) *credentials {
	var opts secrets.Options
	if sc := cfg.Global.Secrets; sc != nil && sc.Setec != nil {
		opts.Setec = s.setecClient(sc.Setec)
	}
	return &credentials{resolver: secrets.New(opts), signer: s.signer.Load}
}

// setecClient is the client of setec server c: through tailgate's own
// node when the server is on the tailnet, so setec knows tailgate by its
// tailnet identity and grants it what its ACL says.
func (s *Server) setecClient(c *SetecConfig) *setec.Client {
	timeout := time.Duration(c.Timeout)
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	dial := (&net.Dialer{Timeout: timeout}).DialContext
	if u, err := url.Parse(c.URL); err == nil && isTailnetHost(u.Hostname()) {
		dial = s.dialTailnet
	}
	hc := &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: dial, TLSHandshakeTimeout: timeout}}
	return &setec.Client{Server: c.URL, DoHTTP: hc.Do}
}

// openSigner opens the gateway's signing keys, once it knows the name
// targets reach it by (the issuer of its tokens), and rotates them on
// schedule until the gateway shuts down. Keys live in Options.KeyDir;
// none: in memory, new at each start.
func (s *Server) openSigner(ctx context.Context, issuer string) error {
	cfg := s.state.Load().cfg
	opts := idtoken.Options{Dir: s.opts.KeyDir, Issuer: issuer, Log: s.log.With("component", "idtoken")}
	if it := cfg.Global.IdentityTokens; it != nil {
		opts.TTL, opts.RotateEvery, opts.Algorithm = time.Duration(it.TTL), time.Duration(it.RotateEvery), it.Algorithm
	}
	signer, err := idtoken.Open(opts)
	if err != nil {
		return fmt.Errorf("identity tokens: %w", err)
	}
	s.signer.Store(signer)
	go signer.Run(ctx)
	s.log.Info("identity tokens: signing keys ready", "issuer", issuer, "jwks", signer.JWKSURL(), "key_dir", s.opts.KeyDir)
	return nil
}

// issuerURL is the URL targets reach the gateway by, on the first of
// its ports: its tokens' issuer, where its keys are published.
func (s *Server) issuerURL(name string) string {
	ports := s.Ports()
	if len(ports) == 0 || name == "" {
		return ""
	}
	port := ports[0]
	scheme := "http"
	if b := s.state.Load().binds[port]; b != nil && b.https {
		scheme = "https"
	}
	if scheme == "https" && port == 443 || scheme == "http" && port == 80 {
		return scheme + "://" + name
	}
	return fmt.Sprintf("%s://%s:%d", scheme, name, port)
}
