package gateway

import (
	"fmt"
	"net/http"
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
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, r *http.Request) {
		if !s.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /healthz/live", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "live")
	})
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
