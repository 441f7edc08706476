package gateway

import (
	"cmp"
	"context"
	"fmt"
	"net/http"

	"github.com/tailgate-dev/tailgate/gateway/relay"
	"github.com/tailgate-dev/tailgate/gateway/secrets"
	"github.com/tailgate-dev/tailgate/policy"
)

// This file is the authorize stage of a call (pipeline.go): the front's
// mcpAuthorization, asked of every call that names a tool, prompt or
// resource, and of every item of a list, so that a list shows exactly
// what the caller may use.

// authorizer applies a front's mcpAuthorization to one request.
type authorizer struct {
	rs  *policy.RuleSet
	src *policy.Source
	req *policy.Request
	// bs and ctx look up what policy needs beyond the request (a
	// resource's name).
	bs  *relay.Session
	ctx context.Context
	// secrets says which of a target's per-caller secrets the caller has.
	secrets *targetSecrets
	// connection says whether the caller is connected to a target.
	connection func(target, owner string) (bool, []string)
}

func (f *mcpFront) authorizer(req callRequest) authorizer {
	a := authorizer{rs: f.authz.Load(), src: req.src, secrets: f.secrets, connection: f.connection}
	if a.rs != nil {
		h := req.http
		a.req = requestInput(h.method, h.path, h.host, h.header)
	}
	return a
}

func (a authorizer) evaluate(m *policy.MCP) policy.Decision {
	if a.rs == nil {
		return policy.Decision{Allow: true}
	}
	target := cmp.Or(m.Tool.Target, m.Prompt.Target, m.Resource.Target)
	if a.secrets != nil {
		m.Secrets = a.secrets.of(a.ctx, target, a.src)
	}
	if a.connection != nil && target != "" {
		m.Connection.Connected, m.Connection.Scopes = a.connection(target, connectionOwner(tailnetIdentity(a.src)))
	}
	return a.rs.Evaluate(policy.Input{Source: a.src, Request: a.req, MCP: m})
}

// decide judges a request that names a tool, prompt or resource; the
// others (lists are filtered instead) are allowed.
func (a authorizer) decide(rt relay.Route) policy.Decision {
	if a.rs == nil || rt.Target == "" {
		return policy.Decision{Allow: true} // no rules, or nothing named: the target answers
	}
	switch rt.Kind {
	case "tool":
		return a.evaluate(&policy.MCP{Method: "tools/call", Tool: policy.Tool{Name: rt.TargetName, Target: rt.Target}})
	case "prompt":
		// Completing a prompt's arguments is part of getting it.
		return a.evaluate(&policy.MCP{Method: "prompts/get", Prompt: policy.Prompt{Name: rt.TargetName, Target: rt.Target}})
	case "resource":
		// A read is judged by the resource's name as well as its URI, as
		// lists are; completing a resource template's arguments is judged
		// as reading it, by the template's name and URI template. A name
		// that cannot be learnt denies: a rule on names must not be
		// sidestepped by a target whose list fails.
		var names []string
		if a.bs != nil {
			var err error
			if names, err = a.bs.ResourceNames(a.ctx, rt); err != nil {
				return policy.Decision{Err: fmt.Errorf("the target's resource names: %w", err)}
			}
		}
		if len(names) == 0 {
			names = []string{""}
		}
		var d policy.Decision
		for _, name := range names {
			if d = a.evaluate(&policy.MCP{Method: "resources/read", Resource: policy.Resource{URI: rt.TargetName, Name: name, Target: rt.Target}}); !d.Allow {
				return d
			}
		}
		return d
	}
	return policy.Decision{Allow: true}
}

// keep filters lists with the question a call would be asked, so that a
// list shows exactly what the caller may use.
func (a authorizer) keep(it relay.Item) bool { return a.judge(it).Allow }

// judge is the decision on a listed item: the question a call that uses
// it would be asked. keep filters lists by it; policy explain reports it
// with its rule.
func (a authorizer) judge(it relay.Item) policy.Decision {
	switch it.Kind {
	case "tool":
		return a.evaluate(&policy.MCP{Method: "tools/call", Tool: policy.Tool{Name: it.Name, Target: it.Target}})
	case "prompt":
		return a.evaluate(&policy.MCP{Method: "prompts/get", Prompt: policy.Prompt{Name: it.Name, Target: it.Target}})
	case "resource":
		return a.evaluate(&policy.MCP{Method: "resources/read", Resource: policy.Resource{URI: it.Name, Name: it.Title, Target: it.Target}})
	}
	return policy.Decision{Allow: true}
}

// denied logs a refused call and returns the error the client sees.
func (a authorizer) denied(fs *frontSession, method string, rt relay.Route, d policy.Decision) error {
	args := append([]any{"session", fs.id, "method", method, rt.Kind, clip(rt.Name)}, sourceAttrs(a.src)...)
	args = append(args, "rule", d.Rule, "reason", d.Reason())
	fs.f.log.Warn("mcp call denied", args...)
	return fmt.Errorf("%s %q: not permitted by tailgate policy", rt.Kind, clip(rt.Name))
}

// targetSecrets are the per-caller secrets of a front's targets, by
// target and name, for mcp.secrets.
type targetSecrets struct {
	resolver *secrets.Resolver
	refs     map[string]map[string]secrets.Ref
}

// newTargetSecrets are the secrets of m's targets; nil if none has any.
func newTargetSecrets(cr *credentials, m *MCPBackend) *targetSecrets {
	ts := &targetSecrets{resolver: cr.resolver, refs: make(map[string]map[string]secrets.Ref)}
	add := func(target, name string, ref SecretRef) {
		if ts.refs[target] == nil {
			ts.refs[target] = make(map[string]secrets.Ref)
		}
		ts.refs[target][name] = ref.Ref
	}
	for _, t := range m.Targets {
		if t.Stdio != nil {
			for name, ref := range t.Stdio.CallerEnv {
				add(t.Name, name, ref)
			}
		}
		if r, _ := t.remote(); r != nil {
			for name, ref := range r.CallerHeaders {
				add(t.Name, http.CanonicalHeaderKey(name), ref)
			}
			if r.BackendAuth != nil && r.BackendAuth.Key != nil {
				add(t.Name, "Authorization", *r.BackendAuth.Key)
			}
		}
	}
	if len(ts.refs) == 0 {
		return nil
	}
	return ts
}

// of is mcp.secrets for src's call to target: each secret looked up
// (without its value) when a rule reads it. A secret that cannot be read
// for the caller reads false.
func (ts *targetSecrets) of(ctx context.Context, target string, src *policy.Source) policy.Secrets {
	refs := ts.refs[target]
	if len(refs) == 0 {
		return policy.Secrets{}
	}
	if ctx == nil {
		ctx = context.Background()
	}
	c := newCaller(src)
	return policy.NewSecrets(func(name string) bool {
		ref, ok := refs[name]
		if !ok {
			ref, ok = refs[http.CanonicalHeaderKey(name)]
		}
		if !ok {
			return false
		}
		has, err := ts.resolver.Has(ctx, ref, c.tailnet())
		return err == nil && has
	})
}
