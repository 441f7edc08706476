package mcpstdio

import (
	"context"
	"fmt"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// nameSep joins a target's name and a tool or prompt name, as in
// agentgateway ("everything_echo").
const nameSep = "_"

// exposed is the name the front sees for a child's tool or prompt.
func (s *Session) exposed(c *child, name string) string {
	if !s.prefixed {
		return name
	}
	return c.target.Name + nameSep + name
}

// route finds the child that serves a front name and the child's own name
// for it.
func (s *Session) route(name string) (*child, string, error) {
	if !s.prefixed {
		return s.children[0], name, nil
	}
	for _, c := range s.children {
		if rest, ok := strings.CutPrefix(name, c.target.Name+nameSep); ok {
			return c, rest, nil
		}
	}
	return nil, "", &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("unknown name %q: no target prefix", name)}
}

// Resolve names the target that serves a front tool or prompt name and
// the target's own name for it, for authorization and logs. ok is false
// if no target serves it.
func (s *Session) Resolve(name string) (target, targetName string, ok bool) {
	c, n, err := s.route(name)
	if err != nil {
		return "", "", false
	}
	return c.target.Name, n, true
}

// ResourceTarget names the target that serves a resource URI.
func (s *Session) ResourceTarget(uri string) string {
	return s.children[0].target.Name
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

// ListTools lists the tools of the session's targets, with front names.
func (s *Session) ListTools(ctx context.Context, p *mcp.ListToolsParams) (*mcp.ListToolsResult, error) {
	c := s.children[0]
	res, err := forward(s, ctx, c, p, c.cs.ListTools)
	if err != nil {
		return nil, err
	}
	for i, t := range res.Tools {
		tc := *t
		tc.Name = s.exposed(c, t.Name)
		res.Tools[i] = &tc
	}
	return res, nil
}

// CallTool calls the tool p names on the target that serves it.
func (s *Session) CallTool(ctx context.Context, p *mcp.CallToolParamsRaw) (*mcp.CallToolResult, error) {
	c, name, err := s.route(p.Name)
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

// ListPrompts lists the prompts of the session's targets, with front
// names.
func (s *Session) ListPrompts(ctx context.Context, p *mcp.ListPromptsParams) (*mcp.ListPromptsResult, error) {
	c := s.children[0]
	res, err := forward(s, ctx, c, p, c.cs.ListPrompts)
	if err != nil {
		return nil, err
	}
	for i, pr := range res.Prompts {
		pc := *pr
		pc.Name = s.exposed(c, pr.Name)
		res.Prompts[i] = &pc
	}
	return res, nil
}

// GetPrompt gets the prompt p names from the target that serves it.
func (s *Session) GetPrompt(ctx context.Context, p *mcp.GetPromptParams) (*mcp.GetPromptResult, error) {
	c, name, err := s.route(p.Name)
	if err != nil {
		return nil, err
	}
	pc := *p
	pc.Name = name
	return forward(s, ctx, c, &pc, c.cs.GetPrompt)
}

// ListResources lists the resources of the session's target.
func (s *Session) ListResources(ctx context.Context, p *mcp.ListResourcesParams) (*mcp.ListResourcesResult, error) {
	c := s.children[0]
	return forward(s, ctx, c, p, c.cs.ListResources)
}

// ListResourceTemplates lists the resource templates of the session's
// target.
func (s *Session) ListResourceTemplates(ctx context.Context, p *mcp.ListResourceTemplatesParams) (*mcp.ListResourceTemplatesResult, error) {
	c := s.children[0]
	return forward(s, ctx, c, p, c.cs.ListResourceTemplates)
}

// ReadResource reads a resource of the session's target.
func (s *Session) ReadResource(ctx context.Context, p *mcp.ReadResourceParams) (*mcp.ReadResourceResult, error) {
	c := s.children[0]
	return forward(s, ctx, c, p, c.cs.ReadResource)
}

// Complete asks the target that serves the referenced prompt or resource
// for completions.
func (s *Session) Complete(ctx context.Context, p *mcp.CompleteParams) (*mcp.CompleteResult, error) {
	c := s.children[0]
	pc := *p
	if p.Ref != nil && p.Ref.Type == "ref/prompt" {
		var name string
		var err error
		if c, name, err = s.route(p.Ref.Name); err != nil {
			return nil, err
		}
		ref := *p.Ref
		ref.Name = name
		pc.Ref = &ref
	}
	return forward(s, ctx, c, &pc, c.cs.Complete)
}

// SetLoggingLevel sets the log level of every child.
func (s *Session) SetLoggingLevel(ctx context.Context, p *mcp.SetLoggingLevelParams) error {
	for _, c := range s.children {
		if _, err := forward(s, ctx, c, p, func(ctx context.Context, p *mcp.SetLoggingLevelParams) (struct{}, error) {
			return struct{}{}, c.cs.SetLoggingLevel(ctx, p)
		}); err != nil {
			return err
		}
	}
	return nil
}
