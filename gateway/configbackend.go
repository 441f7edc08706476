package gateway

import (
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/tailgate-dev/tailgate/gateway/secrets"
	"github.com/tailgate-dev/tailgate/policy"
)

// This file holds the config's backends and their targets: what a
// route names (inline or a top-level named backend), the MCP backend and
// its stdio and remote (mcp, sse) targets, and remote headers' values.

// RouteBackend is where a route sends requests. tailgate serves MCP
// backends.
type RouteBackend struct {
	MCP    *MCPBackend `yaml:"mcp"`
	Weight int         `yaml:"weight"`
	// Backend names one of the config's top-level backends, used as if
	// it were written here.
	Backend string `yaml:"backend"`
	// Status serves the status page instead of MCP, to whom the route's
	// authorization allows (statusroute.go). A tailgate extension.
	Status *StatusBackend `yaml:"status"`

	Host       notSupported `yaml:"host"`
	Service    notSupported `yaml:"service"`
	AI         notSupported `yaml:"ai"`
	AWS        notSupported `yaml:"aws"`
	Dynamic    notSupported `yaml:"dynamic"`
	Internal   notSupported `yaml:"internal"`
	RouteGroup notSupported `yaml:"routeGroup"`
	// Policies of the backend; of those, tailgate implements
	// mcpAuthorization, merged with the route's.
	Policies *BackendPolicies `yaml:"policies"`

	// named is set when MCP is a named backend's (Backend).
	named bool
}

// NamedBackend is a top-level backend: an MCP backend and its policies
// under a name that routes use (agentgateway's `backends`).
type NamedBackend struct {
	Name     string           `yaml:"name"`
	MCP      *MCPBackend      `yaml:"mcp"`
	Policies *BackendPolicies `yaml:"policies"`

	Host    notSupported `yaml:"host"`
	Service notSupported `yaml:"service"`
	AI      notSupported `yaml:"ai"`
	AWS     notSupported `yaml:"aws"`
	Dynamic notSupported `yaml:"dynamic"`
}

// BackendPolicies are the policies of a route's backend.
type BackendPolicies struct {
	MCPAuthorization *RuleSetConfig `yaml:"mcpAuthorization"`

	MCPGuardrails         notSupported `yaml:"mcpGuardrails"`
	BackendTLS            notSupported `yaml:"backendTLS"`
	BackendAuth           notSupported `yaml:"backendAuth"`
	BackendTunnel         notSupported `yaml:"backendTunnel"`
	RequestHeaderModifier notSupported `yaml:"requestHeaderModifier"`
	Transformations       notSupported `yaml:"transformations"`
	HTTP                  notSupported `yaml:"http"`
	TCP                   notSupported `yaml:"tcp"`
	Timeout               notSupported `yaml:"timeout"`
	A2A                   notSupported `yaml:"a2a"`
	AI                    notSupported `yaml:"ai"`
	// More of agentgateway's backend policies.
	ResponseHeaderModifier notSupported `yaml:"responseHeaderModifier"`
	RequestRedirect        notSupported `yaml:"requestRedirect"`
	Health                 notSupported `yaml:"health"`
	ExtAuthz               notSupported `yaml:"extAuthz"`
	Authorization          notSupported `yaml:"authorization"`
	SessionAffinity        notSupported `yaml:"sessionAffinity"`
	InferenceRouting       notSupported `yaml:"inferenceRouting"`
}

// MCPBackend is a virtual MCP server made of targets.
type MCPBackend struct {
	Targets      []Target `yaml:"targets"`
	StatefulMode string   `yaml:"statefulMode"`
	PrefixMode   string   `yaml:"prefixMode"`
	FailureMode  string   `yaml:"failureMode"`

	DNSRebindingProtection notSupported `yaml:"dnsRebindingProtection"`
	Policies               notSupported `yaml:"policies"`
}

// SimpleMCP is agentgateway's simplified top-level mcp block: its targets
// served as one MCP server at /mcp (and /sse) on Port.
type SimpleMCP struct {
	Targets      []Target       `yaml:"targets"`
	StatefulMode string         `yaml:"statefulMode"`
	PrefixMode   string         `yaml:"prefixMode"`
	FailureMode  string         `yaml:"failureMode"`
	Policies     *RoutePolicies `yaml:"policies"`
	// Port defaults to 3000 (agentgateway marks it deprecated; tailgate
	// still reads it).
	Port int `yaml:"port"`

	Gateways               notSupported `yaml:"gateways"`
	DNSRebindingProtection notSupported `yaml:"dnsRebindingProtection"`

	authz    *policy.RuleSet
	mcpAuthz *policy.RuleSet
}

// Target is one MCP server behind a backend.
type Target struct {
	Name  string       `yaml:"name"`
	Stdio *StdioTarget `yaml:"stdio"`
	// MCP is a remote MCP server reached over Streamable HTTP, as
	// agentgateway's targets[].mcp.
	MCP *RemoteTarget `yaml:"mcp"`
	// SSE is a remote MCP server of the legacy HTTP+SSE transport, as
	// agentgateway's targets[].sse (default path /sse).
	SSE *RemoteTarget `yaml:"sse"`

	OpenAPI  notSupported `yaml:"openapi"`
	Policies notSupported `yaml:"policies"`
}

// StdioTarget is a stdio MCP server that tailgate starts, one per session.
type StdioTarget struct {
	// Cmd is the program: a name looked up in PATH ("npx"), an absolute
	// path, or a path relative to the config file's folder
	// ("../bin/server" next to configs/).
	Cmd  string            `yaml:"cmd"`
	Args []string          `yaml:"args"`
	Env  map[string]string `yaml:"env"`
	// ClearEnv starts the child with only Env instead of the gateway's
	// environment plus Env.
	ClearEnv bool `yaml:"clear_env"`
	// IdentityEnv gives the child the caller's tailnet identity in its
	// environment (TAILGATE_USER_LOGIN and others; see README). A tailgate
	// extension.
	IdentityEnv bool `yaml:"identityEnv"`
	// CallerEnv are environment variables whose values are the caller's
	// own: each read, as the caller's child starts, from a secret source
	// templated by the caller's identity ({file: …}, {env: …} or
	// {setec: …}; see README). "${NAME}" in args is replaced by one of
	// them. A tailgate extension.
	CallerEnv map[string]SecretRef `yaml:"callerEnv"`
	// IdentityToken gives the child a token signed by tailgate that names
	// its caller, in an environment variable. A tailgate extension.
	IdentityToken *IdentityToken `yaml:"identityToken"`
	// User is the account the children run as, a name or a numeric uid,
	// with its groups, HOME, USER and LOGNAME; the gateway must run as
	// root. A tailgate extension.
	User string `yaml:"user"`
	// Pool keeps this many children started and initialized ahead of
	// demand (tailgate extension; see README for when it is safe).
	Pool int `yaml:"pool"`
	// InitializeTimeout bounds starting and initializing a child; default
	// 30s. RequestTimeout bounds each request to it; default 10m. Tailgate
	// extensions.
	InitializeTimeout Duration `yaml:"initializeTimeout"`
	RequestTimeout    Duration `yaml:"requestTimeout"`

	// path is Cmd with a relative path resolved against the config file's
	// folder.
	path string
}

// Command is the program to run: Cmd, with a relative path (one that
// holds a "/") resolved against the config file's folder, so that a
// config means the same whatever folder tailgate starts in.
func (t *StdioTarget) Command() string {
	if t.path != "" {
		return t.path
	}
	return t.Cmd
}

// RemoteTarget is an MCP server tailgate reaches over HTTP: agentgateway's
// {host: URL} (or {host, port, path}), plus tailgate's own keys.
type RemoteTarget struct {
	// Host is the server's URL ("http://tools:8080/mcp"), or its host name
	// with Port and Path.
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
	Path string `yaml:"path"`
	// Headers are sent with every request, each a value, or read from a
	// file or an environment variable ({file: …} / {env: …}); never
	// logged. A tailgate extension.
	Headers map[string]HeaderValue `yaml:"headers"`
	// IdentityHeaders sends the caller's WhoIs identity as
	// X-Tailgate-User-Login, X-Tailgate-Node-Name and X-Tailgate-Node-Tags
	// (a client cannot set them). A tailgate extension.
	IdentityHeaders bool `yaml:"identityHeaders"`
	// CallerHeaders are headers whose values are the caller's own, each
	// read from a secret source templated by the caller's identity as the
	// caller's link to the target is made. A tailgate extension.
	CallerHeaders map[string]SecretRef `yaml:"callerHeaders"`
	// BackendAuth is how tailgate authenticates to the target for each
	// caller, after agentgateway's backendAuth policy. A tailgate
	// extension.
	BackendAuth *BackendAuth `yaml:"backendAuth"`
	// Tailnet says whether the host is dialled through tailgate's tailnet
	// node (true) or the host's network (false). Unset, a tailnet address,
	// a MagicDNS short name or a name under .ts.net is on the tailnet; set
	// it for a headscale base_domain. A tailgate extension.
	Tailnet *bool `yaml:"tailnet"`
	// CAFile adds PEM certificates to the system's roots for HTTPS.
	CAFile string `yaml:"caFile"`
	// ConnectTimeout bounds a connection's dial and TLS handshake
	// (default 10s); InitializeTimeout and RequestTimeout as for stdio.
	ConnectTimeout    Duration `yaml:"connectTimeout"`
	InitializeTimeout Duration `yaml:"initializeTimeout"`
	RequestTimeout    Duration `yaml:"requestTimeout"`

	// Backend (agentgateway: a target reached through a named backend).
	Backend notSupported `yaml:"backend"`
}

// remote is the target's remote server, if it is one, and its kind ("mcp"
// or "sse"); an sse target's path defaults to /sse.
func (t *Target) remote() (*RemoteTarget, string) {
	switch {
	case t.MCP != nil:
		return t.MCP, "mcp"
	case t.SSE != nil:
		if t.SSE.Path == "" {
			if u, err := url.Parse(t.SSE.URL()); err == nil && (u.Path == "" || u.Path == "/") {
				t.SSE.Path = "/sse"
			}
		}
		return t.SSE, "sse"
	}
	return nil, ""
}

// URL is the target's endpoint.
func (r *RemoteTarget) URL() string {
	u := r.Host
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	if r.Port == 0 && r.Path == "" {
		return u
	}
	pu, err := url.Parse(u)
	if err != nil {
		return u
	}
	if r.Port != 0 {
		pu.Host = net.JoinHostPort(pu.Hostname(), strconv.Itoa(r.Port))
	}
	if r.Path != "" {
		pu.Path = r.Path
	}
	return pu.String()
}

// BackendAuth is a remote target's backendAuth: what tailgate sends it to
// say who calls. A client's own token is never passed through (the MCP
// authorization specification forbids it: a token meant for tailgate is
// not one for the target).
type BackendAuth struct {
	// Key is sent as "Authorization: Bearer <key>": a secret source,
	// read per caller when its template names the caller.
	Key *SecretRef `yaml:"key"`
	// IdentityToken is a token tailgate signs for each caller and this
	// target.
	IdentityToken *IdentityToken `yaml:"identityToken"`
	// OAuth makes tailgate the OAuth client of the target for each
	// caller: a caller without a connection is given a link to connect
	// its own account, and its calls carry its own token from then on.
	OAuth *OAuthBackendAuth `yaml:"oauth"`

	Passthrough notSupported `yaml:"passthrough"`
	GCP         notSupported `yaml:"gcp"`
	AWS         notSupported `yaml:"aws"`
	Azure       notSupported `yaml:"azure"`
}

// OAuthBackendAuth is how tailgate registers at a target's authorization
// server (found from the target's protected resource metadata): a
// pre-registered client (ClientID, and ClientSecret for a confidential
// one), a client ID metadata document (ClientMetadataURL, an HTTPS URL
// serving it), else dynamic client registration.
type OAuthBackendAuth struct {
	ClientID          string     `yaml:"clientId"`
	ClientSecret      *SecretRef `yaml:"clientSecret"`
	ClientMetadataURL string     `yaml:"clientMetadataUrl"`
	// Issuer is the authorization server the pre-registered client
	// belongs to: its secret goes to that server only, whatever server
	// the target names (set it with clientSecret).
	Issuer string `yaml:"issuer"`
	// Scopes are asked for in place of those the target names.
	Scopes []string `yaml:"scopes"`
	// ClientCredentials makes tailgate call the target as itself, a
	// service (the OAuth client credentials grant with the pre-registered
	// client), instead of as each person: one token for every caller.
	ClientCredentials bool `yaml:"clientCredentials"`
	// ConnectAuthorization decides who may connect an account at the
	// target: rules as in authorization policies that see source (the
	// person's tailnet identity, its grants among its caps), e.g.
	// `"linear" in source.tailscale.caps["example.com/cap/tailgate"][0].connect`.
	// Unset, anyone who may call the target may connect.
	ConnectAuthorization *RuleSetConfig `yaml:"connectAuthorization"`

	connectAuthz *policy.RuleSet
}

// IdentityToken is a token tailgate signs (EdDSA, its keys published at
// /.well-known/jwks.json on its tailnet listeners) that names the caller:
// sub is the login, aud the target, with the caller's node, tags and
// grants as claims.
type IdentityToken struct {
	// Header carries it to a remote target: default Authorization, as
	// "Bearer <token>"; any other header carries the token alone.
	Header string `yaml:"header"`
	// Env is the stdio child's variable; default TAILGATE_IDENTITY_TOKEN.
	Env string `yaml:"env"`
	// Audience is the token's aud: default the target's URL (remote), or
	// "tailgate-target:<name>" (stdio: set it to the service the child
	// calls).
	Audience string `yaml:"audience"`
}

// SecretRef names a secret: {file: path}, {env: NAME} or {setec: name},
// each a template that may name the caller ({login}, {user}, {node},
// {nodeID}). It is read when a caller's child or link starts, never at
// load, and never logged.
type SecretRef struct {
	secrets.Ref
	// line is where the config names it, for --validate-only.
	line int
}

func (s *SecretRef) unmarshalYAML(d *decoder, n *yaml.Node, path string) {
	s.line = n.Line
	if n.Kind != yaml.MappingNode || len(n.Content) != 2 {
		d.errorf(n, path, "expected {file: path}, {env: NAME} or {setec: name}, got %s", kindName(n))
		return
	}
	k, v := resolve(n.Content[0]), resolve(n.Content[1])
	if v.Kind != yaml.ScalarNode || v.Value == "" {
		d.errorf(v, path+"."+k.Value, "expected a template, got %s", kindName(v))
		return
	}
	switch k.Value {
	case "file":
		s.File = resolvePath(d.dir, v.Value)
	case "env":
		s.Env = v.Value
	case "setec":
		s.Setec = v.Value
	default:
		d.errorf(k, path+"."+k.Value, "unknown key (want file, env or setec)")
		return
	}
	if err := s.Validate(); err != nil {
		d.errorf(v, path+"."+k.Value, "%v", err)
	}
}

// HeaderValue is a header's value, given or read at load from a file or
// an environment variable.
type HeaderValue struct {
	Value string
	File  string
	Env   string
}

func (h *HeaderValue) unmarshalYAML(d *decoder, n *yaml.Node, path string) {
	if n.Kind == yaml.ScalarNode {
		h.Value = n.Value
		return
	}
	if n.Kind != yaml.MappingNode || len(n.Content) != 2 {
		d.errorf(n, path, "expected a value, {file: path} or {env: NAME}, got %s", kindName(n))
		return
	}
	k, v := resolve(n.Content[0]), resolve(n.Content[1])
	switch k.Value {
	case "file":
		h.File = resolvePath(d.dir, v.Value)
		b, err := os.ReadFile(h.File)
		if err != nil {
			d.errorf(v, path+".file", "%s: %v", v.Value, unwrapPathError(err))
			return
		}
		h.Value = strings.TrimSpace(string(b))
		d.secrets.Values = append(d.secrets.Values, h.Value)
	case "env":
		h.Env = v.Value
		val, ok := os.LookupEnv(v.Value)
		if !ok {
			d.errorf(v, path+".env", "environment variable %s is not set", v.Value)
			return
		}
		h.Value = val
		d.secrets.Env = append(d.secrets.Env, v.Value)
		d.secrets.Values = append(d.secrets.Values, val)
	default:
		d.errorf(k, path+"."+k.Value, "unknown key (want file or env)")
	}
}

// DefaultMCPPort is the port of the simplified mcp block, as in
// agentgateway.
const DefaultMCPPort = 3000
