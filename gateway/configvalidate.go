package gateway

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// This file holds the config's validation, which Parse runs after
// decoding: each block's checks, named backends put in place, and how
// an error finds the line of the field it is about.

// lookup returns the node at a dotted path under n ("binds[0].port"), or
// nil. It is how validation finds the line of a field.
func lookup(n *yaml.Node, keys ...any) *yaml.Node {
	for _, k := range keys {
		n = resolve(n)
		if n == nil {
			return nil
		}
		switch k := k.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return nil
			}
			var found *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if resolve(n.Content[i]).Value == k {
					found = n.Content[i+1]
				}
			}
			n = found
		case int:
			if n.Kind != yaml.SequenceNode || k >= len(n.Content) {
				return nil
			}
			n = n.Content[k]
		}
	}
	return resolve(n)
}

// keyNode is the key node of a top-level key, for errors about a block
// as a whole (its line is the key's, not its first child's).
func keyNode(doc *yaml.Node, key string) *yaml.Node {
	if doc.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(doc.Content); i += 2 {
			if resolve(doc.Content[i]).Value == key {
				return doc.Content[i]
			}
		}
	}
	return doc
}

// at is lookup falling back to the nearest existing ancestor, so that an
// error about a missing field points at its parent.
func at(n *yaml.Node, keys ...any) *yaml.Node {
	for i := len(keys); i >= 0; i-- {
		if found := lookup(n, keys[:i]...); found != nil {
			return found
		}
	}
	return n
}

var (
	hostnameRE   = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)
	targetNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9.-]*$`)
)

// validate checks what decoding cannot: the values of each block and how
// they go together (ports, hostnames, named backends, targets). Each check
// reports to d, so that one run reports every problem.
func (d *decoder) validate(doc *yaml.Node, cfg *Config) {
	d.setec = d.validateSecrets(doc, cfg)
	if o := cfg.Global.OAuth; o != nil && o.Key != nil {
		d.noteSecretRef(doc, []any{"config", "oauth", "key"}, "config.oauth.key", *o.Key)
	}
	d.resolveBackends(doc, cfg)
	d.validateTailscale(doc, &cfg.Tailscale)
	d.validateGlobal(doc, cfg)
	d.validateTracing(doc, cfg.Global.Tracing)
	d.validateFrontendPolicies(doc, cfg)
	if len(cfg.Binds) == 0 && cfg.MCP == nil {
		d.errorf(doc, "", "nothing to serve: add binds or an mcp block")
	}
	ports := d.validateBinds(doc, cfg)
	if m := cfg.MCP; m != nil {
		d.validateSimpleMCP(doc, m, ports)
	}
}

// validateTailscale checks the tailscale block: names, URLs and tags, and
// the settings that mode host leaves to the host's tailscaled.
func (d *decoder) validateTailscale(doc *yaml.Node, ts *TailscaleConfig) {
	if ts.Hostname != "" && !hostnameRE.MatchString(ts.Hostname) {
		d.errorf(at(doc, "tailscale", "hostname"), "tailscale.hostname", "%q is not a valid hostname (letters, digits and '-', at most 63)", ts.Hostname)
	}
	if ts.ControlURL != "" {
		u, err := url.Parse(ts.ControlURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			d.errorf(at(doc, "tailscale", "controlURL"), "tailscale.controlURL", "%q is not an http(s) URL", ts.ControlURL)
		}
	}
	if ts.Service != "" && (!strings.HasPrefix(ts.Service, "svc:") || !hostnameRE.MatchString(strings.TrimPrefix(ts.Service, "svc:"))) {
		d.errorf(at(doc, "tailscale", "service"), "tailscale.service", "%q is not a Service name (want svc:name)", ts.Service)
	}
	if ts.Service != "" && len(ts.AdvertiseTags) == 0 {
		d.errorf(at(doc, "tailscale", "service"), "tailscale.service", "a Service host must be a tagged node: set tailscale.advertiseTags")
	}
	switch ts.Mode {
	case "", "tsnet":
		if ts.Socket != "" {
			d.errorf(at(doc, "tailscale", "socket"), "tailscale.socket", "applies to mode: host only")
		}
	case "host":
		// The host's tailscaled owns its node: settings of tailgate's own
		// node would be silently meaningless.
		for _, f := range []struct {
			key string
			set bool
		}{
			{"hostname", ts.Hostname != ""}, {"controlURL", ts.ControlURL != ""}, {"authKeyFile", ts.AuthKeyFile != ""},
			{"ephemeral", ts.Ephemeral}, {"stateDir", ts.StateDir != ""}, {"stateStore", ts.StateStore != ""},
			{"advertiseTags", len(ts.AdvertiseTags) > 0}, {"startTimeout", ts.StartTimeout != 0},
			{"logUpload", ts.LogUpload}, {"service", ts.Service != ""},
		} {
			if f.set {
				d.errorf(at(doc, "tailscale", f.key), "tailscale."+f.key, "does not apply to mode: host (the host's tailscaled owns the node)")
			}
		}
	default:
		d.errorf(at(doc, "tailscale", "mode"), "tailscale.mode", "unknown mode %q (want tsnet or host)", ts.Mode)
	}
	switch ts.StateStore {
	case "", "file":
	case "mem":
		if !ts.Ephemeral {
			d.errorf(at(doc, "tailscale", "stateStore"), "tailscale.stateStore", "mem keeps no node keys, so it needs ephemeral: true")
		}
	default:
		d.errorf(at(doc, "tailscale", "stateStore"), "tailscale.stateStore", "unknown state store %q (want file or mem)", ts.StateStore)
	}
	for i, tag := range ts.AdvertiseTags {
		if !strings.HasPrefix(tag, "tag:") || len(tag) == len("tag:") {
			d.errorf(at(doc, "tailscale", "advertiseTags", i), fmt.Sprintf("tailscale.advertiseTags[%d]", i), "%q is not a tag (want tag:name)", tag)
		}
	}
}

// validateGlobal checks the config block: the admin, stats and readiness
// addresses, and config.mcp's limits and allowed origins.
// validateSecrets checks config.secrets and config.identityTokens, and
// says whether a setec server is configured.
func (d *decoder) validateSecrets(doc *yaml.Node, cfg *Config) bool {
	if it := cfg.Global.IdentityTokens; it != nil {
		switch it.Algorithm {
		case "", "EdDSA", "ES256":
		default:
			d.errorf(at(doc, "config", "identityTokens", "algorithm"), "config.identityTokens.algorithm", "unknown algorithm %q (want EdDSA or ES256)", it.Algorithm)
		}
		if it.TTL < 0 || it.RotateEvery < 0 || it.RotateEvery > 0 && it.RotateEvery < max(it.TTL, Duration(5*time.Minute)) {
			d.errorf(at(doc, "config", "identityTokens"), "config.identityTokens", "ttl must not be negative, and rotateEvery must be longer than ttl")
		}
	}
	if a := cfg.Global.Audit; a != nil {
		if a.File != "" {
			a.File = resolvePath(d.dir, a.File)
		}
		if a.MaxSizeMB < 0 || a.MaxAgeDays < 0 || a.MaxBackups < 0 {
			d.errorf(at(doc, "config", "audit"), "config.audit", "maxSizeMB, maxAgeDays and maxBackups must not be negative")
		}
	}
	if o := cfg.Global.OAuth; o != nil {
		if o.Dir != "" {
			o.Dir = resolvePath(d.dir, o.Dir)
		}
		if o.Key != nil && o.Key.PerCaller() {
			d.errorf(at(doc, "config", "oauth", "key"), "config.oauth.key", "the connections' key is the gateway's: its template cannot name a caller")
		}
	}
	if r := cfg.Global.Readiness; r != nil && r.Targets != "" && r.Targets != "all" && r.Targets != "any" {
		d.errorf(at(doc, "config", "readiness", "targets"), "config.readiness.targets", "unknown value %q (want all or any)", r.Targets)
	}
	sc := cfg.Global.Secrets
	if sc == nil || sc.Setec == nil {
		return false
	}
	u, err := url.Parse(sc.Setec.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		d.errorf(at(doc, "config", "secrets", "setec", "url"), "config.secrets.setec.url", "%q is not an http(s) URL", sc.Setec.URL)
		return false
	}
	return true
}

func (d *decoder) validateGlobal(doc *yaml.Node, cfg *Config) {
	for _, a := range []struct{ key, addr string }{{"adminAddr", cfg.Global.AdminAddr}, {"statsAddr", cfg.Global.StatsAddr}, {"readinessAddr", cfg.Global.ReadinessAddr}} {
		if a.addr == "" || (a.key == "adminAddr" && a.addr == "off") {
			continue
		}
		if _, port, err := net.SplitHostPort(a.addr); err != nil || port == "" {
			d.errorf(at(doc, "config", a.key), "config."+a.key, "%q is not host:port", a.addr)
		}
	}
	if g := cfg.Global.MCP; g != nil && g.MaxSessions < 0 {
		d.errorf(at(doc, "config", "mcp", "maxSessions"), "config.mcp.maxSessions", "must not be negative")
	}
	if g := cfg.Global.MCP; g != nil && g.MaxSessionsPerPeer < 0 {
		d.errorf(at(doc, "config", "mcp", "maxSessionsPerPeer"), "config.mcp.maxSessionsPerPeer", "must not be negative")
	}
	if g := cfg.Global.MCP; g != nil && g.MaxMessageBytes < 0 {
		d.errorf(at(doc, "config", "mcp", "maxMessageBytes"), "config.mcp.maxMessageBytes", "must not be negative")
	}
	if g := cfg.Global.MCP; g != nil {
		for i, o := range g.AllowedOrigins {
			if msg := checkOrigin(o); msg != "" {
				d.errorf(at(doc, "config", "mcp", "allowedOrigins", i), fmt.Sprintf("config.mcp.allowedOrigins[%d]", i), "%s", msg)
			}
		}
	}
}

// validateFrontendPolicies checks frontendPolicies: what a connection
// that networkAuthorization denies gets.
func (d *decoder) validateFrontendPolicies(doc *yaml.Node, cfg *Config) {
	if np := cfg.FrontendPolicies.NetworkAuthorization; np != nil {
		switch np.Denied {
		case "", DeniedReply, DeniedClose:
		default:
			d.errorf(at(doc, "frontendPolicies", "networkAuthorization", "denied"), "frontendPolicies.networkAuthorization.denied", "unknown value %q (want reply or close)", np.Denied)
		}
	}
}

// validateBinds checks every bind, its listeners and their routes, and
// returns the ports bound, each with the path of the bind that binds it,
// for the mcp block's port.
func (d *decoder) validateBinds(doc *yaml.Node, cfg *Config) map[int]string {
	ports := make(map[int]string)
	for i, b := range cfg.Binds {
		path := fmt.Sprintf("binds[%d]", i)
		if lookup(doc, "binds", i, "port") == nil {
			d.errorf(at(doc, "binds", i), path+".port", "a bind needs a port")
		} else if b.Port < 1 || b.Port > 65535 {
			d.errorf(at(doc, "binds", i, "port"), path+".port", "port %d out of range 1-65535", b.Port)
		} else if prev, dup := ports[b.Port]; dup {
			d.errorf(at(doc, "binds", i, "port"), path+".port", "port %d is already bound by %s", b.Port, prev)
		} else {
			ports[b.Port] = path
		}
		if len(b.Listeners) == 0 && !slices.Contains(d.unsupported, path+".tunnelProtocol") {
			d.errorf(at(doc, "binds", i), path+".listeners", "a bind needs at least one listener")
		}
		hosts := make(map[string]bool)
		for j, l := range b.Listeners {
			lpath := fmt.Sprintf("%s.listeners[%d]", path, j)
			switch l.Protocol {
			case "", "HTTP", "HTTPS":
				if j > 0 && protocolOf(l) != protocolOf(b.Listeners[0]) {
					d.errorf(at(doc, "binds", i, "listeners", j, "protocol"), lpath+".protocol", "all listeners of a bind use one protocol (listeners[0] is %s)", protocolOf(b.Listeners[0]))
				}
				if l.Protocol == "HTTPS" && cfg.Tailscale.Service != "" {
					d.errorf(at(doc, "binds", i, "listeners", j, "protocol"), lpath+".protocol", "HTTPS is not supported yet together with tailscale.service")
				}
			case "TLS", "TCP", "HBONE":
				d.errorf(at(doc, "binds", i, "listeners", j, "protocol"), lpath+".protocol", "protocol %s is not supported yet (HTTP is)", l.Protocol)
			default:
				d.errorf(at(doc, "binds", i, "listeners", j, "protocol"), lpath+".protocol", "unknown protocol %q (want HTTP)", l.Protocol)
			}
			if hosts[l.Hostname] {
				d.errorf(at(doc, "binds", i, "listeners", j), lpath, "another listener on this bind has hostname %q", l.Hostname)
			}
			hosts[l.Hostname] = true
			if len(l.Routes) == 0 {
				d.errorf(at(doc, "binds", i, "listeners", j), lpath+".routes", "a listener needs at least one route")
			}
			for k, r := range l.Routes {
				d.validateRoute(doc, r, fmt.Sprintf("%s.routes[%d]", lpath, k), "binds", i, "listeners", j, "routes", k)
			}
		}
	}
	return ports
}

// validateSimpleMCP checks the simplified mcp block: its port, which no
// bind may hold as well (ports), and its targets.
func (d *decoder) validateSimpleMCP(doc *yaml.Node, m *SimpleMCP, ports map[int]string) {
	port := m.Port
	if port == 0 {
		port = DefaultMCPPort
	}
	switch prev, dup := ports[port]; {
	case port < 1 || port > 65535:
		d.errorf(at(doc, "mcp", "port"), "mcp.port", "port %d out of range 1-65535", port)
	case dup && m.Port == 0:
		d.errorf(keyNode(doc, "mcp"), "mcp.port", "port %d (the mcp block's default) is already bound by %s", port, prev)
	case dup:
		d.errorf(at(doc, "mcp", "port"), "mcp.port", "port %d is already bound by %s", port, prev)
	}
	d.validateMCP(doc, &MCPBackend{Targets: m.Targets, StatefulMode: m.StatefulMode, PrefixMode: m.PrefixMode, FailureMode: m.FailureMode}, "mcp", "mcp")
}

// resolveBackends validates the named backends and puts each where a
// route names it (its mcp, and its policies unless the route's backend
// has its own).
func (d *decoder) resolveBackends(doc *yaml.Node, cfg *Config) {
	names := make(map[string]int)
	for i, nb := range cfg.Backends {
		path := fmt.Sprintf("backends[%d]", i)
		switch {
		case nb.Name == "":
			d.errorf(at(doc, "backends", i), path+".name", "a backend needs a name")
		case names[nb.Name] > 0:
			d.errorf(at(doc, "backends", i, "name"), path+".name", "backend %q is defined twice", nb.Name)
		default:
			names[nb.Name] = i + 1
		}
		if nb.MCP == nil {
			if !slices.ContainsFunc(d.unsupported, func(u string) bool { return strings.HasPrefix(u, path+".") }) {
				d.errorf(at(doc, "backends", i), path, "a backend needs mcp (the only kind tailgate serves)")
			}
			continue
		}
		d.validateMCP(doc, nb.MCP, path+".mcp", "backends", i, "mcp")
	}
	for i := range cfg.Binds {
		for j := range cfg.Binds[i].Listeners {
			for k := range cfg.Binds[i].Listeners[j].Routes {
				r := &cfg.Binds[i].Listeners[j].Routes[k]
				for n := range r.Backends {
					b := &r.Backends[n]
					if b.Backend == "" {
						continue
					}
					path := fmt.Sprintf("binds[%d].listeners[%d].routes[%d].backends[%d].backend", i, j, k, n)
					if b.MCP != nil {
						d.errorf(at(doc, "binds", i, "listeners", j, "routes", k, "backends", n, "backend"), path, "give mcp or backend, not both")
						continue
					}
					// agentgateway also writes a reference as
					// "<namespace>/<name>", "/name" without one.
					idx := names[strings.TrimPrefix(b.Backend, "/")]
					if idx == 0 {
						hint, _ := suggest(b.Backend, names)
						d.errorf(at(doc, "binds", i, "listeners", j, "routes", k, "backends", n, "backend"), path, "no backend named %q in backends%s", b.Backend, hint)
						continue
					}
					nb := cfg.Backends[idx-1]
					b.MCP, b.named = nb.MCP, true
					switch {
					case b.Policies == nil:
						b.Policies = nb.Policies
					case nb.Policies == nil || nb.Policies.MCPAuthorization == nil:
					case b.Policies.MCPAuthorization == nil:
						// The reference's other policies do not drop the
						// named backend's rules.
						p := *b.Policies
						p.MCPAuthorization = nb.Policies.MCPAuthorization
						b.Policies = &p
					default:
						d.warnf(at(doc, "binds", i, "listeners", j, "routes", k, "backends", n, "policies", "mcpAuthorization").Line,
							strings.TrimSuffix(path, ".backend")+".policies.mcpAuthorization",
							"replaces backend %q's own mcpAuthorization, which does not apply here", nb.Name)
					}
				}
			}
		}
	}
}

func (d *decoder) validateRoute(doc *yaml.Node, r Route, path string, keys ...any) {
	k := func(more ...any) []any { return append(append([]any{}, keys...), more...) }
	for i, m := range r.Matches {
		mpath := fmt.Sprintf("%s.matches[%d]", path, i)
		if p := m.Path; p != nil {
			switch {
			case p.Exact != "" && p.PathPrefix != "":
				d.errorf(at(doc, k("matches", i, "path")...), mpath+".path", "give one of exact or pathPrefix, not both")
			case p.Exact == "" && p.PathPrefix == "":
				d.errorf(at(doc, k("matches", i, "path")...), mpath+".path", "give one of exact or pathPrefix")
			case !strings.HasPrefix(p.Exact+p.PathPrefix, "/"):
				d.errorf(at(doc, k("matches", i, "path")...), mpath+".path", "a path starts with /")
			}
		}
	}
	switch len(r.Backends) {
	case 0:
		if !slices.Contains(d.unsupported, path+".policies.directResponse") && !slices.Contains(d.unsupported, path+".policies.requestRedirect") {
			d.errorf(at(doc, k("backends")...), path+".backends", "a route needs a backend")
		}
		return
	case 1:
	default:
		d.errorf(at(doc, k("backends", 1)...), path+".backends[1]", "several backends on one route (load balancing) are not supported yet")
		return
	}
	b := r.Backends[0]
	switch {
	case b.Status != nil:
		d.validateStatusRoute(doc, r, path, keys...)
		return
	case b.MCP == nil && b.Backend != "":
		return // an unknown name, reported as such
	case b.MCP == nil:
		d.errorf(at(doc, k("backends", 0)...), path+".backends[0]", "a backend needs mcp (the only kind tailgate serves)")
		return
	case b.named:
		return // validated where it is defined
	}
	d.validateMCP(doc, b.MCP, path+".backends[0].mcp", k("backends", 0, "mcp")...)
}

func (d *decoder) validateMCP(doc *yaml.Node, m *MCPBackend, path string, keys ...any) {
	k := func(more ...any) []any { return append(append([]any{}, keys...), more...) }
	switch m.StatefulMode {
	case "", "stateful":
	case "stateless":
	default:
		d.errorf(at(doc, k("statefulMode")...), path+".statefulMode", "unknown mode %q (want stateful or stateless)", m.StatefulMode)
	}
	switch m.PrefixMode {
	case "", "conditional", "always", "never":
	default:
		d.errorf(at(doc, k("prefixMode")...), path+".prefixMode", "unknown mode %q (want conditional, always or never)", m.PrefixMode)
	}
	switch m.FailureMode {
	case "", "failClosed", "failOpen":
	default:
		d.errorf(at(doc, k("failureMode")...), path+".failureMode", "unknown mode %q (want failClosed or failOpen)", m.FailureMode)
	}
	if len(m.Targets) == 0 {
		d.errorf(at(doc, k("targets")...), path+".targets", "an mcp backend needs at least one target")
	}
	names := make(map[string]bool)
	for i, t := range m.Targets {
		tpath := fmt.Sprintf("%s.targets[%d]", path, i)
		switch {
		case t.Name == "":
			d.errorf(at(doc, k("targets", i, "name")...), tpath+".name", "a target needs a name")
		case !targetNameRE.MatchString(t.Name):
			d.errorf(at(doc, k("targets", i, "name")...), tpath+".name", "%q: a target name is letters, digits, '.' and '-' (no '_': it separates target and tool names)", t.Name)
		case names[t.Name]:
			d.errorf(at(doc, k("targets", i, "name")...), tpath+".name", "duplicate target name %q", t.Name)
		}
		names[t.Name] = true
		if r, kind := t.remote(); r != nil {
			if t.Stdio != nil || (t.MCP != nil && t.SSE != nil) {
				d.errorf(at(doc, k("targets", i)...), tpath, "a target is one of stdio, mcp or sse")
			}
			u, err := url.Parse(r.URL())
			hostURL, _ := url.Parse(r.Host)
			example := map[string]string{"mcp": "http://tools:8080/mcp", "sse": "http://tools:8080/sse"}[kind]
			switch {
			case r.Host == "" && slices.Contains(d.unsupported, tpath+"."+kind+".backend"):
				// A target that names a backend instead: said already.
			case r.Host == "":
				d.errorf(at(doc, k("targets", i, kind)...), tpath+"."+kind+".host", "an %s target needs host (a URL such as %s)", kind, example)
			case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
				d.errorf(at(doc, k("targets", i, kind, "host")...), tpath+"."+kind+".host", "%q is not an http(s) URL", r.Host)
			case r.Port != 0 && strings.Contains(r.Host, "://") && hostURL != nil && hostURL.Port() != "":
				d.errorf(at(doc, k("targets", i, kind, "port")...), tpath+"."+kind+".port", "host %q already names a port: give it once", r.Host)
			case kind == "mcp" && (u.Path == "" || u.Path == "/"):
				// agentgateway posts to the URL as given; so does tailgate.
				d.warnf(at(doc, k("targets", i, kind, "host")...).Line, tpath+".mcp.host", "%q has no path: messages are posted to /, and most servers serve /mcp", r.Host)
			}
			d.validateRemoteCredentials(doc, k("targets", i, kind), tpath+"."+kind, r)
			if written := r.CAFile; written != "" {
				r.CAFile = resolvePath(d.dir, written)
				if err := checkPEM(r.CAFile); err != nil {
					d.errorf(at(doc, k("targets", i, kind, "caFile")...), tpath+"."+kind+".caFile", "%s: %v", written, err)
				}
			}
			continue
		}
		if t.Stdio == nil {
			d.errorf(at(doc, k("targets", i)...), tpath, "a target needs stdio, mcp or sse")
			continue
		}
		if t.Stdio.Cmd == "" {
			d.errorf(at(doc, k("targets", i, "stdio", "cmd")...), tpath+".stdio.cmd", "a stdio target needs cmd")
		} else {
			t.Stdio.path = resolveCommand(d.dir, t.Stdio.Cmd)
			d.commands = append(d.commands, hostRef{path: tpath + ".stdio.cmd", value: t.Stdio.path, line: at(doc, k("targets", i, "stdio", "cmd")...).Line})
		}
		if t.Stdio.User != "" {
			d.users = append(d.users, hostRef{path: tpath + ".stdio.user", value: t.Stdio.User, line: at(doc, k("targets", i, "stdio", "user")...).Line})
		}
		if t.Stdio.Pool < 0 || t.Stdio.Pool > 1000 {
			d.errorf(at(doc, k("targets", i, "stdio", "pool")...), tpath+".stdio.pool", "pool %d out of range 0-1000", t.Stdio.Pool)
		}
		if t.Stdio.Pool > 0 && t.Stdio.IdentityEnv {
			d.errorf(at(doc, k("targets", i, "stdio", "pool")...), tpath+".stdio.pool", "a pool cannot be used with identityEnv: pooled children start before the caller is known")
		}
		if t.Stdio.Pool > 0 && (len(t.Stdio.CallerEnv) > 0 || t.Stdio.IdentityToken != nil) {
			d.errorf(at(doc, k("targets", i, "stdio", "pool")...), tpath+".stdio.pool", "a pool cannot be used with callerEnv or identityToken: pooled children start before the caller is known")
		}
		d.validateStdioCredentials(doc, k("targets", i, "stdio"), tpath+".stdio", t.Stdio)
	}
}

// protocolOf is a listener's protocol, HTTP by default.
func protocolOf(l Listener) string {
	if l.Protocol == "" {
		return "HTTP"
	}
	return l.Protocol
}

// validateStdioCredentials checks a stdio target's callerEnv and
// identityToken (at keys in doc, path in messages).
func (d *decoder) validateStdioCredentials(doc *yaml.Node, keys []any, path string, t *StdioTarget) {
	k := func(more ...any) []any { return append(append([]any{}, keys...), more...) }
	for _, name := range sortedNames(t.CallerEnv) {
		if _, ok := t.Env[name]; ok {
			d.errorf(at(doc, k("callerEnv", name)...), path+".callerEnv."+name, "%s is also in env: give it once", name)
		}
		d.noteSecretRef(doc, k("callerEnv", name), path+".callerEnv."+name, t.CallerEnv[name])
	}
	if it := t.IdentityToken; it != nil {
		if it.Header != "" {
			d.errorf(at(doc, k("identityToken", "header")...), path+".identityToken.header", "a stdio child gets its token in an environment variable (env), not a header")
		}
		if _, ok := t.CallerEnv[it.envName()]; ok {
			d.errorf(at(doc, k("identityToken")...), path+".identityToken", "%s is also in callerEnv: give it once", it.envName())
		}
	}
}

// validateRemoteCredentials checks a remote target's callerHeaders and
// backendAuth.
func (d *decoder) validateRemoteCredentials(doc *yaml.Node, keys []any, path string, r *RemoteTarget) {
	k := func(more ...any) []any { return append(append([]any{}, keys...), more...) }
	sent := make(map[string]string) // canonical header → where the config sets it
	for name := range r.Headers {
		sent[http.CanonicalHeaderKey(name)] = path + ".headers." + name
	}
	claim := func(header, where string, n *yaml.Node) {
		if prev, ok := sent[http.CanonicalHeaderKey(header)]; ok {
			d.errorf(n, where, "header %s is also set by %s: give it once", header, prev)
			return
		}
		sent[http.CanonicalHeaderKey(header)] = where
	}
	for _, name := range sortedNames(r.CallerHeaders) {
		claim(name, path+".callerHeaders."+name, at(doc, k("callerHeaders", name)...))
		d.noteSecretRef(doc, k("callerHeaders", name), path+".callerHeaders."+name, r.CallerHeaders[name])
	}
	ba := r.BackendAuth
	if ba == nil {
		return
	}
	if ba.Key != nil {
		claim("Authorization", path+".backendAuth.key", at(doc, k("backendAuth", "key")...))
		d.noteSecretRef(doc, k("backendAuth", "key"), path+".backendAuth.key", *ba.Key)
	}
	if it := ba.IdentityToken; it != nil {
		if it.Env != "" {
			d.errorf(at(doc, k("backendAuth", "identityToken", "env")...), path+".backendAuth.identityToken.env", "a remote target gets its token in a header, not an environment variable")
		}
		header, _ := it.header("")
		claim(header, path+".backendAuth.identityToken", at(doc, k("backendAuth", "identityToken")...))
	}
	if o := ba.OAuth; o != nil {
		where := path + ".backendAuth.oauth"
		claim("Authorization", where, at(doc, k("backendAuth", "oauth")...))
		if o.ClientSecret != nil {
			if o.ClientID == "" {
				d.errorf(at(doc, k("backendAuth", "oauth", "clientSecret")...), where+".clientSecret", "a client secret goes with its clientId")
			}
			if o.ClientSecret.PerCaller() {
				d.errorf(at(doc, k("backendAuth", "oauth", "clientSecret")...), where+".clientSecret", "tailgate's client secret is the same for every caller: its template cannot name the caller")
			}
			d.noteSecretRef(doc, k("backendAuth", "oauth", "clientSecret"), where+".clientSecret", *o.ClientSecret)
			if o.Issuer == "" {
				d.warnf(at(doc, k("backendAuth", "oauth", "clientSecret")...).Line, where+".issuer", "no issuer: tailgate sends the client secret to whichever authorization server the target names; set issuer to the one the client is registered at")
			}
		}
		if o.ClientCredentials && o.ClientID == "" {
			d.errorf(at(doc, k("backendAuth", "oauth", "clientCredentials")...), where+".clientCredentials", "the client credentials flow needs a pre-registered clientId (and clientSecret)")
		}
		if u := o.ClientMetadataURL; u != "" {
			if pu, err := url.Parse(u); err != nil || pu.Scheme != "https" || pu.Path == "" || pu.Path == "/" {
				d.errorf(at(doc, k("backendAuth", "oauth", "clientMetadataUrl")...), where+".clientMetadataUrl", "a client ID metadata document is at an https URL with a path, got %q", u)
			}
		}
	}
}

// noteSecretRef records a secret source the config names, for
// Config.CheckSecrets, and checks that a setec one has a server.
func (d *decoder) noteSecretRef(doc *yaml.Node, keys []any, path string, ref SecretRef) {
	if ref.Setec != "" && !d.setec {
		d.errorf(at(doc, keys...), path+".setec", "no setec server: set config.secrets.setec.url")
	}
	d.secretRefs = append(d.secretRefs, namedRef{path: path, line: at(doc, keys...).Line, ref: ref.Ref})
}
