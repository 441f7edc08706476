package mcpstdio

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// nameSep joins a target's name and a tool or prompt name, as in
// agentgateway ("everything_echo").
const nameSep = "_"

// uriSep joins a target's name and a resource URI ("everything+demo://x"),
// as agentgateway does; the result is still a URI, with a longer scheme.
const uriSep = "+"

// exposed is the name the front sees for a child's tool or prompt.
func (s *Session) exposed(c *child, name string) string {
	if !s.prefixed {
		return name
	}
	return c.target.Name + nameSep + name
}

func (s *Session) exposedURI(c *child, uri string) string {
	if !s.prefixed {
		return uri
	}
	return c.target.Name + uriSep + uri
}

// route finds the child that serves a front tool or prompt name and the
// child's own name for it. Unprefixed names with several targets
// (prefixMode never) are looked up by listing.
func (s *Session) route(ctx context.Context, name, kind string) (*child, string, error) {
	if s.prefixed {
		for _, c := range s.children {
			if rest, ok := strings.CutPrefix(name, c.target.Name+nameSep); ok {
				return c, rest, nil
			}
		}
		return nil, "", unknown(kind, name)
	}
	if len(s.children) == 1 {
		return s.children[0], name, nil
	}
	for _, c := range s.children {
		if s.offers(ctx, c, kind, name) {
			return c, name, nil
		}
	}
	return nil, "", unknown(kind, name)
}

func unknown(kind, name string) error {
	return &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("unknown %s %q", kind, name)}
}

// offers reports whether c lists a tool or prompt named name.
func (s *Session) offers(ctx context.Context, c *child, kind, name string) bool {
	if kind == "tool" {
		for t, err := range c.cs.Tools(ctx, nil) {
			if err != nil {
				return false
			}
			if t.Name == name {
				return true
			}
		}
		return false
	}
	for p, err := range c.cs.Prompts(ctx, nil) {
		if err != nil {
			return false
		}
		if p.Name == name {
			return true
		}
	}
	return false
}

// routeURI finds the child that serves a front resource URI.
func (s *Session) routeURI(uri string) (*child, string, error) {
	if !s.prefixed {
		if len(s.children) == 1 {
			return s.children[0], uri, nil
		}
		return nil, "", &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "resources need prefixed names when several targets are multiplexed (prefixMode never)"}
	}
	for _, c := range s.children {
		if rest, ok := strings.CutPrefix(uri, c.target.Name+uriSep); ok {
			return c, rest, nil
		}
	}
	return nil, "", &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("unknown resource %q", uri)}
}

// Resolve names the target that serves a front tool or prompt name and
// the target's own name for it, for authorization and logs. ok is false
// if no target serves it.
func (s *Session) Resolve(ctx context.Context, name, kind string) (target, targetName string, ok bool) {
	c, n, err := s.route(ctx, name, kind)
	if err != nil {
		return "", "", false
	}
	return c.target.Name, n, true
}

// PrefixTarget names the target a front tool or prompt name belongs to,
// without asking any child: "" when names are not prefixed and several
// targets are multiplexed. It is for logs and metrics.
func (s *Session) PrefixTarget(name string) string {
	if !s.prefixed {
		if len(s.children) == 1 {
			return s.children[0].target.Name
		}
		return ""
	}
	for _, c := range s.children {
		if strings.HasPrefix(name, c.target.Name+nameSep) {
			return c.target.Name
		}
	}
	return ""
}

// ResolveURI names the target that serves a front resource URI, and the
// target's own URI for it.
func (s *Session) ResolveURI(uri string) (target, targetURI string, ok bool) {
	c, u, err := s.routeURI(uri)
	if err != nil {
		return "", "", false
	}
	return c.target.Name, u, true
}

// fanOut runs fn for every child that offers a capability, concurrently,
// and collects what they return in target order. With one target the
// client's cursor is passed through; with several, every page is fetched.
func fanOut[T any](s *Session, ctx context.Context, has func(*mcp.ServerCapabilities) bool, fn func(context.Context, *child) ([]T, error)) ([]T, error) {
	results := make([][]T, len(s.children))
	errs := make([]error, len(s.children))
	var wg sync.WaitGroup
	for i, c := range s.children {
		if caps := c.cs.InitializeResult().Capabilities; caps == nil || !has(caps) {
			continue
		}
		wg.Go(func() { results[i], errs[i] = fn(ctx, c) })
	}
	wg.Wait()
	var all []T
	for i, r := range results {
		if errs[i] != nil {
			if s.b.opts.FailureMode == FailOpen && len(s.children) > 1 {
				s.log.Warn("list failed on one target; leaving it out (failOpen)", "target", s.children[i].target.Name, "err", errs[i])
				continue
			}
			return nil, errs[i]
		}
		all = append(all, r...)
	}
	return all, nil
}

// allPages collects every page of a list.
func allPages[T any](ctx context.Context, c *child, list func(context.Context, string) ([]T, string, error)) ([]T, error) {
	var all []T
	cursor := ""
	for range 1000 {
		items, next, err := list(ctx, cursor)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if next == "" {
			return all, nil
		}
		cursor = next
	}
	return all, fmt.Errorf("target %q: more than 1000 pages", c.target.Name)
}

// Ping pings every child.
func (s *Session) Ping(ctx context.Context, p *mcp.PingParams) error {
	for _, c := range s.children {
		if _, err := forward(s, ctx, c, p, func(ctx context.Context, p *mcp.PingParams) (struct{}, error) {
			return struct{}{}, c.cs.Ping(ctx, p)
		}); err != nil {
			return err
		}
	}
	return nil
}

// ListTools lists the tools of every target, with front names.
func (s *Session) ListTools(ctx context.Context, p *mcp.ListToolsParams) (*mcp.ListToolsResult, error) {
	if len(s.children) == 1 && !s.prefixed {
		c := s.children[0]
		return forward(s, ctx, c, p, c.cs.ListTools)
	}
	tools, err := fanOut(s, ctx, func(sc *mcp.ServerCapabilities) bool { return sc.Tools != nil }, func(ctx context.Context, c *child) ([]*mcp.Tool, error) {
		return allPages(ctx, c, func(ctx context.Context, cursor string) ([]*mcp.Tool, string, error) {
			res, err := forward(s, ctx, c, &mcp.ListToolsParams{Cursor: cursor}, c.cs.ListTools)
			if err != nil {
				return nil, "", err
			}
			for i, t := range res.Tools {
				tc := *t
				tc.Name = s.exposed(c, t.Name)
				res.Tools[i] = &tc
			}
			return res.Tools, res.NextCursor, nil
		})
	})
	if err != nil {
		return nil, err
	}
	return &mcp.ListToolsResult{Tools: tools}, nil
}

// CallTool calls the tool p names on the target that serves it.
func (s *Session) CallTool(ctx context.Context, p *mcp.CallToolParamsRaw) (*mcp.CallToolResult, error) {
	c, name, err := s.route(ctx, p.Name, "tool")
	if err != nil {
		return nil, err
	}
	cp := &mcp.CallToolParams{Meta: p.Meta, Name: name}
	// A nil json.RawMessage in an any would be sent as "arguments": null.
	if len(p.Arguments) > 0 {
		cp.Arguments = p.Arguments
	}
	return forward(s, ctx, c, cp, c.cs.CallTool)
}

// ListPrompts lists the prompts of every target, with front names.
func (s *Session) ListPrompts(ctx context.Context, p *mcp.ListPromptsParams) (*mcp.ListPromptsResult, error) {
	if len(s.children) == 1 && !s.prefixed {
		c := s.children[0]
		return forward(s, ctx, c, p, c.cs.ListPrompts)
	}
	prompts, err := fanOut(s, ctx, func(sc *mcp.ServerCapabilities) bool { return sc.Prompts != nil }, func(ctx context.Context, c *child) ([]*mcp.Prompt, error) {
		return allPages(ctx, c, func(ctx context.Context, cursor string) ([]*mcp.Prompt, string, error) {
			res, err := forward(s, ctx, c, &mcp.ListPromptsParams{Cursor: cursor}, c.cs.ListPrompts)
			if err != nil {
				return nil, "", err
			}
			for i, pr := range res.Prompts {
				pc := *pr
				pc.Name = s.exposed(c, pr.Name)
				res.Prompts[i] = &pc
			}
			return res.Prompts, res.NextCursor, nil
		})
	})
	if err != nil {
		return nil, err
	}
	return &mcp.ListPromptsResult{Prompts: prompts}, nil
}

// GetPrompt gets the prompt p names from the target that serves it.
func (s *Session) GetPrompt(ctx context.Context, p *mcp.GetPromptParams) (*mcp.GetPromptResult, error) {
	c, name, err := s.route(ctx, p.Name, "prompt")
	if err != nil {
		return nil, err
	}
	pc := *p
	pc.Name = name
	return forward(s, ctx, c, &pc, c.cs.GetPrompt)
}

// ListResources lists the resources of every target, with front URIs.
func (s *Session) ListResources(ctx context.Context, p *mcp.ListResourcesParams) (*mcp.ListResourcesResult, error) {
	if len(s.children) == 1 && !s.prefixed {
		c := s.children[0]
		return forward(s, ctx, c, p, c.cs.ListResources)
	}
	resources, err := fanOut(s, ctx, func(sc *mcp.ServerCapabilities) bool { return sc.Resources != nil }, func(ctx context.Context, c *child) ([]*mcp.Resource, error) {
		return allPages(ctx, c, func(ctx context.Context, cursor string) ([]*mcp.Resource, string, error) {
			res, err := forward(s, ctx, c, &mcp.ListResourcesParams{Cursor: cursor}, c.cs.ListResources)
			if err != nil {
				return nil, "", err
			}
			for i, r := range res.Resources {
				rc := *r
				rc.URI = s.exposedURI(c, r.URI)
				res.Resources[i] = &rc
			}
			return res.Resources, res.NextCursor, nil
		})
	})
	if err != nil {
		return nil, err
	}
	return &mcp.ListResourcesResult{Resources: resources}, nil
}

// ListResourceTemplates lists the resource templates of every target, with
// front URI templates.
func (s *Session) ListResourceTemplates(ctx context.Context, p *mcp.ListResourceTemplatesParams) (*mcp.ListResourceTemplatesResult, error) {
	if len(s.children) == 1 && !s.prefixed {
		c := s.children[0]
		return forward(s, ctx, c, p, c.cs.ListResourceTemplates)
	}
	templates, err := fanOut(s, ctx, func(sc *mcp.ServerCapabilities) bool { return sc.Resources != nil }, func(ctx context.Context, c *child) ([]*mcp.ResourceTemplate, error) {
		return allPages(ctx, c, func(ctx context.Context, cursor string) ([]*mcp.ResourceTemplate, string, error) {
			res, err := forward(s, ctx, c, &mcp.ListResourceTemplatesParams{Cursor: cursor}, c.cs.ListResourceTemplates)
			if err != nil {
				return nil, "", err
			}
			for i, t := range res.ResourceTemplates {
				tc := *t
				tc.URITemplate = s.exposedURI(c, t.URITemplate)
				res.ResourceTemplates[i] = &tc
			}
			return res.ResourceTemplates, res.NextCursor, nil
		})
	})
	if err != nil {
		return nil, err
	}
	return &mcp.ListResourceTemplatesResult{ResourceTemplates: templates}, nil
}

// ReadResource reads a resource from the target that serves it.
func (s *Session) ReadResource(ctx context.Context, p *mcp.ReadResourceParams) (*mcp.ReadResourceResult, error) {
	c, uri, err := s.routeURI(p.URI)
	if err != nil {
		return nil, err
	}
	pc := *p
	pc.URI = uri
	res, err := forward(s, ctx, c, &pc, c.cs.ReadResource)
	if err != nil {
		return nil, err
	}
	for i, rc := range res.Contents {
		cc := *rc
		cc.URI = s.exposedURI(c, rc.URI)
		res.Contents[i] = &cc
	}
	return res, nil
}

// Subscribe subscribes to a resource at the target that serves it.
func (s *Session) Subscribe(ctx context.Context, p *mcp.SubscribeParams) error {
	c, uri, err := s.routeURI(p.URI)
	if err != nil {
		return err
	}
	_, err = forward(s, ctx, c, &mcp.SubscribeParams{Meta: p.Meta, URI: uri}, func(ctx context.Context, p *mcp.SubscribeParams) (struct{}, error) {
		return struct{}{}, c.cs.Subscribe(ctx, p)
	})
	return err
}

// Unsubscribe ends a subscription at the target that serves the resource.
func (s *Session) Unsubscribe(ctx context.Context, p *mcp.UnsubscribeParams) error {
	c, uri, err := s.routeURI(p.URI)
	if err != nil {
		return err
	}
	_, err = forward(s, ctx, c, &mcp.UnsubscribeParams{Meta: p.Meta, URI: uri}, func(ctx context.Context, p *mcp.UnsubscribeParams) (struct{}, error) {
		return struct{}{}, c.cs.Unsubscribe(ctx, p)
	})
	return err
}

// Complete asks the target that serves the referenced prompt or resource
// for completions.
func (s *Session) Complete(ctx context.Context, p *mcp.CompleteParams) (*mcp.CompleteResult, error) {
	if p.Ref == nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "completion without ref"}
	}
	pc := *p
	ref := *p.Ref
	var c *child
	var err error
	switch ref.Type {
	case "ref/prompt":
		c, ref.Name, err = s.route(ctx, ref.Name, "prompt")
	case "ref/resource":
		c, ref.URI, err = s.routeURI(ref.URI)
	default:
		err = &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("unknown completion ref type %q", ref.Type)}
	}
	if err != nil {
		return nil, err
	}
	pc.Ref = &ref
	return forward(s, ctx, c, &pc, c.cs.Complete)
}

// SetLoggingLevel sets the log level of every child that logs.
func (s *Session) SetLoggingLevel(ctx context.Context, p *mcp.SetLoggingLevelParams) error {
	for _, c := range s.children {
		if caps := c.cs.InitializeResult().Capabilities; caps == nil || caps.Logging == nil {
			continue
		}
		if _, err := forward(s, ctx, c, p, func(ctx context.Context, p *mcp.SetLoggingLevelParams) (struct{}, error) {
			return struct{}{}, c.cs.SetLoggingLevel(ctx, p)
		}); err != nil {
			return err
		}
	}
	return nil
}
