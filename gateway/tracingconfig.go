package gateway

import (
	"math"
	"net/url"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// This file holds config.tracing, agentgateway's OpenTelemetry block, as
// tailgate reads it: where spans go (otlpEndpoint, otlpProtocol, path,
// headers) and which calls are traced (randomSampling, clientSampling).
// What reads it is tracing.go.

// TracingConfig is config.tracing: OpenTelemetry traces of every MCP
// request, exported over OTLP (gRPC or HTTP). Absent, nothing is traced.
// The standard OTEL_* environment variables configure what the block
// leaves unset (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_SERVICE_NAME,
// OTEL_TRACES_SAMPLER, OTEL_BSP_*...); what the block sets wins.
type TracingConfig struct {
	// OTLPEndpoint is the collector's URL: http://host:4317 for gRPC
	// (https for TLS), http://host:4318 for HTTP. Default: the exporter's
	// environment, else localhost.
	OTLPEndpoint string `yaml:"otlpEndpoint"`
	// OTLPProtocol is "grpc" (default, as agentgateway) or "http"
	// (protobuf over HTTP).
	OTLPProtocol string `yaml:"otlpProtocol"`
	// Path is the HTTP exporter's path; default /v1/traces, or the path
	// of otlpEndpoint when it has one.
	Path string `yaml:"path"`
	// Headers go with every export (a collector's API key), each a value
	// or read from a file or an environment variable, as a remote
	// target's headers.
	Headers map[string]HeaderValue `yaml:"headers"`
	// RandomSampling is the share of calls traced that come without a
	// trace context (true, false or a ratio from 0 to 1); default false,
	// as agentgateway.
	RandomSampling *Sampling `yaml:"randomSampling"`
	// ClientSampling is the share of calls traced that come with a
	// sampled trace context (traceparent in the HTTP headers or in
	// _meta); default true. A context the client flagged not sampled is
	// not traced.
	ClientSampling *Sampling `yaml:"clientSampling"`

	// Fields are agentgateway's CEL-computed span attributes.
	Fields notSupported `yaml:"fields"`
}

// Sampling is a share of calls to trace: agentgateway's sampling
// expression reduced to the constants it mostly is (true, false, a ratio
// such as 0.1 or "0.1"); a CEL expression that reads the request is
// refused.
type Sampling struct {
	// Ratio is from 0 (none) to 1 (every call).
	Ratio float64
}

// unmarshalYAML reads true, false, a number or a string holding one.
func (s *Sampling) unmarshalYAML(d *decoder, n *yaml.Node, path string) {
	const want = "want true, false or a ratio from 0 to 1"
	if n.Kind != yaml.ScalarNode || isNull(n) {
		d.errorf(n, path, "%s, got %s", want, kindName(n))
		return
	}
	v := strings.TrimSpace(n.Value)
	if b, err := strconv.ParseBool(v); err == nil && (n.ShortTag() == "!!bool" || v == "true" || v == "false") {
		s.Ratio = 0
		if b {
			s.Ratio = 1
		}
		return
	}
	r, err := strconv.ParseFloat(v, 64)
	switch {
	case err != nil && n.ShortTag() == "!!str":
		d.errorf(n, path, "a CEL expression is not supported here (%s, got %q)", want, n.Value)
	case err != nil || r < 0 || r > 1 || math.IsNaN(r):
		d.errorf(n, path, "%s, got %s", want, kindName(n))
	default:
		s.Ratio = r
	}
}

// validateTracing checks config.tracing: the endpoint is a URL, the
// protocol one tailgate exports with, the path one for HTTP.
func (d *decoder) validateTracing(doc *yaml.Node, tc *TracingConfig) {
	if tc == nil {
		return
	}
	if e := tc.OTLPEndpoint; e != "" {
		u, err := url.Parse(e)
		if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			d.errorf(at(doc, "config", "tracing", "otlpEndpoint"), "config.tracing.otlpEndpoint", "%q is not an http(s) URL (e.g. http://localhost:4317)", e)
		}
	}
	switch tc.OTLPProtocol {
	case "", "grpc", "http":
	default:
		d.errorf(at(doc, "config", "tracing", "otlpProtocol"), "config.tracing.otlpProtocol", "unknown protocol %q (want grpc or http)", tc.OTLPProtocol)
	}
	if tc.Path != "" {
		if tc.OTLPProtocol != "http" {
			d.errorf(at(doc, "config", "tracing", "path"), "config.tracing.path", "a path is for otlpProtocol: http (gRPC has none)")
		} else if !strings.HasPrefix(tc.Path, "/") {
			d.errorf(at(doc, "config", "tracing", "path"), "config.tracing.path", "%q does not start with /", tc.Path)
		}
	}
}
