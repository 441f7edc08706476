package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// This file holds the gateway's tracer (config.tracing): an OpenTelemetry
// SDK tracer provider of the gateway's own (nothing global is set), its
// sampler, its OTLP exporter over gRPC or HTTP, and its shutdown. The
// spans themselves are made by the call's trace stages (tracestage.go).

// tracing is the gateway's tracer, opened at New when config.tracing is
// set; nil when it is not, and then nothing on a call's path costs more
// than a nil check.
type tracing struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	// prop reads and writes W3C traceparent, tracestate and baggage.
	prop     propagation.TextMapPropagator
	exporter *loggedExporter
	log      *slog.Logger
}

// traceFlushTimeout bounds how long Shutdown waits for the spans not yet
// exported, whatever time its context leaves.
const traceFlushTimeout = 5 * time.Second

// tracerName is the instrumentation scope of tailgate's spans.
const tracerName = "github.com/tailgate-dev/tailgate/gateway"

// openTracing opens the tracer cfg asks for; nil when it asks for none or
// OTEL_SDK_DISABLED is true. The exporter connects lazily: a collector
// that is down costs a logged line per minute, not a failed start.
func openTracing(cfg *Config, log *slog.Logger) (*tracing, error) {
	tc := cfg.Global.Tracing
	if tc == nil {
		return nil, nil
	}
	if off, _ := strconv.ParseBool(os.Getenv("OTEL_SDK_DISABLED")); off {
		log.Info("tracing off: OTEL_SDK_DISABLED is set")
		return nil, nil
	}
	exp, where, err := newTraceExporter(tc)
	if err != nil {
		return nil, fmt.Errorf("config.tracing: %w", err)
	}
	sampler, sampling, err := newCallSampler(tc)
	if err != nil {
		exp.Shutdown(context.Background())
		return nil, fmt.Errorf("config.tracing: %w", err)
	}
	res, err := resource.New(context.Background(), resource.WithTelemetrySDK(), resource.WithHost(),
		resource.WithAttributes(attribute.String("service.name", "tailgate"), attribute.String("service.version", Version)),
		resource.WithFromEnv()) // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	if err != nil {
		log.Warn("tracing: resource attributes", "err", err)
	}
	le := &loggedExporter{SpanExporter: exp, log: log}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(le), sdktrace.WithResource(res)}
	if sampler != nil {
		opts = append(opts, sdktrace.WithSampler(sampler))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	log.Info("tracing on", "exporter", where, "sampling", sampling)
	return &tracing{
		provider: tp,
		tracer:   tp.Tracer(tracerName, trace.WithInstrumentationVersion(Version)),
		prop:     propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		exporter: le,
		log:      log,
	}, nil
}

// newTraceExporter is the OTLP exporter tc asks for, and where it sends
// spans, for the log. The protocol is tc's, else
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL, else
// gRPC as agentgateway; the endpoint tc's, else the exporter's
// environment (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
// OTEL_EXPORTER_OTLP_ENDPOINT), else localhost.
func newTraceExporter(tc *TracingConfig) (sdktrace.SpanExporter, string, error) {
	protocol := tc.OTLPProtocol
	if protocol == "" {
		var err error
		if protocol, err = envTraceProtocol(); err != nil {
			return nil, "", err
		}
	}
	headers := make(map[string]string, len(tc.Headers))
	for k, v := range tc.Headers {
		headers[k] = v.Value
	}
	where := "the OTEL_EXPORTER_OTLP_* environment, else localhost"
	ctx := context.Background()
	if protocol == "http" {
		var opts []otlptracehttp.Option
		if tc.OTLPEndpoint != "" {
			where = httpTraceURL(tc)
			opts = append(opts, otlptracehttp.WithEndpointURL(where))
		}
		if len(headers) > 0 {
			opts = append(opts, otlptracehttp.WithHeaders(headers))
		}
		exp, err := otlptracehttp.New(ctx, opts...)
		return exp, "otlp http " + redactedURL(where), err
	}
	var opts []otlptracegrpc.Option
	if tc.OTLPEndpoint != "" {
		where = tc.OTLPEndpoint
		opts = append(opts, otlptracegrpc.WithEndpointURL(where))
	}
	if len(headers) > 0 {
		opts = append(opts, otlptracegrpc.WithHeaders(headers))
	}
	exp, err := otlptracegrpc.New(ctx, opts...)
	return exp, "otlp grpc " + redactedURL(where), err
}

// redactedURL is u with any password masked, for the log; u itself if it
// is not a URL.
func redactedURL(u string) string {
	if pu, err := url.Parse(u); err == nil && pu.User != nil {
		return pu.Redacted()
	}
	return u
}

// envTraceProtocol is the OTLP protocol the environment names for
// traces: "grpc" (also when it names none) or "http".
func envTraceProtocol() (string, error) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		switch v := strings.TrimSpace(os.Getenv(k)); v {
		case "":
			continue
		case "grpc":
			return "grpc", nil
		case "http/protobuf", "http":
			return "http", nil
		default:
			return "", fmt.Errorf("%s=%q: tailgate exports grpc or http/protobuf", k, v)
		}
	}
	return "grpc", nil
}

// httpTraceURL is the URL the HTTP exporter posts to: otlpEndpoint with
// tc.Path, or with its own path, or with /v1/traces.
func httpTraceURL(tc *TracingConfig) string {
	u, err := url.Parse(tc.OTLPEndpoint)
	if err != nil {
		return tc.OTLPEndpoint // validated at load
	}
	switch {
	case tc.Path != "":
		u.Path = tc.Path
	case u.Path == "" || u.Path == "/":
		u.Path = "/v1/traces"
	}
	return u.String()
}

// newCallSampler is the sampler tc asks for, and how it samples, for the
// log. Without randomSampling or clientSampling, OTEL_TRACES_SAMPLER (if
// set) chooses, through the SDK (sampler nil); else agentgateway's
// defaults: calls with a sampled trace context are traced, others not.
func newCallSampler(tc *TracingConfig) (sdktrace.Sampler, string, error) {
	if tc.RandomSampling == nil && tc.ClientSampling == nil {
		if name := strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER")); name != "" {
			switch strings.ToLower(name) {
			case "always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio":
				return nil, "OTEL_TRACES_SAMPLER=" + name, nil
			}
			return nil, "", fmt.Errorf("OTEL_TRACES_SAMPLER=%q is not a sampler tailgate knows (want always_on, always_off, traceidratio or parentbased_*)", name)
		}
	}
	random, client := 0.0, 1.0
	if s := tc.RandomSampling; s != nil {
		random = s.Ratio
	}
	if s := tc.ClientSampling; s != nil {
		client = s.Ratio
	}
	return callSampler{random: sdktrace.TraceIDRatioBased(random), client: sdktrace.TraceIDRatioBased(client)},
		fmt.Sprintf("randomSampling %g, clientSampling %g", random, client), nil
}

// callSampler decides which calls are traced, as agentgateway's
// randomSampling and clientSampling: a call that came without a trace
// context by random, one that came with a sampled one by client; a
// context flagged not sampled is followed (the client decided), and a
// call's span to its target follows the call's own. Ratios are applied
// to the trace id, so every party to a trace that samples the same ratio
// decides alike.
type callSampler struct {
	random, client sdktrace.Sampler
}

// ShouldSample decides for one span, by its parent.
func (s callSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	psc := trace.SpanContextFromContext(p.ParentContext)
	switch {
	case !psc.IsValid():
		return s.random.ShouldSample(p)
	case !psc.IsSampled():
		return sdktrace.SamplingResult{Decision: sdktrace.Drop, Tracestate: psc.TraceState()}
	case psc.IsRemote():
		return s.client.ShouldSample(p)
	}
	return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample, Tracestate: psc.TraceState()}
}

// Description names the sampler, as the SDK logs it.
func (s callSampler) Description() string {
	return "tailgate{random:" + s.random.Description() + ",client:" + s.client.Description() + "}"
}

// shutdown flushes the spans not yet exported, for up to
// traceFlushTimeout, and stops the exporter. A flush that fails (the
// collector is down) is logged: the gateway's shutdown goes on.
func (t *tracing) shutdown(ctx context.Context) {
	if t == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, traceFlushTimeout)
	defer cancel()
	err := t.provider.Shutdown(ctx)
	if err == nil {
		err = t.exporter.failing()
	}
	if err != nil {
		t.log.Warn("tracing: spans not all exported at shutdown", "err", err)
	}
}

// loggedExporter is the OTLP exporter with its failures on the gateway's
// log, at most a line a minute, rather than on the SDK's global error
// handler (a bare line on stderr).
type loggedExporter struct {
	sdktrace.SpanExporter
	log *slog.Logger

	mu sync.Mutex
	// lastErr is the latest export's error; failed counts the failures
	// since the last line about them, logged at lastLogged.
	lastErr    error
	failed     int
	lastLogged time.Time
}

// ExportSpans exports spans, logging a failure.
func (e *loggedExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		if e.lastErr != nil {
			e.log.Info("tracing: spans exported again")
		}
		e.lastErr, e.failed = nil, 0
		return nil
	}
	e.lastErr, e.failed = err, e.failed+1
	if time.Since(e.lastLogged) >= time.Minute {
		e.log.Warn("tracing: spans not exported", "spans", len(spans), "failures", e.failed, "err", err)
		e.lastLogged, e.failed = time.Now(), 0
	}
	return nil
}

// failing is the latest export's error, nil if it succeeded.
func (e *loggedExporter) failing() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastErr
}

// targetPeer is what a call's span says of the target it goes to: how
// tailgate reaches it and, for a remote one, where.
type targetPeer struct {
	remote  bool
	address string
	port    int
}

// frontTracing is the tracer as one front uses it, with its targets.
type frontTracing struct {
	*tracing
	// peers are the backend's targets, by name.
	peers map[string]targetPeer
}

// forBackend is the tracer for a front of backend m; nil without one.
func (t *tracing) forBackend(m *MCPBackend) *frontTracing {
	if t == nil {
		return nil
	}
	ft := &frontTracing{tracing: t, peers: make(map[string]targetPeer, len(m.Targets))}
	for _, tg := range m.Targets {
		r, _ := tg.remote()
		if r == nil {
			ft.peers[tg.Name] = targetPeer{}
			continue
		}
		p := targetPeer{remote: true}
		if u, err := url.Parse(r.URL()); err == nil {
			p.address = u.Hostname()
			port, err := strconv.Atoi(u.Port())
			if err != nil {
				port = 80
				if u.Scheme == "https" {
					port = 443
				}
			}
			p.port = port
		}
		ft.peers[tg.Name] = p
	}
	return ft
}

// peerAttrs are the attributes of a span to target p (OpenTelemetry's
// network and server conventions).
func (p targetPeer) peerAttrs() []attribute.KeyValue {
	if !p.remote {
		return []attribute.KeyValue{attribute.String("network.transport", "pipe")}
	}
	attrs := []attribute.KeyValue{attribute.String("network.transport", "tcp"), attribute.String("network.protocol.name", "http")}
	if p.address != "" {
		attrs = append(attrs, attribute.String("server.address", p.address), attribute.Int("server.port", p.port))
	}
	return attrs
}
