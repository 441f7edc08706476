package gateway

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tailgate-dev/tailgate/mcpstdio"
	"github.com/tailgate-dev/tailgate/policy"
)

// Config is a tailgate config file: agentgateway's standalone format
// (binds, listeners, routes, MCP backends with stdio targets, CEL rule sets,
// or the simplified top-level mcp block) plus tailgate's own tailscale
// block. Load or Parse it; the zero Config is not useful.
type Config struct {
	Tailscale        TailscaleConfig  `yaml:"tailscale"`
	Global           GlobalConfig     `yaml:"config"`
	FrontendPolicies FrontendPolicies `yaml:"frontendPolicies"`
	Binds            []Bind           `yaml:"binds"`
	MCP              *SimpleMCP       `yaml:"mcp"`

	Gateways  notSupported `yaml:"gateways"`
	Routes    notSupported `yaml:"routes"`
	TCPRoutes notSupported `yaml:"tcpRoutes"`
	LLM       notSupported `yaml:"llm"`
	UI        notSupported `yaml:"ui"`
	Policies  notSupported `yaml:"policies"`
	// Backends are named backends, which routes name
	// (`backends: [{backend: name}]`), as agentgateway's.
	Backends    []NamedBackend `yaml:"backends"`
	RouteGroups notSupported   `yaml:"routeGroups"`
	Services    notSupported   `yaml:"services"`
	Workloads   notSupported   `yaml:"workloads"`

	// File is the path the config was read from, for messages.
	File string `yaml:"-"`
	// Warnings are what loads but is likely a mistake, each located as a
	// ConfigError is; the server logs them when it starts or reloads.
	Warnings []*ConfigError `yaml:"-"`

	networkAuthz *policy.RuleSet
	// commands are the stdio targets' programs, users their accounts, and
	// authKeyLine the line of tailscale.authKeyFile, for HostWarnings.
	commands    []hostRef
	users       []hostRef
	authKeyLine int
	// secrets are what the config names as secret, kept from every stdio
	// child's environment.
	secrets childSecrets
}

// childSecrets are what the config names as secret, which no stdio child
// may inherit: a remote target's header given as {env: X} (the variable X
// and its value) or {file: path} (its value). A literal header value is
// not taken as secret: "application/json" would remove every variable
// that holds it.
type childSecrets struct {
	// Env are variables of the gateway's environment.
	Env []string
	// Values are values; any variable holding one is removed.
	Values []string
}

// StdioTargets reports how many stdio targets the config has, and how
// many of them set stdio.user.
func (c *Config) StdioTargets() (all, withUser int) { return len(c.commands), len(c.users) }

// hostRef is what a config names that only the host can check (a stdio
// target's program or user), and where.
type hostRef struct {
	path, value string
	line        int
}

// deniedReply reports whether a connection that networkAuthorization
// denies is answered 403 (the default) rather than just closed.
func (c *Config) deniedReply() bool {
	np := c.FrontendPolicies.NetworkAuthorization
	return np == nil || np.Denied != DeniedClose
}

// TailscaleConfig is the tailscale block: how tailgate joins the tailnet.
type TailscaleConfig struct {
	// Hostname is the node's name on the tailnet; default "tailgate".
	Hostname string `yaml:"hostname"`
	// ControlURL is the coordination server; empty means Tailscale's. Set
	// it to a headscale server_url.
	ControlURL string `yaml:"controlURL"`
	// AuthKeyFile holds the auth key; else TS_AUTHKEY or TS_AUTH_KEY; else
	// the node logs a login URL and waits.
	AuthKeyFile string `yaml:"authKeyFile"`
	// Ephemeral nodes are removed from the tailnet when they go offline;
	// tailgate logs them out on shutdown.
	Ephemeral bool `yaml:"ephemeral"`
	// StateDir holds the node's keys; reusing it keeps the node's identity.
	// Default: $XDG_CONFIG_HOME/tailgate/<hostname>. Created 0700.
	StateDir string `yaml:"stateDir"`
	// StateStore is "file" (default) or "mem" (nothing on disk; ephemeral
	// nodes only).
	StateStore string `yaml:"stateStore"`
	// AdvertiseTags are requested for the node; the tailnet policy decides.
	AdvertiseTags []string `yaml:"advertiseTags"`
	// Mode is "tsnet" (default): tailgate is its own node; or "host": the
	// host's tailscaled is, through its LocalAPI socket.
	Mode string `yaml:"mode"`
	// Socket is the host's tailscaled LocalAPI socket (mode host); default
	// the platform's.
	Socket string `yaml:"socket"`
	// StartTimeout bounds joining the tailnet; default 60s.
	StartTimeout Duration `yaml:"startTimeout"`
	// LogUpload sends tailscale's client logs to Tailscale's log service.
	// Off unless set: tailgate sets TS_NO_LOGS_NO_SUPPORT otherwise.
	LogUpload bool `yaml:"logUpload"`

	// Service serves every bind also as a Tailscale Service ("svc:mcp"),
	// so that several replicas stand behind one tailnet name. The node
	// must be tagged and the Service approved.
	Service string `yaml:"service"`
}

// GlobalConfig is agentgateway's `config` block. None of its settings
// apply to tailgate yet; an empty block is accepted so that files written
// for agentgateway load.
type GlobalConfig struct {
	// AdminAddr serves /metrics and /healthz/*; default 127.0.0.1:15000,
	// "off" for none. Keep it on loopback: it is not behind the tailnet.
	AdminAddr string `yaml:"adminAddr"`
	// StatsAddr and ReadinessAddr also serve /metrics and /healthz/ready
	// on addresses of their own, as in agentgateway.
	StatsAddr                      string       `yaml:"statsAddr"`
	ReadinessAddr                  string       `yaml:"readinessAddr"`
	Session                        notSupported `yaml:"session"`
	MCP                            *GlobalMCP   `yaml:"mcp"`
	Tracing                        notSupported `yaml:"tracing"`
	Logging                        notSupported `yaml:"logging"`
	Metrics                        notSupported `yaml:"metrics"`
	CustomFunctions                notSupported `yaml:"customFunctions"`
	WorkerThreads                  notSupported `yaml:"workerThreads"`
	DNS                            notSupported `yaml:"dns"`
	Backend                        notSupported `yaml:"backend"`
	SPIFFE                         notSupported `yaml:"spiffe"`
	XDSAddress                     notSupported `yaml:"xdsAddress"`
	HBONE                          notSupported `yaml:"hbone"`
	EnableIPv6                     notSupported `yaml:"enableIpv6"`
	Database                       notSupported `yaml:"database"`
	Storage                        notSupported `yaml:"storage"`
	SensitiveHeaders               notSupported `yaml:"sensitiveHeaders"`
	ConnectionTerminationDeadline  notSupported `yaml:"connectionTerminationDeadline"`
	ConnectionMinTerminationDeadln notSupported `yaml:"connectionMinTerminationDeadline"`
	ModelCatalog                   notSupported `yaml:"modelCatalog"`
}

// GlobalMCP is config.mcp: settings of every MCP backend.
type GlobalMCP struct {
	// SessionTTL closes sessions idle this long; default 30m, as
	// agentgateway.
	SessionTTL Duration `yaml:"sessionTtl"`
	// MaxSessions caps the open MCP sessions of the gateway, all routes
	// together; past it, new sessions get 503 with Retry-After. 0
	// (default) is 1024. A tailgate extension.
	MaxSessions int `yaml:"maxSessions"`
	// MaxSessionsPerPeer caps the open sessions of one peer (a tailnet
	// node, or an address), all routes together, so that one peer cannot
	// take every place; 0 (default) is 64. A tailgate extension.
	MaxSessionsPerPeer int `yaml:"maxSessionsPerPeer"`
	// MaxMessageBytes bounds each message a target sends (a stdio child's
	// line, a remote server's answer or event): past it, the call gets a
	// JSON-RPC error naming the target and the limit (a child writing one
	// is stopped). 0 (default) is 64 MiB. A tailgate extension.
	MaxMessageBytes int `yaml:"maxMessageBytes"`
	// AllowedOrigins are the web origins ("https://app.example.com") whose
	// pages may call the gateway from a browser. A request with any other
	// Origin header, other than the gateway's own, gets 403; requests
	// without one (every non-browser client) are not affected. None by
	// default. A tailgate extension; it does not touch the backends, so
	// changing it keeps their sessions.
	AllowedOrigins []string `yaml:"allowedOrigins" json:"-"`
}

// FrontendPolicies apply to all traffic.
type FrontendPolicies struct {
	// NetworkAuthorization runs once per accepted connection, before any
	// HTTP is read; a denied connection is answered 403 and closed (or
	// just closed: denied: close).
	NetworkAuthorization *NetworkAuthorizationConfig `yaml:"networkAuthorization"`

	HTTP            notSupported `yaml:"http"`
	TLS             notSupported `yaml:"tls"`
	TCP             notSupported `yaml:"tcp"`
	NetworkExtAuthz notSupported `yaml:"networkExtAuthz"`
	Proxy           notSupported `yaml:"proxy"`
	ProxyProtocol   notSupported `yaml:"proxyProtocol"`
	Connect         notSupported `yaml:"connect"`
	AccessLog       notSupported `yaml:"accessLog"`
	Logging         notSupported `yaml:"logging"`
	Tracing         notSupported `yaml:"tracing"`
}

// NetworkAuthorizationConfig is frontendPolicies.networkAuthorization:
// agentgateway's rule set, plus what a denied connection gets.
type NetworkAuthorizationConfig struct {
	Rules []RuleConfig `yaml:"rules"`
	// Denied is what a denied connection gets: "reply" (default) reads the
	// request's head and answers HTTP 403 with a one-line reason, so that
	// the caller can tell "denied" from "down"; "close" closes it before
	// reading or writing a byte, as agentgateway does. A tailgate
	// extension.
	Denied string `yaml:"denied"`
}

// Denied values.
const (
	DeniedReply = "reply"
	DeniedClose = "close"
)

// RuleSetConfig is agentgateway's RuleSet: `rules:` of CEL expressions.
type RuleSetConfig struct {
	Rules []RuleConfig `yaml:"rules"`
}

// RuleConfig is one rule: a plain string (allow) or a mapping with one of
// allow, deny or require.
type RuleConfig struct {
	Kind policy.Kind
	Expr string
	Line int
}

func (r *RuleConfig) unmarshalYAML(d *decoder, n *yaml.Node, path string) {
	r.Line = n.Line
	switch {
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str":
		r.Kind, r.Expr = policy.Allow, n.Value
	case n.Kind == yaml.MappingNode && len(n.Content) == 2:
		k, v := resolve(n.Content[0]), resolve(n.Content[1])
		switch kind := policy.Kind(k.Value); kind {
		case policy.Allow, policy.Deny, policy.Require:
			if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" {
				d.errorf(v, path+"."+k.Value, "expected a CEL expression string, got %s", kindName(v))
				return
			}
			r.Kind, r.Expr, r.Line = kind, v.Value, v.Line
		default:
			d.errorf(k, path+"."+k.Value, "unknown rule kind (want allow, deny or require)")
		}
	default:
		d.errorf(n, path, "expected a CEL expression or one of {allow|deny|require: <expression>}, got %s", kindName(n))
	}
}

// Duration is a time.Duration written as "30s" or "5m".
type Duration time.Duration

func (t *Duration) unmarshalYAML(d *decoder, n *yaml.Node, path string) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected a duration such as \"30s\", got %s", kindName(n))
		return
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		d.errorf(n, path, "expected a duration such as \"30s\", got %q", n.Value)
		return
	}
	*t = Duration(v)
}

// Bind is a port the gateway listens on, on its tailnet addresses only.
type Bind struct {
	Port      int        `yaml:"port"`
	Listeners []Listener `yaml:"listeners"`

	TunnelProtocol notSupported `yaml:"tunnelProtocol"`
	Mode           notSupported `yaml:"mode"`
}

// Listener serves routes on a bind; with several listeners on one bind,
// the request's Host picks the listener by hostname.
type Listener struct {
	Name     string  `yaml:"name"`
	Protocol string  `yaml:"protocol"`
	Hostname string  `yaml:"hostname"`
	Routes   []Route `yaml:"routes"`

	TLS       notSupported `yaml:"tls"`
	TCPRoutes notSupported `yaml:"tcpRoutes"`
	Policies  notSupported `yaml:"policies"`
}

// Route sends matching requests to its backend.
type Route struct {
	Name      string         `yaml:"name"`
	RuleName  string         `yaml:"ruleName"`
	Hostnames []string       `yaml:"hostnames"`
	Matches   []Match        `yaml:"matches"`
	Policies  *RoutePolicies `yaml:"policies"`
	Backends  []RouteBackend `yaml:"backends"`

	authz    *policy.RuleSet
	mcpAuthz *policy.RuleSet
}

// Match selects requests by path and method. A route without matches
// takes every request.
type Match struct {
	Path   *PathMatch `yaml:"path"`
	Method string     `yaml:"method"`

	Headers     notSupported `yaml:"headers"`
	QueryParams notSupported `yaml:"query"`
}

// PathMatch is one of exact or pathPrefix.
type PathMatch struct {
	Exact      string `yaml:"exact"`
	PathPrefix string `yaml:"pathPrefix"`

	Regex notSupported `yaml:"regex"`
}

// RoutePolicies are the policies of a route or of the simplified mcp
// block.
type RoutePolicies struct {
	RequestHeaderModifier  notSupported `yaml:"requestHeaderModifier"`
	ResponseHeaderModifier notSupported `yaml:"responseHeaderModifier"`
	RequestRedirect        notSupported `yaml:"requestRedirect"`
	URLRewrite             notSupported `yaml:"urlRewrite"`
	RequestMirror          notSupported `yaml:"requestMirror"`
	DirectResponse         notSupported `yaml:"directResponse"`
	// CORS answers browsers: see CORS.
	CORS *CORS        `yaml:"cors"`
	CSRF notSupported `yaml:"csrf"`
	// Authorization runs per HTTP request, with source and request.
	Authorization *RuleSetConfig `yaml:"authorization"`
	JWTAuth       notSupported   `yaml:"jwtAuth"`
	OIDC          notSupported   `yaml:"oidc"`
	BasicAuth     notSupported   `yaml:"basicAuth"`
	APIKey        notSupported   `yaml:"apiKey"`
	ExtAuthz      notSupported   `yaml:"extAuthz"`
	ExtProc       notSupported   `yaml:"extProc"`
	// MCPAuthorization runs per MCP call (tools/call, prompts/get,
	// resources/read) and filters list results, with source, request and
	// mcp.
	MCPAuthorization  *RuleSetConfig `yaml:"mcpAuthorization"`
	MCPAuthentication notSupported   `yaml:"mcpAuthentication"`
	MCPGuardrails     notSupported   `yaml:"mcpGuardrails"`
	LocalRateLimit    notSupported   `yaml:"localRateLimit"`
	RemoteRateLimit   notSupported   `yaml:"remoteRateLimit"`
	Timeout           notSupported   `yaml:"timeout"`
	Retry             notSupported   `yaml:"retry"`
	Delay             notSupported   `yaml:"delay"`
	Buffer            notSupported   `yaml:"buffer"`
	Transformations   notSupported   `yaml:"transformations"`
	BackendTLS        notSupported   `yaml:"backendTLS"`
	BackendAuth       notSupported   `yaml:"backendAuth"`
	BackendTunnel     notSupported   `yaml:"backendTunnel"`
	A2A               notSupported   `yaml:"a2a"`
	AI                notSupported   `yaml:"ai"`
}

// RouteBackend is where a route sends requests. tailgate serves MCP
// backends.
type RouteBackend struct {
	MCP    *MCPBackend `yaml:"mcp"`
	Weight int         `yaml:"weight"`
	// Backend names one of the config's top-level backends, used as if
	// it were written here.
	Backend string `yaml:"backend"`

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

// Load reads and parses the config file at path.
func Load(path string, env *policy.Env) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data, env)
}

// Parse parses a config. file names it in errors. Every problem is
// reported, as ConfigErrors, each with file, line and YAML path. Rules are
// compiled with env.
func Parse(file string, data []byte, env *policy.Env) (*Config, error) {
	d := &decoder{file: file, dir: filepath.Dir(file)}
	if abs, err := filepath.Abs(d.dir); err == nil {
		d.dir = abs
	}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			d.errorf(nil, "", "empty config: nothing to serve (add binds or an mcp block)")
			return nil, d.errs
		}
		return nil, yamlSyntaxError(file, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		d.errorf(&extra, "", "a config file holds one YAML document; found another")
	}
	cfg := &Config{File: file}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	d.decode(doc, "", reflectValue(cfg))
	// The checks and rule compilation run even when decoding found errors,
	// so that one run reports every problem; what they say about a field
	// that failed to decode (or that a typo left unset) would only repeat
	// it, and is dropped.
	if d.nodes < maxNodes {
		decoded := len(d.errs)
		for _, e := range d.errs {
			d.shadowed = append(d.shadowed, e.Path)
		}
		d.validate(doc, cfg)
		d.compileRules(doc, cfg, env)
		kept := d.errs[:decoded]
		for _, e := range d.errs[decoded:] {
			if !d.shadows(e.Path) {
				kept = append(kept, e)
			}
		}
		d.errs = kept
	}
	cfg.commands, cfg.users, cfg.secrets = d.commands, d.users, d.secrets
	if n := lookup(doc, "tailscale", "authKeyFile"); n != nil {
		cfg.authKeyLine = n.Line
	}
	if len(d.errs) > 0 {
		// In file order; errors about the whole file (line 0) first.
		sort.SliceStable(d.errs, func(i, j int) bool { return d.errs[i].Line < d.errs[j].Line })
		return nil, d.errs
	}
	cfg.Warnings = d.warnings
	return cfg, nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func yamlSyntaxError(file string, err error) error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		var line int
		fmt.Sscan(m[1], &line)
		return ConfigErrors{{File: file, Line: line, Msg: "YAML syntax: " + m[2]}}
	}
	return ConfigErrors{{File: file, Msg: "YAML syntax: " + strings.TrimPrefix(msg, "yaml: ")}}
}

// lookup returns the node at a dotted path under n ("binds[0].port"), or
// nil. It is how validation finds the line of a field.
func lookup(n *yaml.Node, keys ...any) *yaml.Node {
	for _, k := range keys {
		n = resolve(n)
		if n == nil {
			return nil
		}
		switch k := k.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return nil
			}
			var found *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if resolve(n.Content[i]).Value == k {
					found = n.Content[i+1]
				}
			}
			n = found
		case int:
			if n.Kind != yaml.SequenceNode || k >= len(n.Content) {
				return nil
			}
			n = n.Content[k]
		}
	}
	return resolve(n)
}

// keyNode is the key node of a top-level key, for errors about a block
// as a whole (its line is the key's, not its first child's).
func keyNode(doc *yaml.Node, key string) *yaml.Node {
	if doc.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(doc.Content); i += 2 {
			if resolve(doc.Content[i]).Value == key {
				return doc.Content[i]
			}
		}
	}
	return doc
}

// at is lookup falling back to the nearest existing ancestor, so that an
// error about a missing field points at its parent.
func at(n *yaml.Node, keys ...any) *yaml.Node {
	for i := len(keys); i >= 0; i-- {
		if found := lookup(n, keys[:i]...); found != nil {
			return found
		}
	}
	return n
}

var (
	hostnameRE   = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)
	targetNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9.-]*$`)
)

func (d *decoder) validate(doc *yaml.Node, cfg *Config) {
	d.resolveBackends(doc, cfg)
	ts := &cfg.Tailscale
	if ts.Hostname != "" && !hostnameRE.MatchString(ts.Hostname) {
		d.errorf(at(doc, "tailscale", "hostname"), "tailscale.hostname", "%q is not a valid hostname (letters, digits and '-', at most 63)", ts.Hostname)
	}
	if ts.ControlURL != "" {
		u, err := url.Parse(ts.ControlURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			d.errorf(at(doc, "tailscale", "controlURL"), "tailscale.controlURL", "%q is not an http(s) URL", ts.ControlURL)
		}
	}
	if ts.Service != "" && (!strings.HasPrefix(ts.Service, "svc:") || !hostnameRE.MatchString(strings.TrimPrefix(ts.Service, "svc:"))) {
		d.errorf(at(doc, "tailscale", "service"), "tailscale.service", "%q is not a Service name (want svc:name)", ts.Service)
	}
	if ts.Service != "" && len(ts.AdvertiseTags) == 0 {
		d.errorf(at(doc, "tailscale", "service"), "tailscale.service", "a Service host must be a tagged node: set tailscale.advertiseTags")
	}
	switch ts.Mode {
	case "", "tsnet":
		if ts.Socket != "" {
			d.errorf(at(doc, "tailscale", "socket"), "tailscale.socket", "applies to mode: host only")
		}
	case "host":
		// The host's tailscaled owns its node: settings of tailgate's own
		// node would be silently meaningless.
		for _, f := range []struct {
			key string
			set bool
		}{
			{"hostname", ts.Hostname != ""}, {"controlURL", ts.ControlURL != ""}, {"authKeyFile", ts.AuthKeyFile != ""},
			{"ephemeral", ts.Ephemeral}, {"stateDir", ts.StateDir != ""}, {"stateStore", ts.StateStore != ""},
			{"advertiseTags", len(ts.AdvertiseTags) > 0}, {"startTimeout", ts.StartTimeout != 0},
			{"logUpload", ts.LogUpload}, {"service", ts.Service != ""},
		} {
			if f.set {
				d.errorf(at(doc, "tailscale", f.key), "tailscale."+f.key, "does not apply to mode: host (the host's tailscaled owns the node)")
			}
		}
	default:
		d.errorf(at(doc, "tailscale", "mode"), "tailscale.mode", "unknown mode %q (want tsnet or host)", ts.Mode)
	}
	switch ts.StateStore {
	case "", "file":
	case "mem":
		if !ts.Ephemeral {
			d.errorf(at(doc, "tailscale", "stateStore"), "tailscale.stateStore", "mem keeps no node keys, so it needs ephemeral: true")
		}
	default:
		d.errorf(at(doc, "tailscale", "stateStore"), "tailscale.stateStore", "unknown state store %q (want file or mem)", ts.StateStore)
	}
	for i, tag := range ts.AdvertiseTags {
		if !strings.HasPrefix(tag, "tag:") || len(tag) == len("tag:") {
			d.errorf(at(doc, "tailscale", "advertiseTags", i), fmt.Sprintf("tailscale.advertiseTags[%d]", i), "%q is not a tag (want tag:name)", tag)
		}
	}

	for _, a := range []struct{ key, addr string }{{"adminAddr", cfg.Global.AdminAddr}, {"statsAddr", cfg.Global.StatsAddr}, {"readinessAddr", cfg.Global.ReadinessAddr}} {
		if a.addr == "" || (a.key == "adminAddr" && a.addr == "off") {
			continue
		}
		if _, port, err := net.SplitHostPort(a.addr); err != nil || port == "" {
			d.errorf(at(doc, "config", a.key), "config."+a.key, "%q is not host:port", a.addr)
		}
	}
	if g := cfg.Global.MCP; g != nil && g.MaxSessions < 0 {
		d.errorf(at(doc, "config", "mcp", "maxSessions"), "config.mcp.maxSessions", "must not be negative")
	}
	if g := cfg.Global.MCP; g != nil && g.MaxSessionsPerPeer < 0 {
		d.errorf(at(doc, "config", "mcp", "maxSessionsPerPeer"), "config.mcp.maxSessionsPerPeer", "must not be negative")
	}
	if g := cfg.Global.MCP; g != nil && g.MaxMessageBytes < 0 {
		d.errorf(at(doc, "config", "mcp", "maxMessageBytes"), "config.mcp.maxMessageBytes", "must not be negative")
	}
	if g := cfg.Global.MCP; g != nil {
		for i, o := range g.AllowedOrigins {
			if msg := checkOrigin(o); msg != "" {
				d.errorf(at(doc, "config", "mcp", "allowedOrigins", i), fmt.Sprintf("config.mcp.allowedOrigins[%d]", i), "%s", msg)
			}
		}
	}
	if np := cfg.FrontendPolicies.NetworkAuthorization; np != nil {
		switch np.Denied {
		case "", DeniedReply, DeniedClose:
		default:
			d.errorf(at(doc, "frontendPolicies", "networkAuthorization", "denied"), "frontendPolicies.networkAuthorization.denied", "unknown value %q (want reply or close)", np.Denied)
		}
	}
	if len(cfg.Binds) == 0 && cfg.MCP == nil {
		d.errorf(doc, "", "nothing to serve: add binds or an mcp block")
	}
	ports := make(map[int]string)
	for i, b := range cfg.Binds {
		path := fmt.Sprintf("binds[%d]", i)
		if lookup(doc, "binds", i, "port") == nil {
			d.errorf(at(doc, "binds", i), path+".port", "a bind needs a port")
		} else if b.Port < 1 || b.Port > 65535 {
			d.errorf(at(doc, "binds", i, "port"), path+".port", "port %d out of range 1-65535", b.Port)
		} else if prev, dup := ports[b.Port]; dup {
			d.errorf(at(doc, "binds", i, "port"), path+".port", "port %d is already bound by %s", b.Port, prev)
		} else {
			ports[b.Port] = path
		}
		if len(b.Listeners) == 0 && !slices.Contains(d.unsupported, path+".tunnelProtocol") {
			d.errorf(at(doc, "binds", i), path+".listeners", "a bind needs at least one listener")
		}
		hosts := make(map[string]bool)
		for j, l := range b.Listeners {
			lpath := fmt.Sprintf("%s.listeners[%d]", path, j)
			switch l.Protocol {
			case "", "HTTP", "HTTPS":
				if j > 0 && protocolOf(l) != protocolOf(b.Listeners[0]) {
					d.errorf(at(doc, "binds", i, "listeners", j, "protocol"), lpath+".protocol", "all listeners of a bind use one protocol (listeners[0] is %s)", protocolOf(b.Listeners[0]))
				}
				if l.Protocol == "HTTPS" && cfg.Tailscale.Service != "" {
					d.errorf(at(doc, "binds", i, "listeners", j, "protocol"), lpath+".protocol", "HTTPS is not supported yet together with tailscale.service")
				}
			case "TLS", "TCP", "HBONE":
				d.errorf(at(doc, "binds", i, "listeners", j, "protocol"), lpath+".protocol", "protocol %s is not supported yet (HTTP is)", l.Protocol)
			default:
				d.errorf(at(doc, "binds", i, "listeners", j, "protocol"), lpath+".protocol", "unknown protocol %q (want HTTP)", l.Protocol)
			}
			if hosts[l.Hostname] {
				d.errorf(at(doc, "binds", i, "listeners", j), lpath, "another listener on this bind has hostname %q", l.Hostname)
			}
			hosts[l.Hostname] = true
			if len(l.Routes) == 0 {
				d.errorf(at(doc, "binds", i, "listeners", j), lpath+".routes", "a listener needs at least one route")
			}
			for k, r := range l.Routes {
				d.validateRoute(doc, r, fmt.Sprintf("%s.routes[%d]", lpath, k), "binds", i, "listeners", j, "routes", k)
			}
		}
	}
	if m := cfg.MCP; m != nil {
		port := m.Port
		if port == 0 {
			port = DefaultMCPPort
		}
		switch prev, dup := ports[port]; {
		case port < 1 || port > 65535:
			d.errorf(at(doc, "mcp", "port"), "mcp.port", "port %d out of range 1-65535", port)
		case dup && m.Port == 0:
			d.errorf(keyNode(doc, "mcp"), "mcp.port", "port %d (the mcp block's default) is already bound by %s", port, prev)
		case dup:
			d.errorf(at(doc, "mcp", "port"), "mcp.port", "port %d is already bound by %s", port, prev)
		}
		d.validateMCP(doc, &MCPBackend{Targets: m.Targets, StatefulMode: m.StatefulMode, PrefixMode: m.PrefixMode, FailureMode: m.FailureMode}, "mcp", "mcp")
	}
}

// resolveBackends validates the named backends and puts each where a
// route names it (its mcp, and its policies unless the route's backend
// has its own).
func (d *decoder) resolveBackends(doc *yaml.Node, cfg *Config) {
	names := make(map[string]int)
	for i, nb := range cfg.Backends {
		path := fmt.Sprintf("backends[%d]", i)
		switch {
		case nb.Name == "":
			d.errorf(at(doc, "backends", i), path+".name", "a backend needs a name")
		case names[nb.Name] > 0:
			d.errorf(at(doc, "backends", i, "name"), path+".name", "backend %q is defined twice", nb.Name)
		default:
			names[nb.Name] = i + 1
		}
		if nb.MCP == nil {
			if !slices.ContainsFunc(d.unsupported, func(u string) bool { return strings.HasPrefix(u, path+".") }) {
				d.errorf(at(doc, "backends", i), path, "a backend needs mcp (the only kind tailgate serves)")
			}
			continue
		}
		d.validateMCP(doc, nb.MCP, path+".mcp", "backends", i, "mcp")
	}
	for i := range cfg.Binds {
		for j := range cfg.Binds[i].Listeners {
			for k := range cfg.Binds[i].Listeners[j].Routes {
				r := &cfg.Binds[i].Listeners[j].Routes[k]
				for n := range r.Backends {
					b := &r.Backends[n]
					if b.Backend == "" {
						continue
					}
					path := fmt.Sprintf("binds[%d].listeners[%d].routes[%d].backends[%d].backend", i, j, k, n)
					if b.MCP != nil {
						d.errorf(at(doc, "binds", i, "listeners", j, "routes", k, "backends", n, "backend"), path, "give mcp or backend, not both")
						continue
					}
					// agentgateway also writes a reference as
					// "<namespace>/<name>", "/name" without one.
					idx := names[strings.TrimPrefix(b.Backend, "/")]
					if idx == 0 {
						hint, _ := suggest(b.Backend, names)
						d.errorf(at(doc, "binds", i, "listeners", j, "routes", k, "backends", n, "backend"), path, "no backend named %q in backends%s", b.Backend, hint)
						continue
					}
					nb := cfg.Backends[idx-1]
					b.MCP, b.named = nb.MCP, true
					switch {
					case b.Policies == nil:
						b.Policies = nb.Policies
					case nb.Policies == nil || nb.Policies.MCPAuthorization == nil:
					case b.Policies.MCPAuthorization == nil:
						// The reference's other policies do not drop the
						// named backend's rules.
						p := *b.Policies
						p.MCPAuthorization = nb.Policies.MCPAuthorization
						b.Policies = &p
					default:
						d.warnf(at(doc, "binds", i, "listeners", j, "routes", k, "backends", n, "policies", "mcpAuthorization").Line,
							strings.TrimSuffix(path, ".backend")+".policies.mcpAuthorization",
							"replaces backend %q's own mcpAuthorization, which does not apply here", nb.Name)
					}
				}
			}
		}
	}
}

func (d *decoder) validateRoute(doc *yaml.Node, r Route, path string, keys ...any) {
	k := func(more ...any) []any { return append(append([]any{}, keys...), more...) }
	for i, m := range r.Matches {
		mpath := fmt.Sprintf("%s.matches[%d]", path, i)
		if p := m.Path; p != nil {
			switch {
			case p.Exact != "" && p.PathPrefix != "":
				d.errorf(at(doc, k("matches", i, "path")...), mpath+".path", "give one of exact or pathPrefix, not both")
			case p.Exact == "" && p.PathPrefix == "":
				d.errorf(at(doc, k("matches", i, "path")...), mpath+".path", "give one of exact or pathPrefix")
			case !strings.HasPrefix(p.Exact+p.PathPrefix, "/"):
				d.errorf(at(doc, k("matches", i, "path")...), mpath+".path", "a path starts with /")
			}
		}
	}
	switch len(r.Backends) {
	case 0:
		if !slices.Contains(d.unsupported, path+".policies.directResponse") && !slices.Contains(d.unsupported, path+".policies.requestRedirect") {
			d.errorf(at(doc, k("backends")...), path+".backends", "a route needs a backend")
		}
		return
	case 1:
	default:
		d.errorf(at(doc, k("backends", 1)...), path+".backends[1]", "several backends on one route (load balancing) are not supported yet")
		return
	}
	b := r.Backends[0]
	switch {
	case b.MCP == nil && b.Backend != "":
		return // an unknown name, reported as such
	case b.MCP == nil:
		d.errorf(at(doc, k("backends", 0)...), path+".backends[0]", "a backend needs mcp (the only kind tailgate serves)")
		return
	case b.named:
		return // validated where it is defined
	}
	d.validateMCP(doc, b.MCP, path+".backends[0].mcp", k("backends", 0, "mcp")...)
}

func (d *decoder) validateMCP(doc *yaml.Node, m *MCPBackend, path string, keys ...any) {
	k := func(more ...any) []any { return append(append([]any{}, keys...), more...) }
	switch m.StatefulMode {
	case "", "stateful":
	case "stateless":
	default:
		d.errorf(at(doc, k("statefulMode")...), path+".statefulMode", "unknown mode %q (want stateful or stateless)", m.StatefulMode)
	}
	switch m.PrefixMode {
	case "", "conditional", "always", "never":
	default:
		d.errorf(at(doc, k("prefixMode")...), path+".prefixMode", "unknown mode %q (want conditional, always or never)", m.PrefixMode)
	}
	switch m.FailureMode {
	case "", "failClosed", "failOpen":
	default:
		d.errorf(at(doc, k("failureMode")...), path+".failureMode", "unknown mode %q (want failClosed or failOpen)", m.FailureMode)
	}
	if len(m.Targets) == 0 {
		d.errorf(at(doc, k("targets")...), path+".targets", "an mcp backend needs at least one target")
	}
	names := make(map[string]bool)
	for i, t := range m.Targets {
		tpath := fmt.Sprintf("%s.targets[%d]", path, i)
		switch {
		case t.Name == "":
			d.errorf(at(doc, k("targets", i, "name")...), tpath+".name", "a target needs a name")
		case !targetNameRE.MatchString(t.Name):
			d.errorf(at(doc, k("targets", i, "name")...), tpath+".name", "%q: a target name is letters, digits, '.' and '-' (no '_': it separates target and tool names)", t.Name)
		case names[t.Name]:
			d.errorf(at(doc, k("targets", i, "name")...), tpath+".name", "duplicate target name %q", t.Name)
		}
		names[t.Name] = true
		if r, kind := t.remote(); r != nil {
			if t.Stdio != nil || (t.MCP != nil && t.SSE != nil) {
				d.errorf(at(doc, k("targets", i)...), tpath, "a target is one of stdio, mcp or sse")
			}
			u, err := url.Parse(r.URL())
			hostURL, _ := url.Parse(r.Host)
			example := map[string]string{"mcp": "http://tools:8080/mcp", "sse": "http://tools:8080/sse"}[kind]
			switch {
			case r.Host == "" && slices.Contains(d.unsupported, tpath+"."+kind+".backend"):
				// A target that names a backend instead: said already.
			case r.Host == "":
				d.errorf(at(doc, k("targets", i, kind)...), tpath+"."+kind+".host", "an %s target needs host (a URL such as %s)", kind, example)
			case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
				d.errorf(at(doc, k("targets", i, kind, "host")...), tpath+"."+kind+".host", "%q is not an http(s) URL", r.Host)
			case r.Port != 0 && strings.Contains(r.Host, "://") && hostURL != nil && hostURL.Port() != "":
				d.errorf(at(doc, k("targets", i, kind, "port")...), tpath+"."+kind+".port", "host %q already names a port: give it once", r.Host)
			case kind == "mcp" && (u.Path == "" || u.Path == "/"):
				// agentgateway posts to the URL as given; so does tailgate.
				d.warnf(at(doc, k("targets", i, kind, "host")...).Line, tpath+".mcp.host", "%q has no path: messages are posted to /, and most servers serve /mcp", r.Host)
			}
			if written := r.CAFile; written != "" {
				r.CAFile = resolvePath(d.dir, written)
				if err := checkPEM(r.CAFile); err != nil {
					d.errorf(at(doc, k("targets", i, kind, "caFile")...), tpath+"."+kind+".caFile", "%s: %v", written, err)
				}
			}
			continue
		}
		if t.Stdio == nil {
			d.errorf(at(doc, k("targets", i)...), tpath, "a target needs stdio, mcp or sse")
			continue
		}
		if t.Stdio.Cmd == "" {
			d.errorf(at(doc, k("targets", i, "stdio", "cmd")...), tpath+".stdio.cmd", "a stdio target needs cmd")
		} else {
			t.Stdio.path = resolveCommand(d.dir, t.Stdio.Cmd)
			d.commands = append(d.commands, hostRef{path: tpath + ".stdio.cmd", value: t.Stdio.path, line: at(doc, k("targets", i, "stdio", "cmd")...).Line})
		}
		if t.Stdio.User != "" {
			d.users = append(d.users, hostRef{path: tpath + ".stdio.user", value: t.Stdio.User, line: at(doc, k("targets", i, "stdio", "user")...).Line})
		}
		if t.Stdio.Pool < 0 || t.Stdio.Pool > 1000 {
			d.errorf(at(doc, k("targets", i, "stdio", "pool")...), tpath+".stdio.pool", "pool %d out of range 0-1000", t.Stdio.Pool)
		}
		if t.Stdio.Pool > 0 && t.Stdio.IdentityEnv {
			d.errorf(at(doc, k("targets", i, "stdio", "pool")...), tpath+".stdio.pool", "a pool cannot be used with identityEnv: pooled children start before the caller is known")
		}
	}
}

// protocolOf is a listener's protocol, HTTP by default.
func protocolOf(l Listener) string {
	if l.Protocol == "" {
		return "HTTP"
	}
	return l.Protocol
}

// compileRules compiles every rule set with its scope, turning a rule's
// compile error into a ConfigError at the rule's line.
func (d *decoder) compileRules(doc *yaml.Node, cfg *Config, env *policy.Env) {
	if np := cfg.FrontendPolicies.NetworkAuthorization; np != nil {
		cfg.networkAuthz = d.compileRuleSet(env, policy.ScopeNetwork, "frontendPolicies.networkAuthorization.rules", ruleSource{"frontendPolicies.networkAuthorization.rules", &RuleSetConfig{Rules: np.Rules}})
	}
	for i := range cfg.Binds {
		for j := range cfg.Binds[i].Listeners {
			for k := range cfg.Binds[i].Listeners[j].Routes {
				r := &cfg.Binds[i].Listeners[j].Routes[k]
				path := fmt.Sprintf("binds[%d].listeners[%d].routes[%d]", i, j, k)
				var backend *BackendPolicies
				if len(r.Backends) > 0 {
					backend = r.Backends[0].Policies
				}
				r.authz, r.mcpAuthz = d.compilePolicies(env, path, r.Policies, path+".backends[0]", backend)
				d.checkCORS(doc, []any{"binds", i, "listeners", j, "routes", k, "policies", "cors"}, path+".policies.cors", r.Policies)
			}
		}
	}
	if m := cfg.MCP; m != nil {
		m.authz, m.mcpAuthz = d.compilePolicies(env, "mcp", m.Policies, "", nil)
		d.checkCORS(doc, []any{"mcp", "policies", "cors"}, "mcp.policies.cors", m.Policies)
	}
}

// checkCORS checks a cors policy's origins: each an origin or a pattern
// with a wildcard host; one that admits every origin loads with a warning
// that tailgate narrows it (see CORS).
func (d *decoder) checkCORS(doc *yaml.Node, keys []any, path string, rp *RoutePolicies) {
	if rp == nil || rp.CORS == nil {
		return
	}
	for i, s := range rp.CORS.AllowOrigins {
		at := at(doc, append(keys, "allowOrigins", i)...)
		p := fmt.Sprintf("%s.allowOrigins[%d]", path, i)
		switch _, any, problem := corsOrigin(s); {
		case problem != "":
			d.errorf(at, p, "%s", problem)
		case any:
			d.warnf(at.Line, p, "%q admits no origin in tailgate: any page a tailnet user visits could call the route as that user; list the origins of the web clients", s)
		}
	}
}

// compilePolicies compiles a route's authorization, and its
// mcpAuthorization merged with its backend's: a deny in either denies,
// every require must hold, and the allows of both are alternatives.
func (d *decoder) compilePolicies(env *policy.Env, path string, rp *RoutePolicies, backendPath string, bp *BackendPolicies) (authz, mcpAuthz *policy.RuleSet) {
	var mcpSources []ruleSource
	if rp != nil {
		if rp.Authorization != nil {
			authz = d.compileRuleSet(env, policy.ScopeHTTP, path+".policies.authorization.rules", ruleSource{path + ".policies.authorization.rules", rp.Authorization})
		}
		if rp.MCPAuthorization != nil {
			mcpSources = append(mcpSources, ruleSource{path + ".policies.mcpAuthorization.rules", rp.MCPAuthorization})
		}
	}
	if bp != nil && bp.MCPAuthorization != nil {
		mcpSources = append(mcpSources, ruleSource{backendPath + ".policies.mcpAuthorization.rules", bp.MCPAuthorization})
	}
	if len(mcpSources) > 0 {
		mcpAuthz = d.compileRuleSet(env, policy.ScopeMCP, mcpSources[0].path, mcpSources...)
	}
	return authz, mcpAuthz
}

// ruleSource is a rule set as written, at its YAML path.
type ruleSource struct {
	path string
	set  *RuleSetConfig
}

// compileRuleSet compiles the rules of sources as one rule set named path.
func (d *decoder) compileRuleSet(env *policy.Env, scope policy.Scope, path string, sources ...ruleSource) *policy.RuleSet {
	var rules []policy.Rule
	lines := make(map[string]int)
	for _, src := range sources {
		for i, r := range src.set.Rules {
			p := fmt.Sprintf("%s[%d]", src.path, i)
			rules = append(rules, policy.Rule{Kind: r.Kind, Expr: r.Expr, Path: p})
			lines[p] = r.Line
		}
	}
	rs, err := env.Compile(scope, path, rules)
	if err == nil {
		d.warnForgeableHeaders(rs, lines)
	}
	if err != nil {
		for _, e := range unjoin(err) {
			var re *policy.RuleError
			if errors.As(e, &re) {
				d.errs = append(d.errs, &ConfigError{File: d.file, Line: lines[re.Path], Path: re.Path, Msg: re.Err.Error()})
			} else {
				d.errs = append(d.errs, &ConfigError{File: d.file, Path: path, Msg: e.Error()})
			}
		}
		return nil
	}
	return rs
}

// warnForgeableHeaders warns about rules that read the identity headers
// `tailscale serve` sets (Tailscale-User-Login, Tailscale-User-Name,
// Tailscale-App-Capabilities, ...): such a rule is sound behind serve,
// which overwrites them, but tailgate is no proxy behind serve, so here
// any client sets them to anything.
func (d *decoder) warnForgeableHeaders(rs *policy.RuleSet, lines map[string]int) {
	names := rs.HeaderNames()
	paths := make([]string, 0, len(names))
	for p := range names {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		for _, h := range names[p] {
			if !strings.HasPrefix(h, "tailscale-") {
				continue
			}
			use := "source.tailscale"
			switch h {
			case "tailscale-user-login":
				use = "source.tailscale.user.login"
			case "tailscale-user-name":
				use = "source.tailscale.user.displayName"
			case "tailscale-app-capabilities":
				use = "source.tailscale.caps"
			}
			d.warnf(lines[p], p, "reads request header %q, which any client can set to anything here (tailgate is not behind `tailscale serve`); use %s, which comes from WhoIs", h, use)
		}
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func reflectValue(cfg *Config) reflect.Value { return reflect.ValueOf(cfg).Elem() }

// resolveCommand is cmd with a relative path (one that holds a "/")
// made absolute against dir; names ("npx") are left to PATH.
func resolveCommand(dir, cmd string) string {
	if filepath.IsAbs(cmd) || !strings.ContainsRune(cmd, '/') {
		return cmd
	}
	return filepath.Join(dir, cmd)
}

// resolvePath is a file path of the config (a header's file, a caFile)
// made absolute against the config file's folder, as a relative stdio cmd
// is.
func resolvePath(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// checkPEM reports whether file holds a PEM certificate.
func checkPEM(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return unwrapPathError(err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return errors.New("no PEM certificate in it")
	}
	return nil
}

// HostWarnings are what this host lacks for the config: a stdio target's
// program that is not found (in PATH, or at its path) or not executable, a
// stdio.user that this process cannot start children as, and a
// tailscale.authKeyFile that cannot be read. The config is valid
// without them — a program may be installed later — so they are
// warnings, each located as a ConfigError is.
func (c *Config) HostWarnings() []*ConfigError {
	var ws []*ConfigError
	for _, ref := range c.commands {
		if _, err := exec.LookPath(ref.value); err != nil {
			msg := fmt.Sprintf("%s: not found in PATH", ref.value)
			if strings.ContainsRune(ref.value, '/') {
				msg = fmt.Sprintf("%s: %v", ref.value, unwrapPathError(err))
			}
			ws = append(ws, &ConfigError{File: c.File, Line: ref.line, Path: ref.path, Msg: msg})
		}
	}
	for _, ref := range c.users {
		if _, err := childUser(ref.value); err != nil {
			ws = append(ws, &ConfigError{File: c.File, Line: ref.line, Path: ref.path, Msg: err.Error()})
		}
	}
	if f := c.Tailscale.AuthKeyFile; f != "" && c.Tailscale.Mode != "host" {
		if _, err := os.ReadFile(f); err != nil {
			ws = append(ws, &ConfigError{File: c.File, Line: c.authKeyLine, Path: "tailscale.authKeyFile", Msg: fmt.Sprintf("cannot read the auth key: %v", unwrapPathError(err))})
		}
	}
	return ws
}

// childUser is the account name (a stdio.user) stands for, if this
// process can start children as it.
func childUser(name string) (*mcpstdio.User, error) {
	u, err := mcpstdio.LookupUser(name)
	if err != nil {
		return nil, fmt.Errorf("stdio.user %q: %w", name, err)
	}
	if err := u.Allowed(); err != nil {
		return nil, err
	}
	return u, nil
}

// unwrapPathError drops the operation and path that a message already
// names ("open /x: no such file" → "no such file").
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var ee *exec.Error
	if errors.As(err, &ee) {
		return ee.Err
	}
	return err
}
