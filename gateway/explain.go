package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay"
	"github.com/tailgate-dev/tailgate/policy"
	"github.com/tailgate-dev/tailgate/tsnode"
)

// Policy explain: for an identity, real or only asked about, what each
// route lets it use and what not, item by item, each with the rule that
// decided. The rules are the gateway's own, judged as a real request is
// (networkAuthorization, the route's authorization, then mcpAuthorization
// on each item as a list filter judges it: authorizer.judge), on what the
// targets list now. The admin address serves it (GET /explain), the
// tailnet listeners serve a caller its own (explainhttp.go), and `tailgate
// explain` prints it (explaintext.go).

// ExplainIdentity is who an explanation is for: a tailnet identity as
// WhoIs gives one, which the rules read as source.tailscale. It may be
// real (Peer) or only asked about (the other fields).
type ExplainIdentity struct {
	// Login is source.tailscale.user.login; "tagged-devices" when only
	// Tags are given, as Tailscale says of a tagged node.
	Login string `json:"login,omitempty"`
	// DisplayName is source.tailscale.user.displayName.
	DisplayName string `json:"display_name,omitempty"`
	// Node is the node's MagicDNS name (source.tailscale.node.name); its
	// first label is the hostname.
	Node string `json:"node,omitempty"`
	// Tags are the node's tags (tag:name).
	Tags []string `json:"tags,omitempty"`
	// Caps are the grants' app capabilities: each capability's values, as
	// the tailnet policy file's "app" gives them.
	Caps map[string][]json.RawMessage `json:"caps,omitempty"`
	// Address is source.address, for rules that read it (cidr): empty,
	// such a rule fails to evaluate, and so denies.
	Address string `json:"address,omitempty"`
	// Peer, if set, is the tailnet address of a real node: the identity is
	// then that node's, as WhoIs gives it to the gateway, and no other
	// field may be set.
	Peer string `json:"peer,omitempty"`
}

// Explanation is what an identity may use on each route of the gateway,
// and why. Every decision names its rule by config path, as the audit
// trail and the log do.
type Explanation struct {
	// Identity is who was explained, as the rules saw it.
	Identity ExplainIdentity `json:"identity"`
	// Real is set when Identity is a node's, from WhoIs (a Peer, or the
	// caller itself); else it is only asked about.
	Real bool `json:"real"`
	// Self is set for a caller's own explanation (the tailnet's "what can
	// I use"): it shows only what the caller may use.
	Self bool `json:"self,omitempty"`
	// Network is frontendPolicies.networkAuthorization's decision on a
	// connection from Identity.
	Network Verdict `json:"network"`
	// Routes are the MCP routes, in config order.
	Routes []RouteExplanation `json:"routes"`
}

// Verdict is one decision and the rule that made it.
type Verdict struct {
	Allow bool `json:"allow"`
	// Rule is the deciding rule's config path: a rule, or a rule set when
	// no single rule decided ("no allow rule matched"); empty when there
	// are no rules.
	Rule string `json:"rule,omitempty"`
	// Reason says how it decided: "allow rule matched", "deny rule
	// matched", "no rules", "rule failed to evaluate: ...".
	Reason string `json:"reason"`
}

// verdictOf is d as an explanation says it.
func verdictOf(d policy.Decision) Verdict {
	return Verdict{Allow: d.Allow, Rule: d.Rule, Reason: d.Reason()}
}

// RouteExplanation is one MCP route: whether Identity gets in, and what
// each of its targets lists, item by item.
type RouteExplanation struct {
	Name     string `json:"name"`
	Port     int    `json:"port"`
	Listener string `json:"listener,omitempty"`
	// Paths are the paths the route matches; none: every path.
	Paths []string `json:"paths,omitempty"`
	// Request is the HTTP request authorization judged: a Streamable HTTP
	// POST to the route's first path, "POST host/path".
	Request string `json:"request"`
	// Authorization is the route's authorization on Request.
	Authorization Verdict           `json:"authorization"`
	Targets       []TargetExplained `json:"targets"`
}

// TargetExplained is one target of a route: each item it lists, with
// the decision a call that uses it would get.
type TargetExplained struct {
	Name string `json:"name"`
	// Error says why the target's items are not (all) here: it was not
	// started (its children need a real caller's secrets), it failed to
	// start, or a list failed.
	Error string `json:"error,omitempty"`
	// Note says where the items come from when not from a child started
	// for the explanation.
	Note              string          `json:"note,omitempty"`
	Tools             []ItemExplained `json:"tools"`
	Prompts           []ItemExplained `json:"prompts"`
	Resources         []ItemExplained `json:"resources"`
	ResourceTemplates []ItemExplained `json:"resource_templates"`
}

// ItemExplained is a tool, prompt, resource or resource template, and the
// decision on using it: networkAuthorization's or the route's
// authorization's if they deny, else mcpAuthorization's.
type ItemExplained struct {
	// Name is what the client sees: a tool's or prompt's name, a
	// resource's URI, a template's URI template, prefixed where the route
	// prefixes them.
	Name string `json:"name"`
	// TargetName is the target's own name for it, when it differs.
	TargetName string `json:"target_name,omitempty"`
	// Title is a resource's or template's name, which rules read as
	// mcp.resource.name.
	Title string `json:"title,omitempty"`
	Verdict
}

// ExplainInputError is an ExplainIdentity that says no one, or says it
// wrongly: the asker's mistake (the admin endpoint answers 400).
type ExplainInputError struct{ Err error }

func (e *ExplainInputError) Error() string { return e.Err.Error() }
func (e *ExplainInputError) Unwrap() error { return e.Err }

// Explain says what who may use on each MCP route, and by which rule:
// networkAuthorization for a connection of theirs, each route's
// authorization for a Streamable HTTP POST to it, and mcpAuthorization
// for every item the route's targets list, judged as a list filter judges
// it. Each target is started (or dialled) once for the explanation and
// stopped; one whose children need a real caller's secrets or identity
// (stdio callerEnv or identityToken; a remote target told who calls) is
// not, and says so. Rules that read mcp.secrets see who's secrets as
// their sources say (a file templated by identity, the environment, a
// setec lookup), without their values. One explanation runs at a time;
// the others wait for it, as long as ctx lets them.
func (s *Server) Explain(ctx context.Context, who ExplainIdentity) (*Explanation, error) {
	src, fromWhoIs, err := s.explainSource(ctx, who)
	if err != nil {
		return nil, err
	}
	release, err := s.explains.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("waiting for another explanation: %w", err)
	}
	defer release()
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, errors.New("the gateway is shutting down")
	}
	begin := time.Now()
	ex := s.explain(ctx, src, false, func(ctx context.Context, f *mcpFront) ([]listing, error) {
		listings, err := f.backend.Listings(ctx, newCaller(src), needsRealCaller)
		if err != nil {
			return nil, err
		}
		out := make([]listing, len(listings))
		for i, l := range listings {
			out[i] = f.listSkipped(ctx, l)
		}
		return out, nil
	})
	ex.Real = fromWhoIs
	who = ex.Identity
	s.log.Info("policy explained", "login", who.Login, "node", who.Node, "tags", who.Tags, "real", fromWhoIs, "routes", len(ex.Routes), "duration", time.Since(begin).Round(time.Millisecond))
	return ex, nil
}

// needsRealCaller says why a target is not started for an explanation:
// its children start with the caller's own secrets or identity token, or
// it is told who calls, and none of that is fetched, minted or told for
// an identity that is only asked about. "" starts it.
func needsRealCaller(t *relay.Target) string {
	switch {
	case t.CallerEnv != nil:
		return fmt.Sprintf("target %q: not started: its children start with the caller's own secrets or identity token (stdio callerEnv, identityToken), which an explanation does not fetch", t.Name)
	case t.Remote != nil && t.Remote.TellsIdentity:
		return fmt.Sprintf("target %q: not dialled: it is told who calls (identityHeaders, callerHeaders, backendAuth), which an explanation does not tell it", t.Name)
	}
	return ""
}

// listSkipped is l, or, for a target Listings did not start, what a
// running child of it lists for another caller of the front (a session's
// or a sessionless caller's): what such a target offers may differ by
// caller, and the note says so. With none running, it says why nothing
// is listed.
func (f *mcpFront) listSkipped(ctx context.Context, l relay.Listing) listing {
	if l.Skipped == "" {
		return listing{Listing: l}
	}
	f.mu.Lock()
	sessions := make([]*frontSession, 0, len(f.sessions)+len(f.callers))
	for _, fs := range f.sessions {
		sessions = append(sessions, fs)
	}
	for _, c := range f.callers {
		sessions = append(sessions, c.fs)
	}
	f.mu.Unlock()
	for _, fs := range sessions {
		if bs := fs.backend(); bs != nil && bs.Alive() {
			if other, ok := bs.Listing(ctx, l.Target); ok && other.Err == nil {
				return listing{Listing: other, note: l.Skipped + "; listed by another caller's running child, and what it offers may differ by caller"}
			}
		}
	}
	l.Err = fmt.Errorf("%s, and no caller's child of it runs to list it", l.Skipped)
	return listing{Listing: l}
}

// explainSource is who as CEL's source, and whether it is a real node's.
func (s *Server) explainSource(ctx context.Context, who ExplainIdentity) (*policy.Source, bool, error) {
	bad := func(format string, args ...any) (*policy.Source, bool, error) {
		return nil, false, &ExplainInputError{fmt.Errorf(format, args...)}
	}
	if who.Peer != "" {
		if who.Login != "" || who.DisplayName != "" || who.Node != "" || len(who.Tags) > 0 || len(who.Caps) > 0 || who.Address != "" {
			return bad("peer %s names a real node, whose identity WhoIs gives: give no login, node, tags, caps or address with it", who.Peer)
		}
		ip, err := netip.ParseAddr(who.Peer)
		if err != nil {
			return bad("peer %q: not an IP address", who.Peer)
		}
		src, err := s.opts.Identify(ctx, netip.AddrPortFrom(ip.Unmap(), 0))
		if err != nil {
			return nil, false, fmt.Errorf("peer %s: %w", ip, err)
		}
		return src, src.Tailscale != nil, nil
	}
	if who.Login == "" && len(who.Tags) == 0 {
		return bad("say who to explain: a login, tags, or a peer's tailnet address")
	}
	for _, tag := range who.Tags {
		if !strings.HasPrefix(tag, "tag:") || len(tag) == len("tag:") {
			return bad("%q is not a tag (want tag:name)", tag)
		}
	}
	if who.Address != "" {
		if _, err := netip.ParseAddr(who.Address); err != nil {
			return bad("address %q: not an IP address", who.Address)
		}
	}
	login := who.Login
	if login == "" {
		login = "tagged-devices"
	}
	node := strings.TrimSuffix(who.Node, ".")
	hostname, _, _ := strings.Cut(node, ".")
	id := &tsnode.Identity{
		NodeName: node, NodeHostname: hostname, Tags: who.Tags,
		UserLogin: login, UserDisplayName: who.DisplayName, Caps: who.Caps,
	}
	return &policy.Source{Address: who.Address, Tailscale: tailscaleSource(id)}, false, nil
}

// explainedIdentity is src as an explanation shows it.
func explainedIdentity(src *policy.Source) ExplainIdentity {
	who := ExplainIdentity{Address: src.Address}
	if id := tailnetIdentity(src); id != nil {
		who.Login, who.DisplayName, who.Node, who.Tags = id.UserLogin, id.UserDisplayName, id.NodeName, id.Tags
		if len(id.Caps) > 0 {
			who.Caps = id.Caps
		}
	}
	return who
}

// lister lists what a route's targets offer, for an explanation.
type lister func(ctx context.Context, f *mcpFront) ([]listing, error)

// listing is what a target lists, and a note on where the list came
// from when it was not a child started for the explanation.
type listing struct {
	relay.Listing
	note string
}

// explainedRoute is a route of the routing, with where it is served.
type explainedRoute struct {
	port     int
	listener *listener
	route    *route
}

// routesOf are st's routes, in config order: ports as bound, listeners,
// routes.
func routesOf(st *state) []explainedRoute {
	var out []explainedRoute
	for _, port := range st.ports {
		for _, l := range st.binds[port].listeners {
			for _, rt := range l.routes {
				if rt.status {
					continue // the status page: no MCP route, no front
				}
				out = append(out, explainedRoute{port: port, listener: l, route: rt})
			}
		}
	}
	return out
}

// explain explains src on every route, listing each route's targets with
// list. For a caller's own explanation (self), a route it may not use is
// neither listed nor named, nor is an item it may not use.
func (s *Server) explain(ctx context.Context, src *policy.Source, self bool, list lister) *Explanation {
	st := s.state.Load()
	ex := &Explanation{
		Identity: explainedIdentity(src),
		Self:     self,
		Network:  verdictOf(st.cfg.networkAuthz.Evaluate(policy.Input{Source: src})),
	}
	routes := routesOf(st)
	ex.Routes = make([]RouteExplanation, len(routes))
	var wg sync.WaitGroup
	for i, er := range routes {
		re := &ex.Routes[i]
		req := s.explainRequest(st, er, re)
		re.Authorization = verdictOf(er.route.authz.Evaluate(policy.Input{Source: src, Request: req}))
		gate := ex.Network
		if gate.Allow {
			gate = re.Authorization
		}
		if self && !gate.Allow {
			continue
		}
		wg.Go(func() { re.Targets = explainTargets(ctx, er.route.front, src, req, gate, list) })
	}
	wg.Wait()
	if self {
		ex.keepUsable()
	}
	return ex
}

// explainRequest fills in re's description of route er, and returns the
// HTTP request its authorization judges: a Streamable HTTP POST to the
// route's first path (/mcp if it names none), with the Host the
// listener or route names, else the gateway's own name. A rule that
// reads any other header sees it absent.
func (s *Server) explainRequest(st *state, er explainedRoute, re *RouteExplanation) *policy.Request {
	re.Name, re.Port, re.Listener = er.route.name, er.port, er.listener.name
	for _, m := range er.route.matches {
		if p := m.describe(); p != "" {
			re.Paths = append(re.Paths, p)
		}
	}
	path := "/mcp"
	if len(re.Paths) > 0 {
		path = re.Paths[0]
	}
	host := er.listener.hostname
	switch {
	case host != "":
	case len(er.route.hostnames) > 0:
		host = er.route.hostnames[0]
	case s.self.Load() != nil:
		host = s.self.Load().full
	case st.cfg.Tailscale.Hostname != "":
		host = st.cfg.Tailscale.Hostname
	default:
		host = "tailgate"
	}
	re.Request = "POST " + host + path
	return requestInput("POST", path, host, map[string][]string{
		"Content-Type": {"application/json"},
		"Accept":       {"application/json, text/event-stream"},
	})
}

// explainTargets lists the route's targets with list and judges each item
// as the front's list filter does (authorizer.judge); gate, when it
// denies (networkAuthorization or the route's authorization), decides
// every item instead.
func explainTargets(ctx context.Context, f *mcpFront, src *policy.Source, req *policy.Request, gate Verdict, list lister) []TargetExplained {
	listings, err := list(ctx, f)
	if err != nil {
		names := f.backend.Targets()
		out := make([]TargetExplained, len(names))
		for i, name := range names {
			out[i] = TargetExplained{Name: name, Error: err.Error()}
		}
		return out
	}
	a := authorizer{rs: f.authz.Load(), src: src, req: req, secrets: f.secrets, ctx: ctx}
	judge := func(items []relay.ListedItem) []ItemExplained {
		out := make([]ItemExplained, 0, len(items))
		for _, it := range items {
			ie := ItemExplained{Name: it.Exposed, Title: it.Title, Verdict: gate}
			if it.Exposed != it.Name {
				ie.TargetName = it.Name
			}
			if gate.Allow {
				ie.Verdict = verdictOf(a.judge(it.Item))
			}
			out = append(out, ie)
		}
		return out
	}
	out := make([]TargetExplained, len(listings))
	for i, l := range listings {
		out[i] = TargetExplained{
			Name: l.Target, Note: l.note, Tools: judge(l.Tools), Prompts: judge(l.Prompts),
			Resources: judge(l.Resources), ResourceTemplates: judge(l.ResourceTemplates),
		}
		if l.Err != nil {
			out[i].Error = l.Err.Error()
		}
	}
	return out
}

// keepUsable keeps of ex what may be used: the routes the caller gets
// into, and of their targets' items those it may use.
func (ex *Explanation) keepUsable() {
	allowed := func(items []ItemExplained) []ItemExplained {
		out := []ItemExplained{}
		for _, it := range items {
			if it.Allow {
				out = append(out, it)
			}
		}
		return out
	}
	routes := []RouteExplanation{}
	for _, re := range ex.Routes {
		if !ex.Network.Allow || !re.Authorization.Allow {
			continue // not let in: not listed, not named
		}
		for i := range re.Targets {
			t := &re.Targets[i]
			t.Tools, t.Prompts = allowed(t.Tools), allowed(t.Prompts)
			t.Resources, t.ResourceTemplates = allowed(t.Resources), allowed(t.ResourceTemplates)
		}
		routes = append(routes, re)
	}
	ex.Routes = routes
}

// explainGate lets one explanation run at a time: each starts a child
// of every target, and a caller on the admin address (or a page that
// refreshes) must not start them by the hundred.
type explainGate struct {
	once sync.Once
	slot chan struct{}
}

// acquire waits for the gate, as long as ctx lets it; release frees it.
func (g *explainGate) acquire(ctx context.Context) (release func(), err error) {
	g.once.Do(func() { g.slot = make(chan struct{}, 1) })
	select {
	case g.slot <- struct{}{}:
		return func() { <-g.slot }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
