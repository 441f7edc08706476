package main

import (
	"cmp"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/tailgate-dev/tailgate/gateway"
)

// startAdmin serves the admin handler on config.adminAddr (default
// loopback), and /metrics and /healthz/ready on statsAddr and
// readinessAddr if set. It returns a func that stops them.
func (a *app) startAdmin(gw *gateway.Server) (func(), error) {
	g := a.cfg.Global
	addrs := map[string]string{}
	admin := cmp.Or(a.admin, g.AdminAddr)
	switch {
	case admin == "" && a.devMode:
		addrs[devAdminAddr] = "admin"
	case admin == "":
		addrs[defaultAdminAddr] = "admin"
	case admin == "off":
	default:
		addrs[admin] = "admin"
	}
	if g.StatsAddr != "" {
		addrs[g.StatsAddr] = "stats"
	}
	if g.ReadinessAddr != "" {
		addrs[g.ReadinessAddr] = "readiness"
	}
	var servers []*http.Server
	stop := func() {
		for _, s := range servers {
			s.Close()
		}
	}
	for addr, kind := range addrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			stop()
			return nil, fmt.Errorf("%s address %s: %w (set --admin or config.adminAddr to another address, or \"off\")", kind, addr, unwrapOpError(err))
		}
		if kind == "admin" {
			a.adminAddrs = append(a.adminAddrs, ln.Addr().String())
		}
		hs := &http.Server{Handler: gw.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, hs)
		go hs.Serve(ln)
		a.log.Info("admin listening", "kind", kind, "addr", ln.Addr().String(), "paths", "/metrics /healthz/ready /healthz/live")
	}
	return stop, nil
}
