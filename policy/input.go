package policy

// Source is the caller, CEL's `source`.
type Source struct {
	// Address is the peer's IP address, without port.
	Address string `cel:"address"`
	Port    int    `cel:"port"`
	// Tailscale is the peer's tailnet identity; nil when the peer is not a
	// tailnet node (host mode only), so that has(source.tailscale) is false.
	Tailscale *Tailscale `cel:"tailscale"`
}

// Tailscale is `source.tailscale`: who the peer is on the tailnet.
type Tailscale struct {
	Node Node `cel:"node"`
	User User `cel:"user"`
	// Caps are the app capabilities that grants give the peer towards this
	// node, each capability's values JSON-decoded.
	Caps Caps `cel:"caps"`
}

// Node is `source.tailscale.node`.
type Node struct {
	// Name is the MagicDNS name without the trailing dot.
	Name     string   `cel:"name"`
	Hostname string   `cel:"hostname"`
	ID       string   `cel:"id"`
	Tags     []string `cel:"tags"`
	OS       string   `cel:"os"`
}

// User is `source.tailscale.user`.
type User struct {
	Login       string `cel:"login"`
	DisplayName string `cel:"displayName"`
}

// Request is CEL's `request`: the HTTP request.
type Request struct {
	Method string `cel:"method"`
	Path   string `cel:"path"`
	Host   string `cel:"host"`
	// Headers holds each header's values joined with ",", keys in lower
	// case, as agentgateway presents them.
	Headers map[string]string `cel:"headers"`
}

// MCP is CEL's `mcp`: the MCP call being authorized. Fields that do not
// apply to the call are empty rather than absent, so that
// `mcp.tool.name == "echo"` is false for a prompts/get instead of an error.
type MCP struct {
	Method   string   `cel:"method"`
	Tool     Tool     `cel:"tool"`
	Prompt   Prompt   `cel:"prompt"`
	Resource Resource `cel:"resource"`
	// Secrets says which per-caller secrets of the target the caller has.
	Secrets Secrets `cel:"secrets"`
	// Connection is the caller's connection to the target, for a
	// backendAuth.oauth target: `mcp.connection.connected`,
	// `"repo" in mcp.connection.scopes`.
	Connection Connection `cel:"connection"`
}

// Connection is `mcp.connection`: whether the caller has connected its
// own account at the call's target, and the scopes it granted.
type Connection struct {
	Connected bool     `cel:"connected"`
	Scopes    []string `cel:"scopes"`
}

// Tool is `mcp.tool`.
type Tool struct {
	Name   string `cel:"name"`
	Target string `cel:"target"`
}

// Prompt is `mcp.prompt`.
type Prompt struct {
	Name   string `cel:"name"`
	Target string `cel:"target"`
}

// Resource is `mcp.resource`.
type Resource struct {
	URI    string `cel:"uri"`
	Name   string `cel:"name"`
	Target string `cel:"target"`
}

// Input is what a rule set is evaluated against. Fields a scope does not
// declare are ignored.
type Input struct {
	Source  *Source
	Request *Request
	MCP     *MCP
}

func (in Input) activation() map[string]any {
	act := make(map[string]any, 3)
	if in.Source != nil {
		act["source"] = in.Source
	} else {
		act["source"] = &Source{}
	}
	if in.Request != nil {
		act["request"] = in.Request
	} else {
		act["request"] = &Request{}
	}
	if in.MCP != nil {
		act["mcp"] = in.MCP
	} else {
		act["mcp"] = &MCP{}
	}
	return act
}
