package gateway

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/tailgate-dev/tailgate/gateway/idtoken"
	"github.com/tailgate-dev/tailgate/policy"
)

// This file routes a request: by port and Host to a listener, then to
// the first route that matches, with its policies; the gateway's root
// page and /.well-known/ answers for what no route claims.

// serveHTTP routes a request on port to a listener by Host, then to the
// first route that matches, and counts it.
func (s *Server) serveHTTP(port int, w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w}
	routeName := "none"
	defer func() {
		code := sw.code
		if code == 0 {
			code = http.StatusOK
		}
		s.metrics.requests.WithLabelValues(routeName, strconv.Itoa(code)).Inc()
	}()
	st := s.state.Load()
	r, ok := s.reidentify(st, sw, r)
	if !ok {
		return
	}
	// Before routing: a page that rebinds a name of its own to the
	// gateway must not reach any route.
	if reason := s.hostProblem(st, r); reason != "" {
		s.refuse(sw, r, reason)
		return
	}
	b := st.binds[port]
	if b == nil {
		// The port was removed by a reload and is closing.
		http.Error(sw, "no bind on this port", http.StatusNotFound)
		return
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	var l *listener
	for _, cand := range b.listeners {
		if cand.hostname == "" && l == nil {
			l = cand
		}
		if cand.hostname != "" && strings.EqualFold(cand.hostname, host) {
			l = cand
			break
		}
	}
	if l == nil {
		http.Error(sw, "no listener for host "+host, http.StatusNotFound)
		return
	}
	if s.serveConnectPages(sw, r) {
		return
	}
	// A preflight is routed as the request it asks about would be.
	mr := r
	if method, ok := preflightMethod(r); ok {
		asked := *r
		asked.Method = method
		mr = &asked
	}
	var match *route
	for _, rt := range l.routes {
		if rt.matchesRequest(host, mr) {
			match, routeName = rt, rt.name
			break
		}
	}
	// A browser page must not reach a route its origin is not allowed on
	// (the route's cors policy may allow more origins).
	if reason := originProblem(st, r, match.corsPolicy()); reason != "" {
		s.refuse(sw, r, reason)
		return
	}
	if match.corsPolicy().serve(sw, r) {
		return // a preflight, answered
	}
	// OAuth discovery: tailgate admits callers by their tailnet identity
	// and runs no authorization server. A clear 404 makes clients that
	// probe for one (mcp-remote, IDEs) go on without it, instead of
	// reaching an MCP route that would answer something else.
	if strings.HasPrefix(r.URL.Path, "/.well-known/") {
		s.serveWellKnownPath(sw, r)
		return
	}
	// A person (or curl) looking at the gateway's root gets a word on what
	// it is, unless a route claims "/" for itself by a path match.
	if r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead) && !acceptsEventStream(r) && (match == nil || len(match.matches) == 0) {
		serveRoot(sw, r, l)
		return
	}
	if match == nil {
		http.NotFound(sw, r)
		return
	}
	if s.warming.Load() {
		sw.Header().Set("Retry-After", "5")
		http.Error(sw, "tailgate is starting its MCP servers for the first time (npx may be fetching packages); try again in a few seconds", http.StatusServiceUnavailable)
		return
	}
	s.serveRoute(match, sw, r, host)
}

// serveConnectPages serves the connect pages of backendAuth.oauth
// targets (a browser's navigation from an authorization server lands on
// their callback); false if r is for none of them.
func (s *Server) serveConnectPages(w http.ResponseWriter, r *http.Request) bool {
	if !strings.HasPrefix(r.URL.Path, "/oauth/") {
		return false
	}
	h := s.oauthPages()
	if h == nil {
		return false
	}
	h.ServeHTTP(w, r)
	return true
}

// acceptsEventStream reports whether r asks for an event stream (an MCP
// client's GET).
func acceptsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		if strings.Contains(v, "text/event-stream") {
			return true
		}
	}
	return false
}

// serveWellKnownPath answers what tailgate serves under /.well-known/:
// the keys targets verify identity tokens with, and where to find them
// (OpenID-style discovery), public on every listener; a caller's own
// explanation (WhoamiPath); nothing else.
func (s *Server) serveWellKnownPath(w http.ResponseWriter, r *http.Request) {
	if signer := s.signer.Load(); signer != nil && (r.URL.Path == idtoken.JWKSPath || r.URL.Path == idtoken.DiscoveryPath) {
		signer.Handler().ServeHTTP(w, r)
		return
	}
	if r.URL.Path == WhoamiPath {
		s.serveWhoami(w, r)
		return
	}
	serveWellKnown(w, r)
}

// serveWellKnown answers /.well-known/*: nothing is there.
func serveWellKnown(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNotFound)
	if r.Method != http.MethodHead {
		io.WriteString(w, `{"error":"not_found","error_description":"tailgate uses no OAuth: callers are identified by their tailnet identity"}`+"\n")
	}
}

// serveRoot says what the gateway is and where its MCP endpoints are.
func serveRoot(w http.ResponseWriter, r *http.Request, l *listener) {
	paths := []string{}
	catchAll, sse := false, false
	for _, rt := range l.routes {
		if rt.status {
			continue // the status page is no MCP endpoint
		}
		if len(rt.matches) == 0 {
			catchAll, sse = true, true
		}
		for _, m := range rt.matches {
			switch p := m.describe(); {
			case p == "/sse":
				sse = true
			case p != "" && !slices.Contains(paths, p):
				paths = append(paths, p)
			}
		}
	}
	if catchAll && !slices.Contains(paths, "/mcp") {
		paths = append(paths, "/mcp")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "tailgate %s: an MCP gateway on the tailnet.\n", Version)
	if i := slices.Index(paths, "/mcp"); i > 0 {
		paths[0], paths[i] = paths[i], paths[0]
	}
	if len(paths) > 0 {
		fmt.Fprintf(&b, "MCP (Streamable HTTP): http://%s%s\n", r.Host, paths[0])
	}
	if len(paths) > 1 {
		fmt.Fprintf(&b, "Other routes: %s\n", strings.Join(paths[1:], " "))
	}
	if sse {
		fmt.Fprintf(&b, "Legacy SSE: http://%s/sse\n", r.Host)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodHead {
		io.WriteString(w, b.String())
	}
}

// serveRoute runs the route's authorization, then its front — or, for a
// session that a front replaced by a reload still holds, that front.
func (s *Server) serveRoute(rt *route, w http.ResponseWriter, r *http.Request, host string) {
	if rt.authz != nil {
		src := sourceFrom(r.Context())
		d := rt.authz.Evaluate(policy.Input{Source: src, Request: requestInput(r.Method, r.URL.Path, host, r.Header)})
		s.auditHTTP(rt, src, r, d)
		if !d.Allow {
			args := append(sourceAttrs(src), "method", r.Method, "path", r.URL.Path, "rule", d.Rule, "reason", d.Reason())
			rt.log.Warn("request denied", args...)
			http.Error(w, "forbidden by tailgate policy", http.StatusForbidden)
			return
		}
	}
	if rt.status {
		s.serveStatus(w, r)
		return
	}
	if id := sessionIDOf(r); id != "" && !rt.front.has(id) {
		s.mu.Lock()
		draining := append([]*mcpFront(nil), s.draining...)
		s.mu.Unlock()
		for _, f := range draining {
			// Only this route's own earlier front: a session is not
			// reachable through another route's path (and policy).
			if f.routeKey == rt.front.routeKey && f.has(id) {
				f.ServeHTTP(w, r)
				return
			}
		}
	}
	rt.front.ServeHTTP(w, r)
}

func (rt *route) matchesRequest(host string, r *http.Request) bool {
	if len(rt.hostnames) > 0 && !containsFold(rt.hostnames, host) {
		return false
	}
	if len(rt.matches) == 0 {
		return true
	}
	for _, m := range rt.matches {
		if m.matches(r) {
			return true
		}
	}
	return false
}

func (m Match) matches(r *http.Request) bool {
	if m.Method != "" && !strings.EqualFold(m.Method, r.Method) {
		return false
	}
	if p := m.Path; p != nil {
		switch {
		case p.Exact != "":
			return r.URL.Path == p.Exact
		case p.PathPrefix != "":
			return pathHasPrefix(r.URL.Path, p.PathPrefix)
		}
	}
	return true
}

// describe is the path a match names ("/admin"), or "" if none.
func (m Match) describe() string {
	if p := m.Path; p != nil {
		if p.Exact != "" {
			return p.Exact
		}
		return p.PathPrefix
	}
	return ""
}

// pathHasPrefix matches whole path elements, as Gateway API's PathPrefix:
// "/mcp" matches "/mcp" and "/mcp/x", not "/mcpx".
func pathHasPrefix(path, prefix string) bool {
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix == "" {
		return true
	}
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}
