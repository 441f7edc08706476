package gateway

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
)

// This file is the status page: what the gateway is doing, drawn from the
// server when it is asked for — its targets and their health, the live
// sessions and sessionless callers with their clients, the children, the
// latest denials with their rules, per-tool calls and latency (the status
// book, statusbook.go) and the limits near their bound. The admin
// listener serves it at / and /status; a route whose backend is
// `status: {}` serves it on the tailnet to whom its authorization allows.
// It is one server-rendered page without script or outside assets,
// refreshed by the browser every statusRefresh; everything a client
// chose (client, tool and node names) is escaped (statuspage.go), and
// nothing a client or target holds secret (headers, environments, tokens,
// capabilities) is read.

// statusCSS is the page's inline style sheet.
//
//go:embed status.css
var statusCSS string

// statusCSP lets the page use its own inline style (by its hash) and
// nothing else: no script runs, whatever a client name holds.
var statusCSP = func() string {
	sum := sha256.Sum256([]byte("\n" + statusCSS)) // the <style> element's text
	return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}()

// statusRefresh is how often the browser draws the page again.
const statusRefresh = 5 * time.Second

// statusView is what the page shows, read from the server at one moment.
type statusView struct {
	Version, Node string
	Now           time.Time
	Uptime        time.Duration
	Refresh       int
	Ready         bool
	Readiness     string

	Targets           []statusTarget
	Sessions          []statusSession
	Children          []statusChild
	Denials           []statusDenial
	DenialsTotal      uint64
	DeniedConnections uint64
	Calls             []statusCalls
	Limits            []statusLimit

	// Admin is set on the admin address, which also explains any
	// identity's policy (never on the tailnet: it would tell one caller
	// what another may use); Explain is the one asked for, if any.
	Admin   bool
	Explain *statusExplain
}

// statusExplain is an explanation asked for on the status page (policy
// explain: what the identity may use on each route, and why).
type statusExplain struct {
	// Caps are the identity's grants, as JSON (each capability's list of
	// values), as `tailgate explain --caps` takes them.
	Login, Node, Tags, Caps string
	// Text is the explanation as `tailgate explain` prints it; Err why
	// there is none.
	Text, Err string
}

// statusTarget is a target of a route, with its health.
type statusTarget struct {
	Route, Name string
	// Error is why its latest start failed; "" when it did not.
	Error     string
	Children  int
	PoolReady int
	// Draining is set for a route's front that a reload replaced, which
	// serves its sessions until they end.
	Draining bool
}

// statusSession is a live session, or a sessionless caller's children.
type statusSession struct {
	Route    string
	ID       string // shortened; "" for a sessionless caller
	Kind     string // Streamable HTTP, legacy SSE, sessionless
	Client   statusClient
	Caller   statusCaller
	Age      time.Duration
	Idle     time.Duration
	Inflight int64
	Children int
	Starting bool // its children are starting
}

// statusChild is a running child process.
type statusChild struct {
	PID     int
	Route   string
	Target  string
	Caller  statusCaller
	Session string
	Uptime  time.Duration
}

// statusCalls is a row of the calls table.
type statusCalls struct {
	Route, Method, Target, Tool string
	Calls, Errors, Denied       uint64
	Mean, P95, Max              time.Duration
}

// statusLimit is a limit and how near its bound it is.
type statusLimit struct {
	Name, Key   string
	Used, Bound float64
	// Near is set at 80% of the bound and past it.
	Near bool
}

// serveStatus draws the status page, as a status route shows it on the
// tailnet.
func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) { s.drawStatus(w, r, false) }

// serveAdminStatus draws the status page on the admin address, with its
// policy explain form (?login=&node=&tags=).
func (s *Server) serveAdminStatus(w http.ResponseWriter, r *http.Request) { s.drawStatus(w, r, true) }

// drawStatus draws the status page; admin adds policy explain.
func (s *Server) drawStatus(w http.ResponseWriter, r *http.Request, admin bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	v := s.statusView()
	if v.Admin = admin; admin {
		v.Explain = s.statusExplain(r)
		if v.Explain != nil {
			v.Refresh = 0 // an explanation starts targets: not every few seconds
		}
	}
	var buf bytes.Buffer
	writeStatusPage(&buf, v)
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", statusCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	if r.Method == http.MethodGet {
		w.Write(buf.Bytes())
	}
}

// statusView reads what the page shows from the server.
func (s *Server) statusView() *statusView {
	v := &statusView{Version: Version, Now: time.Now(), Refresh: int(statusRefresh / time.Second), DeniedConnections: s.denied.Load()}
	if self := s.self.Load(); self != nil {
		v.Node = self.full
	}
	v.Uptime = v.Now.Sub(s.status.started)
	v.Ready, v.Readiness = s.readiness()
	fronts := s.allFronts()
	slices.SortFunc(fronts, func(a, b *mcpFront) int {
		return cmp.Or(cmp.Compare(a.name, b.name), boolOrder(a.retired.Load(), b.retired.Load()))
	})
	children := make(map[[2]string]int) // by route and target
	for _, f := range fronts {
		ss, cs := f.statusSessions(v.Now)
		v.Sessions = append(v.Sessions, ss...)
		v.Children = append(v.Children, cs...)
		for _, c := range cs {
			children[[2]string{c.Route, c.Target}]++
		}
	}
	for _, f := range fronts {
		health := f.backend.Health()
		pool := f.backend.Stats().PoolReady
		for _, name := range f.backend.Targets() {
			t := statusTarget{Route: f.name, Name: name, Children: children[[2]string{f.name, name}], PoolReady: pool[name], Draining: f.retired.Load()}
			if err := health[name]; err != nil {
				t.Error = clipTo(err.Error(), maxLoggedError)
			}
			v.Targets = append(v.Targets, t)
		}
	}
	slices.SortFunc(v.Sessions, func(a, b statusSession) int {
		return cmp.Or(cmp.Compare(a.Caller.Who(), b.Caller.Who()), cmp.Compare(a.Caller.Node, b.Caller.Node), cmp.Compare(a.Route, b.Route), cmp.Compare(b.Age, a.Age))
	})
	slices.SortFunc(v.Children, func(a, b statusChild) int { return cmp.Compare(a.PID, b.PID) })
	v.Denials, v.DenialsTotal = s.status.denials.recent()
	rules := ruleTexts(s.Config())
	for i := range v.Denials {
		v.Denials[i].Expr = rules[v.Denials[i].Rule]
	}
	v.Calls = s.status.callRows()
	v.Limits = s.statusLimits()
	return v
}

// statusLimits are the limits to show, nearest their bound first: each
// key near its bound (LimitsStatus), a row for its bucket (requests used
// of maxTokens) and one for its cap (requests in flight of concurrency).
func (s *Server) statusLimits() []statusLimit {
	var out []statusLimit
	for _, l := range s.LimitsStatus() {
		name, key := l.Route+": "+l.Limit, l.Key
		if key == "" {
			key = "(the whole route)"
		}
		if l.MaxTokens > 0 {
			used := float64(l.MaxTokens - l.Tokens)
			out = append(out, statusLimit{Name: name + " (requests)", Key: key, Used: used, Bound: float64(l.MaxTokens), Near: used*5 >= float64(l.MaxTokens)*4})
		}
		if l.Concurrency > 0 {
			used := float64(l.InFlight)
			out = append(out, statusLimit{Name: name + " (in flight)", Key: key, Used: used, Bound: float64(l.Concurrency), Near: used*5 >= float64(l.Concurrency)*4})
		}
	}
	slices.SortStableFunc(out, func(a, b statusLimit) int { return cmp.Compare(b.Used/b.Bound, a.Used/a.Bound) })
	return out
}

func boolOrder(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// statusSessions are the front's sessions and sessionless callers, and
// their children, as of now.
func (f *mcpFront) statusSessions(now time.Time) ([]statusSession, []statusChild) {
	f.mu.Lock()
	all := make([]*frontSession, 0, len(f.sessions)+len(f.callers))
	for _, fs := range f.sessions {
		all = append(all, fs)
	}
	for _, c := range f.callers {
		all = append(all, c.fs)
	}
	f.mu.Unlock()
	var sessions []statusSession
	var children []statusChild
	for _, fs := range all {
		ss := statusSession{Route: f.name, Caller: callerOf(fs.owner, netip.AddrPort{}), Inflight: fs.inflight.Load(),
			Age: now.Sub(fs.opened), Idle: now.Sub(time.Unix(0, fs.lastUsed.Load()))}
		switch {
		case fs.sessionless:
			ss.Kind = "sessionless"
		case fs.sse:
			ss.Kind, ss.ID = "legacy SSE", shortID(fs.id)
		default:
			ss.Kind, ss.ID = "Streamable HTTP", shortID(fs.id)
		}
		if c := fs.client.Load(); c != nil {
			ss.Client = *c
		}
		bs := fs.backend()
		if bs == nil {
			ss.Starting = true
			sessions = append(sessions, ss)
			continue
		}
		for _, ci := range bs.Children() {
			ss.Children++
			if ci.PID == 0 {
				continue // a remote target's link
			}
			children = append(children, statusChild{PID: ci.PID, Route: f.name, Target: ci.Target, Caller: ss.Caller,
				Session: cmp.Or(ss.ID, "sessionless"), Uptime: now.Sub(ci.Started)})
		}
		sessions = append(sessions, ss)
	}
	return sessions, children
}

// shortID is enough of a session id to tell sessions apart on the page.
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8] + "…"
	}
	return id
}

// callRows are the calls table, busiest first within each route.
func (b *statusBook) callRows() []statusCalls {
	var rows []statusCalls
	b.calls.Range(func(k, v any) bool {
		key, c := k.(callKey), v.(*callCounter)
		row := statusCalls{Route: key.route, Method: key.method, Target: key.target, Tool: key.tool,
			Calls: c.calls.Load(), Errors: c.errors.Load(), Denied: c.denied.Load(), Max: time.Duration(c.maxNanos.Load()), P95: c.quantile(0.95)}
		if row.Calls > 0 {
			row.Mean = time.Duration(c.nanos.Load() / int64(row.Calls))
		}
		rows = append(rows, row)
		return true
	})
	slices.SortFunc(rows, func(a, b statusCalls) int {
		return cmp.Or(cmp.Compare(a.Route, b.Route), cmp.Compare(b.Calls, a.Calls), cmp.Compare(a.Method, b.Method), cmp.Compare(a.Tool, b.Tool), cmp.Compare(a.Target, b.Target))
	})
	return rows
}

// ruleTexts are the config's rules by path (the path a decision names),
// each as "kind: expression".
func ruleTexts(cfg *Config) map[string]string {
	out := make(map[string]string)
	add := func(path string, rs *RuleSetConfig) {
		if rs == nil {
			return
		}
		for i, r := range rs.Rules {
			out[fmt.Sprintf("%s.rules[%d]", path, i)] = string(r.Kind) + ": " + r.Expr
		}
	}
	if np := cfg.FrontendPolicies.NetworkAuthorization; np != nil {
		add("frontendPolicies.networkAuthorization", &RuleSetConfig{Rules: np.Rules})
	}
	routePolicies := func(path string, rp *RoutePolicies) {
		if rp != nil {
			add(path+".policies.authorization", rp.Authorization)
			add(path+".policies.mcpAuthorization", rp.MCPAuthorization)
		}
	}
	for i, b := range cfg.Binds {
		for j, l := range b.Listeners {
			for k, r := range l.Routes {
				path := fmt.Sprintf("binds[%d].listeners[%d].routes[%d]", i, j, k)
				routePolicies(path, r.Policies)
				if len(r.Backends) > 0 && r.Backends[0].Policies != nil {
					add(path+".backends[0].policies.mcpAuthorization", r.Backends[0].Policies.MCPAuthorization)
				}
			}
		}
	}
	if m := cfg.MCP; m != nil {
		routePolicies("mcp", m.Policies)
	}
	return out
}

// ago is a duration as the page writes it: "42s", "3m12s", "2h05m",
// "3d4h".
func ago(d time.Duration) string {
	switch d = max(d, 0); {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// millis is a latency in milliseconds, to two significant places below 10.
func millis(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	if ms < 10 {
		return fmt.Sprintf("%.2f ms", ms)
	}
	return fmt.Sprintf("%.0f ms", ms)
}

// statusExplain is the explanation the page's form asks for, nil when it
// asks for none.
func (s *Server) statusExplain(r *http.Request) *statusExplain {
	q := r.URL.Query()
	e := &statusExplain{Login: q.Get("login"), Node: q.Get("node"), Tags: q.Get("tags"), Caps: q.Get("caps")}
	if e.Login == "" && e.Node == "" && e.Tags == "" && e.Caps == "" {
		return nil
	}
	asked := url.Values{}
	for k, v := range map[string]string{"login": e.Login, "node": e.Node, "tags": e.Tags, "caps": e.Caps} {
		if v != "" {
			asked.Set(k, v)
		}
	}
	who, err := ParseExplainQuery(asked)
	if err != nil {
		e.Err = err.Error()
		return e
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	ex, err := s.Explain(ctx, who)
	if err != nil {
		e.Err = err.Error()
		return e
	}
	var b strings.Builder
	if err := ex.WriteText(&b); err != nil {
		e.Err = err.Error()
		return e
	}
	e.Text = b.String()
	return e
}
