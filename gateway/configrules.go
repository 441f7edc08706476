package gateway

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/tailgate-dev/tailgate/policy"
)

// This file holds the compiling of the config's CEL rule sets
// (networkAuthorization, authorization, mcpAuthorization), the checks of
// cors policies, and the warnings about rules that read forgeable headers.

// compileRules compiles every rule set with its scope, turning a rule's
// compile error into a ConfigError at the rule's line.
func (d *decoder) compileRules(doc *yaml.Node, cfg *Config, env *policy.Env) {
	if np := cfg.FrontendPolicies.NetworkAuthorization; np != nil {
		cfg.networkAuthz = d.compileRuleSet(env, policy.ScopeNetwork, "frontendPolicies.networkAuthorization.rules", ruleSource{"frontendPolicies.networkAuthorization.rules", &RuleSetConfig{Rules: np.Rules}})
	}
	for i := range cfg.Binds {
		for j := range cfg.Binds[i].Listeners {
			for k := range cfg.Binds[i].Listeners[j].Routes {
				r := &cfg.Binds[i].Listeners[j].Routes[k]
				path := fmt.Sprintf("binds[%d].listeners[%d].routes[%d]", i, j, k)
				var backend *BackendPolicies
				if len(r.Backends) > 0 {
					backend = r.Backends[0].Policies
				}
				r.authz, r.mcpAuthz = d.compilePolicies(env, path, r.Policies, path+".backends[0]", backend)
				d.checkCORS(doc, []any{"binds", i, "listeners", j, "routes", k, "policies", "cors"}, path+".policies.cors", r.Policies)
				d.compileLimits(doc, env, []any{"binds", i, "listeners", j, "routes", k}, path, r.Policies)
			}
		}
	}
	for _, tp := range configTargets(cfg) {
		if r, _ := tp.t.remote(); r != nil && r.BackendAuth != nil && r.BackendAuth.OAuth != nil && r.BackendAuth.OAuth.ConnectAuthorization != nil {
			o := r.BackendAuth.OAuth
			where := tp.path + "." + tp.kind + ".backendAuth.oauth.connectAuthorization.rules"
			o.connectAuthz = d.compileRuleSet(env, policy.ScopeNetwork, where, ruleSource{where, o.ConnectAuthorization})
		}
	}
	if m := cfg.MCP; m != nil {
		m.authz, m.mcpAuthz = d.compilePolicies(env, "mcp", m.Policies, "", nil)
		d.checkCORS(doc, []any{"mcp", "policies", "cors"}, "mcp.policies.cors", m.Policies)
		d.compileLimits(doc, env, []any{"mcp"}, "mcp", m.Policies)
	}
}

// checkCORS checks a cors policy's origins: each an origin or a pattern
// with a wildcard host; one that admits every origin loads with a warning
// that tailgate narrows it (see CORS).
func (d *decoder) checkCORS(doc *yaml.Node, keys []any, path string, rp *RoutePolicies) {
	if rp == nil || rp.CORS == nil {
		return
	}
	for i, s := range rp.CORS.AllowOrigins {
		at := at(doc, append(keys, "allowOrigins", i)...)
		p := fmt.Sprintf("%s.allowOrigins[%d]", path, i)
		switch _, any, problem := corsOrigin(s); {
		case problem != "":
			d.errorf(at, p, "%s", problem)
		case any:
			d.warnf(at.Line, p, "%q admits no origin in tailgate: any page a tailnet user visits could call the route as that user; list the origins of the web clients", s)
		}
	}
}

// compilePolicies compiles a route's authorization, and its
// mcpAuthorization merged with its backend's: a deny in either denies,
// every require must hold, and the allows of both are alternatives.
func (d *decoder) compilePolicies(env *policy.Env, path string, rp *RoutePolicies, backendPath string, bp *BackendPolicies) (authz, mcpAuthz *policy.RuleSet) {
	var mcpSources []ruleSource
	if rp != nil {
		if rp.Authorization != nil {
			authz = d.compileRuleSet(env, policy.ScopeHTTP, path+".policies.authorization.rules", ruleSource{path + ".policies.authorization.rules", rp.Authorization})
		}
		if rp.MCPAuthorization != nil {
			mcpSources = append(mcpSources, ruleSource{path + ".policies.mcpAuthorization.rules", rp.MCPAuthorization})
		}
	}
	if bp != nil && bp.MCPAuthorization != nil {
		mcpSources = append(mcpSources, ruleSource{backendPath + ".policies.mcpAuthorization.rules", bp.MCPAuthorization})
	}
	if len(mcpSources) > 0 {
		mcpAuthz = d.compileRuleSet(env, policy.ScopeMCP, mcpSources[0].path, mcpSources...)
	}
	return authz, mcpAuthz
}

// ruleSource is a rule set as written, at its YAML path.
type ruleSource struct {
	path string
	set  *RuleSetConfig
}

// compileRuleSet compiles the rules of sources as one rule set named path.
func (d *decoder) compileRuleSet(env *policy.Env, scope policy.Scope, path string, sources ...ruleSource) *policy.RuleSet {
	var rules []policy.Rule
	lines := make(map[string]int)
	for _, src := range sources {
		for i, r := range src.set.Rules {
			p := fmt.Sprintf("%s[%d]", src.path, i)
			rules = append(rules, policy.Rule{Kind: r.Kind, Expr: r.Expr, Path: p})
			lines[p] = r.Line
		}
	}
	rs, err := env.Compile(scope, path, rules)
	if err == nil {
		d.warnForgeableHeaders(rs, lines)
	}
	if err != nil {
		for _, e := range unjoin(err) {
			var re *policy.RuleError
			if errors.As(e, &re) {
				d.errs = append(d.errs, &ConfigError{File: d.file, Line: lines[re.Path], Path: re.Path, Msg: re.Err.Error()})
			} else {
				d.errs = append(d.errs, &ConfigError{File: d.file, Path: path, Msg: e.Error()})
			}
		}
		return nil
	}
	return rs
}

// warnForgeableHeaders warns about rules that read the identity headers
// `tailscale serve` sets (Tailscale-User-Login, Tailscale-User-Name,
// Tailscale-App-Capabilities, ...): such a rule is sound behind serve,
// which overwrites them, but tailgate is no proxy behind serve, so here
// any client sets them to anything.
func (d *decoder) warnForgeableHeaders(rs *policy.RuleSet, lines map[string]int) {
	names := rs.HeaderNames()
	paths := make([]string, 0, len(names))
	for p := range names {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		for _, h := range names[p] {
			if !strings.HasPrefix(h, "tailscale-") {
				continue
			}
			use := "source.tailscale"
			switch h {
			case "tailscale-user-login":
				use = "source.tailscale.user.login"
			case "tailscale-user-name":
				use = "source.tailscale.user.displayName"
			case "tailscale-app-capabilities":
				use = "source.tailscale.caps"
			}
			d.warnf(lines[p], p, "reads request header %q, which any client can set to anything here (tailgate is not behind `tailscale serve`); use %s, which comes from WhoIs", h, use)
		}
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// configTarget is a target of the config, at its YAML path, with its
// kind's key (mcp, sse or stdio).
type configTarget struct {
	t          *Target
	path, kind string
}

// configTargets are every target of cfg: its simple mcp block's, then
// its routes', in order.
func configTargets(cfg *Config) []configTarget {
	var out []configTarget
	add := func(prefix string, ts []Target) {
		for i := range ts {
			kind := "stdio"
			switch {
			case ts[i].MCP != nil:
				kind = "mcp"
			case ts[i].SSE != nil:
				kind = "sse"
			}
			out = append(out, configTarget{&ts[i], fmt.Sprintf("%s.targets[%d]", prefix, i), kind})
		}
	}
	if cfg.MCP != nil {
		add("mcp", cfg.MCP.Targets)
	}
	for i := range cfg.Binds {
		for j := range cfg.Binds[i].Listeners {
			for k, r := range cfg.Binds[i].Listeners[j].Routes {
				for b, be := range r.Backends {
					if be.MCP != nil {
						add(fmt.Sprintf("binds[%d].listeners[%d].routes[%d].backends[%d].mcp", i, j, k, b), be.MCP.Targets)
					}
				}
			}
		}
	}
	return out
}
