package gateway

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// DNS rebinding and cross-origin protection.
//
// A web page that a tailnet user opens can make the user's browser call the
// gateway with the user's tailnet identity: by resolving a name of its own
// to the gateway's tailnet address (DNS rebinding), or to 127.0.0.1 where
// `tailgate dev`'s bridge listens, or by a cross-origin fetch to the
// gateway's real name. A browser always names the host it thinks it talks
// to in Host, and the page's origin in Origin. So before any routing the
// gateway answers only requests whose Host is one of its own names, and
// whose Origin, when there is one, is the gateway's own or an allowed one.

// NodeNames is a Network that is a tailnet node and knows its names once
// it is running (tsnode.Node and tsnode.Host). Start learns them from it.
type NodeNames interface {
	// DNSName is the node's MagicDNS name, without the trailing dot.
	DNSName() string
	// IPs are the node's tailnet addresses.
	IPs() []netip.Addr
}

// ServiceAddrs is a ServiceNetwork that knows the virtual IPs the tailnet
// gives a Service on this node (tsnode.Node): clients may name the
// Service by them.
type ServiceAddrs interface {
	ServiceAddrs(ctx context.Context, name string) ([]netip.Addr, error)
}

// refreshServiceAddrs learns the Service's virtual IPs from network, if
// the config names a Service and network can tell them. An admin may map
// or change them at any time, so housekeeping calls it again.
func (s *Server) refreshServiceAddrs(network Network) {
	svc := s.state.Load().cfg.Tailscale.Service
	sa, ok := network.(ServiceAddrs)
	if svc == "" || !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := sa.ServiceAddrs(ctx, svc)
	if err != nil {
		s.log.Debug("service addresses", "service", svc, "err", err)
		return
	}
	for i, a := range addrs {
		addrs[i] = a.Unmap()
	}
	s.serviceIPs.Store(&addrs)
}

// isServiceIP reports whether ip is one of the Service's virtual IPs, as
// last learnt.
func (s *Server) isServiceIP(ip netip.Addr) bool {
	if vips := s.serviceIPs.Load(); vips != nil {
		return slices.Contains(*vips, ip)
	}
	return false
}

// refreshServiceAddrsNow learns the Service's virtual IPs again, at most
// once a second (a Host that names none of them asks), and reports
// whether it did.
func (s *Server) refreshServiceAddrsNow() bool {
	now := time.Now().UnixNano()
	last := s.serviceIPsAsked.Load()
	if now-last < int64(time.Second) || !s.serviceIPsAsked.CompareAndSwap(last, now) {
		return false
	}
	s.mu.Lock()
	network := s.network
	s.mu.Unlock()
	if network == nil {
		return false
	}
	s.refreshServiceAddrs(network)
	return true
}

// selfNames are the names a running node answers to.
type selfNames struct {
	full, short string // MagicDNS name and its first label
	domain      string // the tailnet's MagicDNS domain, for the Service's name
	ips         []netip.Addr
}

func newSelfNames(n NodeNames) *selfNames {
	full := strings.TrimSuffix(n.DNSName(), ".")
	short, domain, _ := strings.Cut(full, ".")
	ips := n.IPs()
	for i, ip := range ips {
		ips[i] = ip.Unmap()
	}
	return &selfNames{full: full, short: short, domain: domain, ips: ips}
}

// hostRules are a config's part of the names: listener and route
// hostnames, the Service's name, and the allowed origins.
type hostRules struct {
	names   []string
	service string // the Service's name without "svc:"
	origins []origin
}

func newHostRules(cfg *Config) hostRules {
	var hr hostRules
	for _, b := range cfg.Binds {
		for _, l := range b.Listeners {
			if l.Hostname != "" {
				hr.names = append(hr.names, strings.TrimSuffix(l.Hostname, "."))
			}
			for _, r := range l.Routes {
				for _, h := range r.Hostnames {
					hr.names = append(hr.names, strings.TrimSuffix(h, "."))
				}
			}
		}
	}
	hr.service = strings.TrimPrefix(cfg.Tailscale.Service, "svc:")
	if g := cfg.Global.MCP; g != nil {
		for _, o := range g.AllowedOrigins {
			if p, ok := parseOrigin(o); ok {
				hr.origins = append(hr.origins, p)
			}
		}
	}
	return hr
}

// localhostPeers are the tailnet addresses from which a request may name
// the gateway localhost: the dev bridge's node.
type localhostPeers struct {
	addrs atomic.Pointer[[]string]
}

// AllowLocalhostFrom lets requests that come from the tailnet peers at
// addrs name the gateway "localhost", "127.0.0.1" or "[::1]", any port.
// That is `tailgate dev`'s bridge: it forwards the connections of local
// clients to the gateway byte for byte, so the gateway sees the Host they
// sent (127.0.0.1:3001) and judges it, while a request naming localhost
// from any other peer is refused.
func (s *Server) AllowLocalhostFrom(addrs ...netip.Addr) {
	list := make([]string, 0, len(addrs))
	if old := s.localhost.addrs.Load(); old != nil {
		list = append(list, *old...)
	}
	for _, a := range addrs {
		list = append(list, a.Unmap().String())
	}
	s.localhost.addrs.Store(&list)
}

func (p *localhostPeers) has(addr string) bool {
	list := p.addrs.Load()
	if list == nil {
		return false
	}
	for _, a := range *list {
		if a == addr {
			return true
		}
	}
	return false
}

// refuse answers a request whose Host is not a name of the gateway or
// whose Origin is not allowed: 403, one line, logged.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, reason string) {
	// What a client sent is logged clipped, as names are.
	args := append(sourceAttrs(sourceFrom(r.Context())), "reason", clipTo(reason, maxLoggedError), "host", clip(r.Host), "method", clip(r.Method), "path", clip(r.URL.Path))
	if o := r.Header.Values("Origin"); len(o) > 0 {
		args = append(args, "origin", clip(strings.Join(o, ",")))
	}
	s.log.Warn("request refused", args...)
	http.Error(w, "tailgate: "+reason, http.StatusForbidden)
}

// hostProblem says why r's Host is not one the gateway answers to, or "".
// The port is not compared: a name is what a rebinding page controls.
func (s *Server) hostProblem(st *state, r *http.Request) string {
	host := hostOnly(r.Host)
	if host == "" {
		return "missing Host header"
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		if self := s.self.Load(); self != nil {
			for _, a := range self.ips {
				if a == ip {
					return ""
				}
			}
		}
		if s.isServiceIP(ip) {
			return ""
		}
		if st.cfg.Tailscale.Service != "" && s.refreshServiceAddrsNow() && s.isServiceIP(ip) {
			// A VIP the node accepted a connection on before housekeeping
			// learnt it (the first client after the gateway started).
			return ""
		}
		if ip.IsLoopback() {
			return s.localhostProblem(r)
		}
		// The address the peer dialed: a Service's virtual IP, or the
		// address of a server listening on loopback.
		if local := localIP(r.Context()); local.IsValid() && local == ip {
			return ""
		}
		for _, h := range s.opts.Hosts {
			if a, err := netip.ParseAddr(hostOnly(h)); err == nil && a.Unmap() == ip {
				return ""
			}
		}
		return fmt.Sprintf("Host %q is not an address of this gateway", r.Host)
	}
	if self := s.self.Load(); self != nil {
		if strings.EqualFold(host, self.full) || strings.EqualFold(host, self.short) {
			return ""
		}
		if svc := st.hosts.service; svc != "" {
			if strings.EqualFold(host, svc) || (self.domain != "" && len(host) == len(svc)+1+len(self.domain) &&
				strings.EqualFold(host[:len(svc)], svc) && host[len(svc)] == '.' && strings.EqualFold(host[len(svc)+1:], self.domain)) {
				return ""
			}
		}
	}
	for _, h := range st.hosts.names {
		if strings.EqualFold(host, h) {
			return ""
		}
	}
	for _, h := range s.opts.Hosts {
		if strings.EqualFold(host, hostOnly(h)) {
			return ""
		}
	}
	if strings.EqualFold(host, "localhost") {
		return s.localhostProblem(r)
	}
	return fmt.Sprintf("Host %q is not a name of this gateway", r.Host)
}

// localhostProblem allows a localhost name for a connection from the dev
// bridge's node, or one that arrived on a loopback address (a gateway
// served on loopback is a localhost server).
func (s *Server) localhostProblem(r *http.Request) string {
	if s.localhost.has(sourceFrom(r.Context()).Address) {
		return ""
	}
	if local := localIP(r.Context()); local.IsValid() && local.IsLoopback() {
		return ""
	}
	for _, h := range s.opts.Hosts {
		if strings.EqualFold(hostOnly(r.Host), hostOnly(h)) {
			return ""
		}
	}
	return fmt.Sprintf("Host %q: localhost names are accepted only through tailgate dev's bridge", r.Host)
}

// localIP is the address the request's connection was made to.
func localIP(ctx context.Context) netip.Addr {
	a, _ := ctx.Value(http.LocalAddrContextKey).(net.Addr)
	if a == nil {
		return netip.Addr{}
	}
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// hostOnly is a Host header's host: no port, no IPv6 brackets, no
// trailing dot.
func hostOnly(hostport string) string {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	return strings.TrimSuffix(host, ".")
}

// origin is a web origin, its port made explicit.
type origin struct {
	scheme, host, port string
}

// parseOrigin parses "scheme://host[:port]" (an Origin header, or an
// entry of config.mcp.allowedOrigins) without allocating.
func parseOrigin(s string) (origin, bool) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || rest == "" || strings.ContainsAny(rest, "/?#@ ") {
		return origin{}, false
	}
	var o origin
	switch {
	case strings.EqualFold(scheme, "http"):
		o.scheme, o.port = "http", "80"
	case strings.EqualFold(scheme, "https"):
		o.scheme, o.port = "https", "443"
	default:
		return origin{}, false
	}
	if h, p, err := net.SplitHostPort(rest); err == nil {
		if p == "" || h == "" {
			return origin{}, false
		}
		o.host, o.port = h, p
	} else if strings.HasPrefix(rest, "[") && strings.HasSuffix(rest, "]") {
		o.host = rest[1 : len(rest)-1]
	} else if strings.Contains(rest, ":") {
		return origin{}, false
	} else {
		o.host = rest
	}
	return o, o.host != ""
}

func (o origin) equal(p origin) bool {
	return o.scheme == p.scheme && o.port == p.port && strings.EqualFold(o.host, p.host)
}

// checkOrigin validates an entry of config.mcp.allowedOrigins; it returns
// what is wrong, or "".
func checkOrigin(s string) string {
	if s == "*" {
		return `"*" would let any web page drive the gateway with its visitors' tailnet identity; list the origins`
	}
	if _, ok := parseOrigin(s); !ok {
		if u, err := url.Parse(s); err == nil && u.Host != "" && (u.Path != "" || u.RawQuery != "") {
			return fmt.Sprintf("%q is not an origin: an origin has no path (want %s://%s)", s, u.Scheme, u.Host)
		}
		return fmt.Sprintf("%q is not an origin (want http(s)://host[:port], e.g. https://app.example.com)", s)
	}
	return ""
}

// originProblem says why r's Origin is not allowed, or "". No Origin is
// fine: clients other than browsers send none. The gateway's own origin
// (the Host just checked, with the request's scheme) is not cross-origin.
func originProblem(st *state, r *http.Request, cors *corsPolicy) string {
	values := r.Header["Origin"]
	switch len(values) {
	case 0:
		return ""
	case 1:
	default:
		return "more than one Origin header"
	}
	if values[0] == "" {
		return ""
	}
	o, ok := parseOrigin(values[0])
	if ok {
		self := origin{scheme: "http", port: "80"}
		if r.TLS != nil {
			self.scheme, self.port = "https", "443"
		}
		if h, p, err := net.SplitHostPort(r.Host); err == nil {
			self.host, self.port = h, p
		} else {
			self.host = hostOnly(r.Host)
		}
		if o.equal(self) {
			return ""
		}
		for _, a := range st.hosts.origins {
			if o.equal(a) {
				return ""
			}
		}
		if cors.allows(o) {
			return ""
		}
	}
	return fmt.Sprintf("Origin %q is not allowed (config.mcp.allowedOrigins, or the route's cors.allowOrigins)", values[0])
}
