package gateway

import (
	"gopkg.in/yaml.v3"
)

// This file is the status page on the tailnet (a tailgate extension): a
// route whose backend is `status: {}` serves the page the admin listener
// serves (status.go) to whom the route's policies.authorization allows.
// The page names every caller and what was denied to them, so such a
// route must say who may see it.
//
//	- name: status
//	  matches: [{path: {exact: /status}}]
//	  policies:
//	    authorization:
//	      rules: ['source.tailscale.user.login == "alice@example.com"']
//	  backends:
//	  - status: {}

// StatusBackend is a route backend that serves the status page. It has
// no settings yet.
type StatusBackend struct{}

// validateStatusRoute checks a route whose backend is status: it has
// nothing of an MCP backend (targets, mcpAuthorization, limits), and rules
// that say who may see the page.
func (d *decoder) validateStatusRoute(doc *yaml.Node, r Route, path string, keys ...any) {
	k := func(more ...any) []any { return append(append([]any{}, keys...), more...) }
	b := r.Backends[0]
	switch {
	case b.Backend != "":
		d.errorf(at(doc, k("backends", 0, "backend")...), path+".backends[0].backend", "give status or backend, not both")
	case b.MCP != nil:
		d.errorf(at(doc, k("backends", 0, "mcp")...), path+".backends[0].mcp", "give status or mcp, not both")
	case b.Policies != nil && b.Policies.MCPAuthorization != nil:
		d.errorf(at(doc, k("backends", 0, "policies", "mcpAuthorization")...), path+".backends[0].policies.mcpAuthorization",
			"the status page is no MCP backend: policies.authorization says who may see it")
	}
	rp := r.Policies
	if rp != nil && rp.MCPAuthorization != nil {
		d.errorf(at(doc, k("policies", "mcpAuthorization")...), path+".policies.mcpAuthorization",
			"the status page is no MCP backend: policies.authorization says who may see it")
	}
	if rp != nil && len(rp.LocalRateLimit) > 0 {
		d.errorf(at(doc, k("policies", "localRateLimit")...), path+".policies.localRateLimit",
			"limits count MCP requests, and the status page takes none")
	}
	if rp == nil || rp.Authorization == nil || len(rp.Authorization.Rules) == 0 {
		d.errorf(at(doc, k("backends", 0, "status")...), path+".policies.authorization",
			"a status route needs policies.authorization rules saying who may see the page: it names every caller and what was denied to them")
	}
}

// statusRoute is the route r, named name, that serves the status page.
func (s *Server) statusRoute(name string, r Route) *route {
	return &route{name: name, hostnames: r.Hostnames, matches: r.Matches, authz: r.authz, cors: corsOf(r.Policies), status: true, log: s.log.With("route", name)}
}
