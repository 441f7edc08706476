package gateway

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// CORS is agentgateway's cors policy of a route: which web origins a
// browser may let call the route, and what a preflight answers.
//
// tailgate keeps its own Origin check in front of it: a request whose
// Origin is neither the gateway's own, nor in config.mcp.allowedOrigins,
// nor listed here is refused with 403. A wildcard that would admit every
// origin ("*", "https://*") is accepted so that agentgateway files load,
// with a warning, and admits no origin of its own: on a tailnet any page a
// user visits could otherwise call the route as that user.
type CORS struct {
	AllowCredentials bool     `yaml:"allowCredentials"`
	AllowHeaders     []string `yaml:"allowHeaders"`
	AllowMethods     []string `yaml:"allowMethods"`
	// AllowOrigins are origins ("https://app.example.com") or patterns
	// with a wildcard host ("https://*.example.com").
	AllowOrigins  []string `yaml:"allowOrigins"`
	ExposeHeaders []string `yaml:"exposeHeaders"`
	MaxAge        Duration `yaml:"maxAge"`
}

// corsPolicy is a route's CORS, ready to answer.
type corsPolicy struct {
	origins     []origin // hosts may hold '*'
	credentials bool
	// The header values; "*" in the config means: echo the request's.
	methods, headers, expose string
	anyMethod, anyHeader     bool
	maxAge                   string
}

func newCORSPolicy(c *CORS) *corsPolicy {
	if c == nil {
		return nil
	}
	p := &corsPolicy{credentials: c.AllowCredentials}
	for _, s := range c.AllowOrigins {
		if o, any, problem := corsOrigin(s); problem == "" && !any {
			p.origins = append(p.origins, o)
		}
	}
	p.methods, p.anyMethod = corsList(c.AllowMethods)
	p.headers, p.anyHeader = corsList(c.AllowHeaders)
	p.expose, _ = corsList(c.ExposeHeaders)
	if c.MaxAge > 0 {
		p.maxAge = formatSeconds(time.Duration(c.MaxAge))
	}
	return p
}

// corsList is a list as a header value, and whether it held "*".
func corsList(l []string) (string, bool) {
	for _, v := range l {
		if v == "*" {
			return "*", true
		}
	}
	return strings.Join(l, ", "), false
}

func formatSeconds(d time.Duration) string {
	return strconv.FormatInt(int64(d/time.Second), 10)
}

// corsOrigin reads an entry of cors.allowOrigins: an origin, or one whose
// host is a wildcard first label and a domain of two labels or more
// ("https://*.example.com"). any is an entry that would admit every origin
// ("*", "https://*"); problem says what is wrong with one that is neither.
func corsOrigin(s string) (o origin, any bool, problem string) {
	if s == "*" {
		return origin{}, true, ""
	}
	o, ok := parseOrigin(s)
	if !ok || strings.Trim(o.port, "0123456789") != "" {
		return origin{}, false, fmt.Sprintf("%q is not an origin (want http(s)://host[:port], e.g. https://app.example.com or https://*.example.com)", s)
	}
	if o.host == "*" {
		return origin{}, true, ""
	}
	if strings.ContainsAny(o.host, "*?[]\\") {
		suffix, ok := strings.CutPrefix(o.host, "*.")
		if !ok || strings.ContainsAny(suffix, "*?[]\\") || !strings.Contains(suffix, ".") || strings.HasPrefix(suffix, ".") || strings.HasSuffix(suffix, ".") {
			return origin{}, false, fmt.Sprintf("%q: a wildcard is a whole first label before a domain of two labels or more (https://*.example.com)", s)
		}
	}
	return o, false, ""
}

// allows reports whether o is one of the policy's origins.
func (p *corsPolicy) allows(o origin) bool {
	if p == nil {
		return false
	}
	for _, a := range p.origins {
		if a.scheme != o.scheme || a.port != o.port {
			continue
		}
		if suffix, ok := strings.CutPrefix(a.host, "*."); ok {
			if host := strings.ToLower(o.host); strings.HasSuffix(host, "."+strings.ToLower(suffix)) && len(host) > len(suffix)+1 {
				return true
			}
			continue
		}
		if strings.EqualFold(a.host, o.host) {
			return true
		}
	}
	return false
}

// serve adds the CORS headers for an origin the policy allows, and
// answers a preflight (true) itself. The Origin has passed tailgate's
// check already.
func (p *corsPolicy) serve(w http.ResponseWriter, r *http.Request) bool {
	value := r.Header.Get("Origin")
	o, ok := parseOrigin(value)
	if p == nil || !ok || !p.allows(o) {
		return false
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	h.Set("Access-Control-Allow-Origin", value)
	if p.credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if p.expose != "" {
		h.Set("Access-Control-Expose-Headers", p.expose)
	}
	method, preflight := preflightMethod(r)
	if !preflight {
		return false
	}
	// What a preflight is answered depends on what it asks.
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	switch {
	case p.anyMethod:
		h.Set("Access-Control-Allow-Methods", method)
	case p.methods != "":
		h.Set("Access-Control-Allow-Methods", p.methods)
	}
	switch asked := strings.TrimSpace(r.Header.Get("Access-Control-Request-Headers")); {
	case p.anyHeader && asked != "":
		h.Set("Access-Control-Allow-Headers", asked)
	case p.headers != "" && !p.anyHeader:
		h.Set("Access-Control-Allow-Headers", p.headers)
	}
	if p.maxAge != "" {
		h.Set("Access-Control-Max-Age", p.maxAge)
	}
	w.WriteHeader(http.StatusNoContent)
	return true
}

// preflightMethod is the method a CORS preflight asks about, and whether
// r is one.
func preflightMethod(r *http.Request) (string, bool) {
	method := strings.TrimSpace(r.Header.Get("Access-Control-Request-Method"))
	return method, r.Method == http.MethodOptions && method != "" && r.Header.Get("Origin") != ""
}

// corsPolicy is the route's cors policy; nil for no route.
func (rt *route) corsPolicy() *corsPolicy {
	if rt == nil {
		return nil
	}
	return rt.cors
}
