package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/tailscale/setec/client/setec"
	"gopkg.in/yaml.v3"

	"github.com/tailgate-dev/tailgate/gateway/secrets"
	"github.com/tailgate-dev/tailgate/policy"
)

// This file holds the config's types, from the top-level blocks down to
// routes and their policies (backends and targets are in
// configbackend.go), and Load and Parse, which decode a file, validate it
// (configvalidate.go) and compile its rules (configrules.go).

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
	// secretRefs are the per-caller secret sources targets name.
	secretRefs []namedRef
}

// namedRef is a secret source and where the config names it.
type namedRef struct {
	path string
	line int
	ref  secrets.Ref
}

// CheckSecrets checks what the config's secret sources can be checked
// for without a caller or a tailnet (--validate-only): a file that is the
// same for every caller is readable, an environment variable is set, the
// folder of a per-caller file exists. setec names are not looked up.
func (c *Config) CheckSecrets(ctx context.Context) ConfigErrors {
	var opts secrets.Options
	if sc := c.Global.Secrets; sc != nil && sc.Setec != nil {
		opts.Setec = &setec.Client{Server: sc.Setec.URL}
	}
	r := secrets.New(opts)
	var errs ConfigErrors
	for _, nr := range c.secretRefs {
		if err := r.Check(ctx, nr.ref); err != nil {
			errs = append(errs, &ConfigError{File: c.File, Line: nr.line, Path: nr.path, Msg: err.Error()})
		}
	}
	return errs
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
	StatsAddr     string       `yaml:"statsAddr"`
	ReadinessAddr string       `yaml:"readinessAddr"`
	Session       notSupported `yaml:"session"`
	MCP           *GlobalMCP   `yaml:"mcp"`
	// Audit writes the audit trail: a record of every decision. A
	// tailgate extension.
	Audit *AuditConfig `yaml:"audit"`
	// Readiness says when /healthz/ready answers 200. A tailgate
	// extension.
	Readiness *ReadinessConfig `yaml:"readiness"`
	// Secrets configures where per-caller secrets come from besides files
	// and the gateway's environment: a setec server. A tailgate extension.
	Secrets *SecretsConfig `yaml:"secrets"`
	// Tracing exports OpenTelemetry traces of MCP requests over OTLP, as
	// agentgateway's config.tracing (see TracingConfig).
	Tracing *TracingConfig `yaml:"tracing"`
	// IdentityTokens configures the tokens tailgate signs to name callers
	// to targets. A tailgate extension.
	IdentityTokens *IdentityTokensConfig `yaml:"identityTokens"`
	// OAuth is where the connections of backendAuth.oauth targets are
	// kept. A tailgate extension.
	OAuth                          *OAuthConfig `yaml:"oauth"`
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

// AuditConfig is config.audit.
type AuditConfig struct {
	// File is where the trail goes (JSON lines), rotated at MaxSizeMB
	// (default 100), old files kept MaxAgeDays and at most MaxBackups
	// (default: all, for ever). Stdout also writes it to standard output.
	File       string `yaml:"file"`
	Stdout     bool   `yaml:"stdout"`
	MaxSizeMB  int    `yaml:"maxSizeMB"`
	MaxAgeDays int    `yaml:"maxAgeDays"`
	MaxBackups int    `yaml:"maxBackups"`
	// Arguments keeps each call's arguments, not only their digest.
	Arguments *AuditArguments `yaml:"arguments"`
}

// AuditArguments is config.audit.arguments.
type AuditArguments struct {
	// Include writes the arguments; Redact names members (at any depth,
	// without case) written as "[redacted]".
	Include bool     `yaml:"include"`
	Redact  []string `yaml:"redact"`
}

// ReadinessConfig is config.readiness.
type ReadinessConfig struct {
	// Targets is "all" (default: ready while no target's latest start
	// failed) or "any" (ready while some target's did not).
	Targets string `yaml:"targets"`
}

// SecretsConfig is config.secrets.
type SecretsConfig struct {
	// Setec is the setec server per-caller secrets may name
	// ({setec: name}), reached over the tailnet as tailgate's own node.
	Setec *SetecConfig `yaml:"setec"`
}

// SetecConfig is config.secrets.setec.
type SetecConfig struct {
	// URL is the server's base URL ("https://secrets.tail1234.ts.net").
	URL string `yaml:"url"`
	// Timeout bounds each read; default 10s.
	Timeout Duration `yaml:"timeout"`
}

// IdentityTokensConfig is config.identityTokens.
type IdentityTokensConfig struct {
	// TTL is each token's lifetime; default 5m.
	TTL Duration `yaml:"ttl"`
	// RotateEvery is how often the signing key changes; default 24h.
	RotateEvery Duration `yaml:"rotateEvery"`
	// Algorithm is EdDSA (default) or ES256.
	Algorithm string `yaml:"algorithm"`
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
	LocalRateLimit    []RateLimit    `yaml:"localRateLimit"` // limits per key (person, tag, tool): RateLimit, limits.go
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
	cfg.commands, cfg.users, cfg.secrets, cfg.secretRefs = d.commands, d.users, d.secrets, d.secretRefs
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

func reflectValue(cfg *Config) reflect.Value { return reflect.ValueOf(cfg).Elem() }
