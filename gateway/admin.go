package gateway

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
)

// This file holds what the admin listener serves (metrics and health),
// readiness, and the server's Stats.

// AdminHandler serves /metrics (Prometheus), /healthz/ready (200 once the
// node is running and the config is loaded, 503 before and while shutting
// down) and /healthz/live. Serve it on a loopback address: it is not
// behind the tailnet's policy.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.handler())
	mux.HandleFunc("GET /{$}", s.serveAdminStatus)
	mux.HandleFunc("GET /status", s.serveAdminStatus)
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, r *http.Request) {
		if ok, why := s.readiness(); !ok {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /healthz/live", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "live")
	})
	mux.HandleFunc("GET /explain", s.serveExplain)
	return mux
}

// SetReady marks the server ready (the node is running and the config
// loaded) or not, for /healthz/ready.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Ready reports what SetReady set.
func (s *Server) Ready() bool { return s.ready.Load() }

// Stats is a snapshot of the server's activity.
type Stats struct {
	// DeniedConnections counts connections refused by
	// networkAuthorization or because their peer could not be identified.
	DeniedConnections uint64
	// Sessions is the number of open MCP sessions.
	Sessions int
	// ChildrenStarted counts child processes started.
	ChildrenStarted uint64
	// ChildrenRunning is the number of child processes not yet reaped.
	ChildrenRunning int64
}

// Stats reports the server's activity.
func (s *Server) Stats() Stats {
	var st Stats
	for _, f := range s.allFronts() {
		bs := f.backend.Stats()
		st.Sessions += bs.Sessions
		st.ChildrenStarted += bs.ChildrenStarted
		st.ChildrenRunning += bs.ChildrenRunning
	}
	st.DeniedConnections = s.denied.Load()
	return st
}

// readiness says whether the gateway can serve, and if not why: it is
// running with its config loaded (SetReady), and its targets can start
// (config.readiness.targets: none of them failed its latest start, or,
// with "any", not all of them), naming each one that cannot.
func (s *Server) readiness() (bool, string) {
	if !s.Ready() {
		return false, "not ready: starting or shutting down"
	}
	mode := "all"
	if r := s.state.Load().cfg.Global.Readiness; r != nil && r.Targets != "" {
		mode = r.Targets
	}
	var failed []string
	total := 0
	for _, f := range s.allFronts() {
		if f.retired.Load() {
			continue
		}
		health := f.backend.Health()
		total += len(f.backend.Targets())
		for _, name := range slices.Sorted(maps.Keys(health)) {
			failed = append(failed, fmt.Sprintf("route %s: target %s: %s", f.name, name, clipTo(health[name].Error(), 300)))
		}
	}
	if len(failed) == 0 || mode == "any" && len(failed) < total {
		return true, ""
	}
	return false, "not ready: " + strings.Join(failed, "; ")
}
