package gateway

import (
	"context"
	"errors"
	"reflect"
	"time"
)

// This file holds config reload: swapping in a new config's routing,
// keeping unchanged backends, draining replaced ones and closing them
// once their sessions have ended.

// Reload swaps in cfg: routes and policies change atomically for new
// requests; routes whose backend is unchanged keep their sessions and
// children; sessions of a changed backend carry on until they end; new
// ports are listened on and removed ones closed. A change to the tailscale
// block is logged as needing a restart. Reload never fails half-way: on
// error the running config stays.
func (s *Server) Reload(cfg *Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("server shut down")
	}
	old := s.state.Load()
	st, fronts, err := s.build(cfg, s.fronts)
	if err != nil {
		s.metrics.reloads.WithLabelValues("invalid").Inc()
		return err
	}
	s.logWarnings(cfg)
	if !reflect.DeepEqual(old.cfg.Tailscale, cfg.Tailscale) {
		s.log.Warn("config reload: the tailscale block changed; restart tailgate to apply it (the rest is applied now)")
	}
	if !reflect.DeepEqual(old.cfg.Global.Audit, cfg.Global.Audit) {
		s.log.Warn("config reload: config.audit changed; restart tailgate to apply it (the trail goes on as it was)")
	}
	if !reflect.DeepEqual(old.cfg.Global.Tracing, cfg.Global.Tracing) {
		s.log.Warn("config reload: config.tracing changed; restart tailgate to apply it (traces go on as they were)")
	}
	retired := s.draining[:0:0]
	for key, f := range s.fronts {
		if fronts[key] != f {
			f.stopNewSessions()
			retired = append(retired, f)
		}
	}
	// The route's new rules apply to every running session of its earlier
	// fronts at once; a removed route's sessions end now.
	earlier := append(retired, s.draining...)
	s.draining = nil
	for _, f := range earlier {
		if nf := frontForRoute(fronts, f.routeKey); nf != nil {
			f.setAuthz(nf.authz.Load())
			f.setLimits(nf.limits.Load())
			s.draining = append(s.draining, f)
		} else {
			s.log.Info("config reload: route removed; closing its sessions", "route", f.name)
			go f.close()
		}
	}
	s.fronts = fronts
	s.setState(st)
	// Ports: listen on new ones, close removed ones.
	for port, bs := range s.serving {
		if _, ok := st.binds[port]; !ok {
			delete(s.serving, port)
			bs.ln.Close()
			if bs.svc != nil {
				bs.svc.Close()
			}
			go bs.hs.Shutdown(context.Background())
			s.log.Info("config reload: port closed", "port", port)
		}
	}
	var errs []error
	if s.network != nil {
		for _, port := range st.ports {
			if _, ok := s.serving[port]; ok {
				continue
			}
			s.mu.Unlock()
			err := s.listen(s.network, port)
			s.mu.Lock()
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	s.reapDrainedLocked()
	if err := errors.Join(errs...); err != nil {
		s.metrics.reloads.WithLabelValues("partial").Inc()
		return err
	}
	s.metrics.reloads.WithLabelValues("ok").Inc()
	s.log.Info("config reloaded", "file", cfg.File, "ports", st.ports, "routes", len(fronts))
	return nil
}

// frontForRoute is the front of fronts serving routeKey, if any.
func frontForRoute(fronts map[string]*mcpFront, routeKey string) *mcpFront {
	for _, f := range fronts {
		if f.routeKey == routeKey {
			return f
		}
	}
	return nil
}

// reapDrainedLocked closes the replaced fronts whose sessions have all
// ended: its backend's (a sessionless caller's children too) and its own
// (a legacy SSE stream not yet initialized has no backend session).
func (s *Server) reapDrainedLocked() {
	kept := s.draining[:0]
	for _, f := range s.draining {
		if f.backend.Sessions() == 0 && f.openSessions() == 0 {
			go f.close()
			continue
		}
		kept = append(kept, f)
	}
	s.draining = kept
}

// RecordReloadFailure counts a reload that did not get as far as Reload
// (the file did not parse).
func (s *Server) RecordReloadFailure() { s.metrics.reloads.WithLabelValues("invalid").Inc() }

// housekeep closes fronts that a reload replaced, once their sessions have
// ended.
func (s *Server) housekeep(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				return
			}
			s.reapDrainedLocked()
			network := s.network
			s.mu.Unlock()
			s.refreshServiceAddrs(network)
		}
	}
}
