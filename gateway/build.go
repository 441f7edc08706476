package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay"
	"github.com/tailgate-dev/tailgate/gateway/remote"
	"github.com/tailgate-dev/tailgate/policy"
)

// This file turns a Config into the server's routing: binds, listeners
// and routes, each route's front over its relay backend, stdio and
// remote targets (dialled on the tailnet or the host's network), and
// what every child is kept from (secrets, the node's files).

// build turns cfg into routing, reusing the fronts of old whose backend is
// unchanged (their sessions and children carry on) and creating the rest.
func (s *Server) build(cfg *Config, old map[string]*mcpFront) (*state, map[string]*mcpFront, error) {
	st := &state{cfg: cfg, binds: make(map[int]*bind), hosts: newHostRules(cfg)}
	fronts := make(map[string]*mcpFront)
	var created []*mcpFront
	fail := func(err error) (*state, map[string]*mcpFront, error) {
		for _, f := range created {
			f.close()
		}
		return nil, nil, err
	}
	front := func(key, name string, m *MCPBackend, authz *policy.RuleSet) (*mcpFront, error) {
		routeKey := key
		key += "|" + backendSignature(cfg, m)
		if f, ok := fronts[key]; ok {
			return f, nil
		}
		if f, ok := old[key]; ok {
			f.setAuthz(authz)
			fronts[key] = f
			return f, nil
		}
		f, err := s.newFront(cfg, name, m, authz)
		if err != nil {
			return nil, err
		}
		f.routeKey = routeKey
		created = append(created, f)
		fronts[key] = f
		return f, nil
	}
	for i, b := range cfg.Binds {
		sb := &bind{port: b.Port, https: len(b.Listeners) > 0 && protocolOf(b.Listeners[0]) == "HTTPS"}
		for j, l := range b.Listeners {
			sl := &listener{name: l.Name, hostname: l.Hostname}
			for k, r := range l.Routes {
				name := r.Name
				if name == "" {
					name = fmt.Sprintf("binds[%d].listeners[%d].routes[%d]", i, j, k)
				}
				if r.Backends[0].Status != nil {
					sl.routes = append(sl.routes, s.statusRoute(name, r))
					continue
				}
				routeKey := fmt.Sprintf("%d/%s/%s", b.Port, l.Name, name)
				f, err := front(routeKey, name, r.Backends[0].MCP, r.mcpAuthz)
				if err != nil {
					return fail(err)
				}
				f.setLimits(s.routeLimits(st, routeKey, name, r.Policies))
				sl.routes = append(sl.routes, &route{name: name, hostnames: r.Hostnames, matches: r.Matches, authz: r.authz, cors: corsOf(r.Policies), front: f, log: s.log.With("route", name)})
			}
			sb.listeners = append(sb.listeners, sl)
		}
		st.binds[b.Port] = sb
		st.ports = append(st.ports, b.Port)
	}
	if m := cfg.MCP; m != nil {
		port := m.Port
		if port == 0 {
			port = DefaultMCPPort
		}
		routeKey := fmt.Sprintf("%d/mcp", port)
		f, err := front(routeKey, "mcp", &MCPBackend{Targets: m.Targets, StatefulMode: m.StatefulMode, PrefixMode: m.PrefixMode, FailureMode: m.FailureMode}, m.mcpAuthz)
		if err != nil {
			return fail(err)
		}
		f.setLimits(s.routeLimits(st, routeKey, "mcp", m.Policies))
		st.binds[port] = &bind{port: port, listeners: []*listener{{
			name: "mcp",
			routes: []*route{{name: "mcp", front: f, authz: m.authz, cors: corsOf(m.Policies), log: s.log.With("route", "mcp"), matches: []Match{
				{Path: &PathMatch{Exact: "/mcp"}},
				{Path: &PathMatch{Exact: "/sse"}},
			}}},
		}}}
		st.ports = append(st.ports, port)
	}
	return st, fronts, nil
}

// corsOf is the cors policy of a route's policies, if any.
func corsOf(rp *RoutePolicies) *corsPolicy {
	if rp == nil {
		return nil
	}
	return newCORSPolicy(rp.CORS)
}

// maxMessageBytes is config.mcp.maxMessageBytes; 0 is the relay's default.
func maxMessageBytes(cfg *Config) int {
	if g := cfg.Global.MCP; g != nil {
		return g.MaxMessageBytes
	}
	return 0
}

// backendSignature is what makes a route's backend the same across a
// reload: its targets and modes, and the session settings.
func backendSignature(cfg *Config, m *MCPBackend) string {
	b, _ := json.Marshal(struct {
		M *MCPBackend
		G *GlobalMCP
		// A secret another target gained must be kept from these
		// children too.
		S childSecrets
	}{m, cfg.Global.MCP, cfg.secrets})
	return string(b)
}

// npxEnv is a stdio target's Env, with npm_config_yes=true added for an
// npx target unless the target's Env or (without clear_env) the gateway's
// environment sets it. npm 7 and later ask before installing a package
// that is not in the cache, and with no terminal to answer, npm 11 gives
// up ("npx canceled due to missing packages and no YES option"): the seed
// config's `npx @modelcontextprotocol/server-everything` would fail on
// every machine that has not run it before.
func npxEnv(t *StdioTarget, lookup func(string) (string, bool)) map[string]string {
	if base := filepath.Base(t.Command()); base != "npx" && base != "npx.cmd" {
		return t.Env
	}
	for k := range t.Env {
		if strings.EqualFold(k, "npm_config_yes") {
			return t.Env
		}
	}
	if !t.ClearEnv {
		for _, k := range []string{"npm_config_yes", "NPM_CONFIG_YES"} {
			if _, ok := lookup(k); ok {
				return t.Env
			}
		}
	}
	env := make(map[string]string, len(t.Env)+1)
	maps.Copy(env, t.Env)
	env["npm_config_yes"] = "true"
	return env
}

func (s *Server) newFront(cfg *Config, name string, m *MCPBackend, mcpAuthz *policy.RuleSet) (*mcpFront, error) {
	targets := make([]relay.Target, len(m.Targets))
	cr := s.credentials(cfg)
	for i, t := range m.Targets {
		if r, kind := t.remote(); r != nil {
			rt, err := s.remoteTarget(cfg, cr, t.Name, r, kind == "sse", maxMessageBytes(cfg))
			if err != nil {
				return nil, err
			}
			targets[i] = rt
			continue
		}
		targets[i] = relay.Target{
			Name: t.Name, Command: t.Stdio.Command(), Args: t.Stdio.Args, Env: npxEnv(t.Stdio, os.LookupEnv), ClearEnv: t.Stdio.ClearEnv,
			IdentityEnv: t.Stdio.IdentityEnv, Pool: t.Stdio.Pool, CallerEnv: cr.stdioCallerEnv(t.Name, t.Stdio),
			InitializeTimeout: time.Duration(t.Stdio.InitializeTimeout), RequestTimeout: time.Duration(t.Stdio.RequestTimeout),
		}
		if t.Stdio.User != "" {
			u, err := childUser(t.Stdio.User)
			if err != nil {
				return nil, fmt.Errorf("route %q: target %q: %w", name, t.Name, err)
			}
			targets[i].User = u
		}
	}
	backend, err := relay.NewBackend(name, targets, relay.Options{
		Logger:          s.log,
		Version:         Version,
		PrefixMode:      relay.PrefixMode(m.PrefixMode),
		FailureMode:     relay.FailureMode(m.FailureMode),
		StopGrace:       s.opts.StopGrace,
		DropEnv:         slices.Concat(s.opts.DropEnv, cfg.secrets.Env, secretEnvNames(cfg, os.Environ())),
		Secrets:         slices.Concat(s.opts.Secrets, secretValues(cfg.secrets.Values)),
		HidePaths:       slices.Concat(hiddenFromChildren(cfg.Tailscale), s.opts.HidePaths, s.hiddenConnections(cfg), secretFiles(cfg)),
		Buffers:         s.buffers,
		MaxMessageBytes: maxMessageBytes(cfg),
	})
	if err != nil {
		return nil, fmt.Errorf("route %q: %w", name, err)
	}
	ttl := s.opts.SessionTTL
	if g := cfg.Global.MCP; g != nil && g.SessionTTL > 0 {
		ttl = time.Duration(g.SessionTTL)
	}
	return newMCPFront(name, backend, frontOptions{
		Logger: s.log, SessionTTL: ttl, Authz: mcpAuthz, Budget: s.budget,
		Stages: stageDeps{
			metrics: s.metrics, status: s.status,
			secrets: newTargetSecrets(cr, m), connection: s.connectionOf,
			audit: s.audit, auditArgs: auditArgsOf(cfg),
			tracing: s.tracing.forBackend(m),
		},
		Stateless:       m.StatefulMode == "stateless",
		BodyReadTimeout: s.opts.BodyReadTimeout, SSEInitTimeout: s.opts.SSEInitTimeout,
		WriteStallTimeout: s.opts.WriteStallTimeout,
	}), nil
}

// remoteTarget is the relay target of an mcp: {host: …} target (or
// sse: {host: …}, with sse): a remote.Target the relay dials.
func (s *Server) remoteTarget(cfg *Config, cr *credentials, name string, r *RemoteTarget, sse bool, maxMsg int) (relay.Target, error) {
	opts := s.remoteOptions(name, r, sse, maxMsg)
	if ba := r.BackendAuth; ba != nil {
		opts.CallerHeaders = cr.remoteTokenHeaders(name, opts.URL, ba.IdentityToken)
		if ba.OAuth != nil {
			ctx, cancel := context.WithTimeout(context.Background(), secretReadTimeout)
			c, err := s.connectorFor(ctx, cfg, cr, name, opts.URL, ba.OAuth, s.oauthClient(opts.URL, opts.ConnectTimeout))
			cancel()
			if err != nil {
				return relay.Target{}, fmt.Errorf("target %q: %w", name, err)
			}
			opts.Authorizer = connectorAuth{c: c, s: s}
		}
	}
	return relay.Target{
		Name:              name,
		InitializeTimeout: time.Duration(r.InitializeTimeout),
		RequestTimeout:    time.Duration(r.RequestTimeout),
		Remote: &relay.RemoteTarget{
			Dial: cr.remoteDial(name, r, remote.New(opts)),
			// Identity headers, the caller's secrets and tokens all need
			// the caller.
			TellsIdentity: r.IdentityHeaders || len(r.CallerHeaders) > 0 || r.BackendAuth != nil,
		},
	}, nil
}

// remoteOptions are the remote client's options for target r: dialled
// through the tailnet when its host is there (isTailnetHost) or its
// tailnet key says so.
func (s *Server) remoteOptions(name string, r *RemoteTarget, sse bool, maxMsg int) remote.Options {
	u := r.URL()
	headers := make(map[string]string, len(r.Headers))
	for k, v := range r.Headers {
		headers[k] = v.Value
	}
	host := u
	if pu, err := url.Parse(u); err == nil {
		host = pu.Hostname()
	}
	tailnet := isTailnetHost(host)
	if r.Tailnet != nil {
		tailnet = *r.Tailnet
	}
	return remote.Options{
		Name: name, URL: u, SSE: sse, Tailnet: tailnet, TailnetDial: s.dialTailnet,
		Headers: headers, IdentityHeaders: r.IdentityHeaders,
		CAFile: r.CAFile, ConnectTimeout: time.Duration(r.ConnectTimeout), MaxMessageBytes: maxMsg,
	}
}

// isTailnetHost reports whether a target's host is on the tailnet: a
// tailnet address (100.64.0.0/10, fd7a:115c:a1e0::/48), a MagicDNS short
// name (no dot) or a name under .ts.net. Those are dialled through
// tailgate's own node; anything else through the host's network.
func isTailnetHost(host string) bool {
	if ip, err := netip.ParseAddr(host); err == nil {
		return tailnetV4.Contains(ip) || tailnetV6.Contains(ip)
	}
	return host != "localhost" && !strings.Contains(host, ".") || strings.HasSuffix(host, ".ts.net")
}

var (
	tailnetV4 = netip.MustParsePrefix("100.64.0.0/10")
	tailnetV6 = netip.MustParsePrefix("fd7a:115c:a1e0::/48")
)

// DialNetwork is a Network that can dial tailnet hosts (a tsnet node).
type DialNetwork interface {
	Dial(ctx context.Context, network, addr string) (net.Conn, error)
}

// dialTailnet dials a tailnet host through the network the server was
// started on.
func (s *Server) dialTailnet(ctx context.Context, network, addr string) (net.Conn, error) {
	s.mu.Lock()
	n := s.network
	s.mu.Unlock()
	if d, ok := n.(DialNetwork); ok {
		return d.Dial(ctx, network, addr)
	}
	return nil, errors.New("not on a tailnet: tailgate has no node to dial tailnet hosts through")
}

// secretValues are the config's secret values that are kept from
// children's environments by value: those of at least 8 bytes, as the log
// redaction's (a shorter one would remove every variable that happens to
// hold it; its variable is dropped by name all the same).
func secretValues(values []string) []string {
	var out []string
	for _, v := range values {
		if len(v) >= 8 {
			out = append(out, v)
		}
	}
	return out
}

// hiddenFromChildren are the paths no stdio child may reach
// (relay.Options.HidePaths): the configured state dir and auth key
// file. tsnode's default state dir is added by the caller
// (Options.HidePaths), which knows where the node put it.
func hiddenFromChildren(ts TailscaleConfig) []string {
	var paths []string
	if ts.StateDir != "" {
		paths = append(paths, ts.StateDir)
	}
	if ts.AuthKeyFile != "" {
		paths = append(paths, ts.AuthKeyFile)
	}
	return paths
}

// secretEnvNames are the variables of environ that a secret source of
// cfg names or could name for some caller ({env: GITHUB_TOKEN_{user}}
// names every GITHUB_TOKEN_*): no child inherits them, so that a child
// holds its own caller's secret, given to it, and nobody else's.
func secretEnvNames(cfg *Config, environ []string) []string {
	var names []string
	for _, nr := range cfg.secretRefs {
		names = append(names, nr.ref.EnvNames(environ)...)
	}
	return names
}

// secretFiles are the files a secret source of cfg names for the gateway
// itself (config.oauth.key, a client secret, a key the same for every
// caller): no child reads them.
func secretFiles(cfg *Config) []string {
	var paths []string
	for _, nr := range cfg.secretRefs {
		if nr.ref.File != "" && !nr.ref.PerCaller() {
			paths = append(paths, nr.ref.File)
		}
	}
	return paths
}
