package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/gateway/audit"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest/otlptest"
)

// tracingConfig is a route whose policy refuses the env tool, traced to
// the collector at ENDPOINT over PROTOCOL, sampled as SAMPLING says.
const tracingConfig = `
config:
  tracing:
    otlpEndpoint: ENDPOINT
    otlpProtocol: PROTOCOL
    headers: {x-collector-key: s3cret}
SAMPLING
  audit: {file: "AUDIT"}
binds:
- port: 3000
  listeners:
  - routes:
    - name: team
      policies:
        mcpAuthorization:
          rules: ['mcp.tool.name != "env"']
      backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: DEMO}
`

// A client's trace context, as it would send it.
const (
	clientTrace      = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpan       = "00f067aa0ba902b7"
	clientTraceparnt = "00-" + clientTrace + "-" + clientSpan + "-01"
)

// tracedGateway is a gateway whose config.tracing exports to an OTLP
// receiver of the test's, with its log and audit trail.
type tracedGateway struct {
	s     *Server
	base  string
	rcv   *otlptest.Receiver
	log   *syncBuffer
	trail string
}

// startTraced serves tracingConfig over protocol with sampling (YAML
// lines under config.tracing, or "") and a short batch delay
// (OTEL_BSP_SCHEDULE_DELAY, the SDK's own variable).
func startTraced(t *testing.T, protocol, sampling string) *tracedGateway {
	t.Helper()
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
	tg := &tracedGateway{rcv: otlptest.Start(t), log: &syncBuffer{}, trail: filepath.Join(t.TempDir(), "audit.jsonl")}
	endpoint := tg.rcv.GRPCEndpoint
	if protocol == "http" {
		endpoint = tg.rcv.HTTPEndpoint
	}
	y := strings.NewReplacer("ENDPOINT", endpoint, "PROTOCOL", protocol, "SAMPLING", sampling, "AUDIT", tg.trail).Replace(tracingConfig)
	tg.s, tg.base = serveLoopbackOpts(t, y, Options{Logger: slog.New(slog.NewTextHandler(tg.log, nil))})
	return tg
}

// callMeta calls the demo's meta tool with meta, and returns the _meta the
// child got.
func callMeta(t *testing.T, cs *mcp.ClientSession, meta mcp.Meta) map[string]any {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "meta", Meta: meta})
	if err != nil {
		t.Fatal(err)
	}
	if res.IsError {
		t.Fatalf("meta: %v", res.Content)
	}
	out, _ := res.StructuredContent.(map[string]any)
	got, _ := out["meta"].(map[string]any)
	return got
}

// byName finds the span named name of kind in spans.
func byName(t *testing.T, spans []otlptest.Span, kind, name string) otlptest.Span {
	t.Helper()
	for _, s := range spans {
		if s.Kind == kind && s.Name == name {
			return s
		}
	}
	t.Fatalf("no %s span %q in:\n%s", kind, name, otlptest.Describe(spans))
	return otlptest.Span{}
}

// checkAttrs fails for each attribute of want that s does not have with
// that value.
func checkAttrs(t *testing.T, s otlptest.Span, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if got, ok := s.Attrs[k]; !ok || got != v {
			t.Errorf("span %q: %s = %v (present %v), want %v", s.Name, k, got, ok, v)
		}
	}
}

// A call makes two spans, exported over gRPC or HTTP to a real collector
// (decoded here from the wire): the request at the gateway, continuing
// the client's trace from _meta, with MCP's attributes, the route, the
// decision and its rule, and the outcome; and its child, the call to the
// stdio target. The child process gets the gateway's context in its
// _meta (the client's tracestate and baggage kept), the access log line
// and the audit record name the trace, and the collector gets the
// configured header.
func TestTraces(t *testing.T) {
	for _, protocol := range []string{"grpc", "http"} {
		t.Run(protocol, func(t *testing.T) {
			tg := startTraced(t, protocol, "    randomSampling: true")
			cs := connect(t, tg.base+"/mcp")
			defer cs.Close()
			got := callMeta(t, cs, mcp.Meta{"traceparent": clientTraceparnt, "tracestate": "congo=t61rcWkgMzE", "baggage": "user=alice", "example.com/k": "v"})
			spans := tg.rcv.Wait(t, 2, 10*time.Second, func(s otlptest.Span) bool { return s.TraceID == clientTrace })
			t.Logf("the collector got:\n%s", otlptest.Describe(spans))
			call := byName(t, spans, "server", "tools/call meta")
			target := byName(t, spans, "client", "tools/call meta")
			if call.ParentSpanID != clientSpan || target.ParentSpanID != call.SpanID {
				t.Errorf("parents: call %s (want the client's %s), target %s (want the call's %s)", call.ParentSpanID, clientSpan, target.ParentSpanID, call.SpanID)
			}
			if call.Via != protocol || call.Service != "tailgate" || call.Status != "unset" || call.Start.After(target.Start) || call.End.Before(target.End) {
				t.Errorf("call span: via %s, service %s, status %s, %v–%v around %v–%v", call.Via, call.Service, call.Status, call.Start, call.End, target.Start, target.End)
			}
			checkAttrs(t, call, map[string]any{
				"mcp.method.name": "tools/call", "gen_ai.tool.name": "meta", "gen_ai.operation.name": "execute_tool",
				"mcp.protocol.version": "2025-11-25", "network.transport": "tcp", "client.address": "127.0.0.1",
				"tailgate.route": "team", "tailgate.target": "demo", "tailgate.decision": "allow",
				"tailgate.rule": "binds[0].listeners[0].routes[0].policies.mcpAuthorization.rules[0]", "tailgate.outcome": "ok",
			})
			for _, k := range []string{"jsonrpc.request.id", "mcp.session.id", "client.port"} {
				if _, ok := call.Attrs[k]; !ok {
					t.Errorf("call span has no %s", k)
				}
			}
			checkAttrs(t, target, map[string]any{"mcp.method.name": "tools/call", "gen_ai.tool.name": "meta",
				"network.transport": "pipe", "tailgate.target": "demo", "tailgate.outcome": "ok"})

			want := map[string]any{"traceparent": "00-" + clientTrace + "-" + target.SpanID + "-01",
				"tracestate": "congo=t61rcWkgMzE", "baggage": "user=alice", "example.com/k": "v"}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("the child's _meta.%s = %v, want %v (all: %v)", k, got[k], v, got)
				}
			}
			if ex := tg.rcv.Exports(); len(ex) == 0 || !strings.Contains(strings.Join(ex[0].Headers["x-collector-key"], ","), "s3cret") {
				t.Errorf("exports did not carry config.tracing.headers: %+v", ex)
			}
			waitFor(t, "the access log line", func() bool { return strings.Contains(tg.log.String(), "trace_id="+clientTrace) })
			recs := readTrail(t, tg.trail)
			if r := findRecord(recs, func(r audit.Record) bool { return r.Name == "meta" }); r == nil || r.TraceID != clientTrace {
				t.Errorf("audit record: %+v", r)
			}
		})
	}
}

// traceHeaders sets headers on every request a client makes.
type traceHeaders map[string]string

func (h traceHeaders) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h {
		r.Header.Set(k, v)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// A trace context in the HTTP headers is continued when _meta has none;
// with both, _meta's is the parent (it is the message's own, which HTTP
// retries and streams do not change) and the headers' a link.
func TestTraceContextFromHeaders(t *testing.T) {
	tg := startTraced(t, "grpc", "")
	const headerTrace, headerSpan = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	client := &http.Client{Transport: traceHeaders{"Traceparent": "00-" + headerTrace + "-" + headerSpan + "-01"}}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test-client"}, nil).Connect(context.Background(),
		&mcp.StreamableClientTransport{Endpoint: tg.base + "/mcp", HTTPClient: client}, legacySession)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()

	got := callMeta(t, cs, nil)
	spans := tg.rcv.Wait(t, 2, 10*time.Second, func(s otlptest.Span) bool { return s.TraceID == headerTrace })
	call := byName(t, spans, "server", "tools/call meta")
	if call.ParentSpanID != headerSpan {
		t.Errorf("parent %s, want the header's %s", call.ParentSpanID, headerSpan)
	}
	if tp, _ := got["traceparent"].(string); !strings.HasPrefix(tp, "00-"+headerTrace+"-") {
		t.Errorf("the child got traceparent %q", tp)
	}

	callMeta(t, cs, mcp.Meta{"traceparent": clientTraceparnt})
	spans = tg.rcv.Wait(t, 2, 10*time.Second, func(s otlptest.Span) bool { return s.TraceID == clientTrace })
	call = byName(t, spans, "server", "tools/call meta")
	if call.ParentSpanID != clientSpan || len(call.Links) != 1 || call.Links[0].SpanID != headerSpan || call.Links[0].TraceID != headerTrace {
		t.Errorf("with both: parent %s (want %s), links %+v (want the header's)", call.ParentSpanID, clientSpan, call.Links)
	}
}

// A denied call is a span with the decision, its rule and an error
// status, and no call to a target; a list says how many items policy
// filtered out.
func TestTraceDenied(t *testing.T) {
	tg := startTraced(t, "grpc", "")
	cs := connect(t, tg.base+"/mcp")
	defer cs.Close()
	ctx := context.Background()
	meta := mcp.Meta{"traceparent": clientTraceparnt}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "env", Meta: meta}); err == nil {
		t.Fatal("env was allowed")
	}
	if _, err := cs.ListTools(ctx, &mcp.ListToolsParams{Meta: meta}); err != nil {
		t.Fatal(err)
	}
	// The denied call's span, and the list's with its call to the target.
	spans := tg.rcv.Wait(t, 3, 10*time.Second, func(s otlptest.Span) bool { return s.TraceID == clientTrace })
	t.Logf("the collector got:\n%s", otlptest.Describe(spans))
	denied := byName(t, spans, "server", "tools/call env")
	if denied.Status != "error" || !strings.Contains(denied.StatusMessage, "rule") {
		t.Errorf("denied call: status %s %q", denied.Status, denied.StatusMessage)
	}
	checkAttrs(t, denied, map[string]any{"tailgate.decision": "deny", "tailgate.outcome": "denied",
		"tailgate.rule": "binds[0].listeners[0].routes[0].policies.mcpAuthorization.rules", "error.type": "-32602", "rpc.response.status_code": "-32602"})
	list := byName(t, spans, "server", "tools/list")
	checkAttrs(t, list, map[string]any{"tailgate.list.filtered": int64(1), "tailgate.outcome": "ok"})
	for _, s := range spans {
		if s.Kind == "client" && s.Name == "tools/call env" {
			t.Errorf("a denied call reached its target: %+v", s)
		}
	}
}

// Which calls are traced: by default (agentgateway's), those that come
// with a sampled trace context; randomSampling adds the others;
// clientSampling: false leaves the first out; a context flagged not
// sampled is followed. Every call's target gets a trace context, sampled
// or not, so that its own spans (or logs) join the client's trace. The
// gateway's Shutdown flushes what was not exported yet.
func TestTraceSampling(t *testing.T) {
	notSampled := "00-" + clientTrace + "-" + clientSpan + "-00"
	for _, tc := range []struct {
		name, sampling string
		meta           mcp.Meta
		spans          int
		flags          string // of the traceparent the child got
	}{
		{"default, no context", "", nil, 0, "-00"},
		{"default, sampled context", "", mcp.Meta{"traceparent": clientTraceparnt}, 2, "-01"},
		{"default, context not sampled", "", mcp.Meta{"traceparent": notSampled}, 0, "-00"},
		{"randomSampling, no context", "    randomSampling: true", nil, 2, "-01"},
		{"randomSampling 0.0, no context", "    randomSampling: 0.0", nil, 0, "-00"},
		{"clientSampling false", "    randomSampling: true\n    clientSampling: false", mcp.Meta{"traceparent": clientTraceparnt}, 0, "-00"},
		{"randomSampling true, context not sampled", "    randomSampling: true", mcp.Meta{"traceparent": notSampled}, 0, "-00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := startTraced(t, "grpc", tc.sampling)
			cs := connect(t, tg.base+"/mcp")
			got := callMeta(t, cs, tc.meta)
			cs.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := tg.s.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			spans := tg.rcv.Spans()
			var calls int
			for _, s := range spans {
				if strings.HasPrefix(s.Name, "tools/call") {
					calls++
				}
			}
			if calls != tc.spans {
				t.Errorf("%d spans of the call, want %d:\n%s", calls, tc.spans, otlptest.Describe(spans))
			}
			tp, _ := got["traceparent"].(string)
			if !strings.HasSuffix(tp, tc.flags) || tc.meta != nil && !strings.HasPrefix(tp, "00-"+clientTrace+"-") {
				t.Errorf("the child got traceparent %q", tp)
			}
		})
	}
}

// Tracing off, nothing changes: a client's trace context reaches the
// child as the client sent it, none is added, and no line names a trace
// the gateway did not make.
func TestTracingOff(t *testing.T) {
	log := &syncBuffer{}
	_, base := serveLoopbackOpts(t, demoConfig, Options{Logger: slog.New(slog.NewTextHandler(log, nil))})
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	if got := callMeta(t, cs, nil); got["traceparent"] != nil {
		t.Errorf("the child got a trace context: %v", got)
	}
	if got := callMeta(t, cs, mcp.Meta{"traceparent": clientTraceparnt, "TraceState": "a=b"}); got["traceparent"] != clientTraceparnt || got["TraceState"] != "a=b" {
		t.Errorf("the client's context did not pass as it was: %v", got)
	}
	waitFor(t, "the access log lines", func() bool { return strings.Count(log.String(), `msg="mcp call"`) >= 2 })
	if strings.Contains(log.String(), "trace_id=") {
		t.Errorf("the access log names a trace:\n%s", log)
	}
}

// The standard OTEL_* variables configure what config.tracing leaves
// unset: the endpoint and protocol, the service name, the sampler; a
// value tailgate cannot honour is an error at start that names it, and
// OTEL_SDK_DISABLED turns tracing off.
func TestTracingEnvironment(t *testing.T) {
	rcv := otlptest.Start(t)
	const cfg = "config:\n  tracing: {TRACING}\n" + demoConfig
	for _, tc := range []struct {
		name, tracing string
		env           map[string]string
		spans         int    // of the call, exported
		service, err  string // service.name of the spans; New's error
	}{
		{"endpoint, protocol and service name", "randomSampling: true", map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.HTTPEndpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": "mcp-gateway"}, 2, "mcp-gateway", ""},
		{"traces endpoint wins", "randomSampling: true", map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": rcv.GRPCEndpoint}, 2, "tailgate", ""},
		{"sampler", "otlpEndpoint: " + rcv.GRPCEndpoint, map[string]string{"OTEL_TRACES_SAMPLER": "always_on"}, 2, "tailgate", ""},
		{"sampler off", "otlpEndpoint: " + rcv.GRPCEndpoint, map[string]string{"OTEL_TRACES_SAMPLER": "always_off"}, 0, "", ""},
		{"config's sampling wins", "{otlpEndpoint: " + rcv.GRPCEndpoint + ", randomSampling: true}", map[string]string{"OTEL_TRACES_SAMPLER": "always_off"}, 2, "tailgate", ""},
		{"disabled", "randomSampling: true", map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": rcv.GRPCEndpoint}, 0, "", ""},
		{"json protocol", "randomSampling: true", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, 0, "",
			`config.tracing: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/json": tailgate exports grpc or http/protobuf`},
		{"unknown sampler", "", map[string]string{"OTEL_TRACES_SAMPLER": "sometimes"}, 0, "",
			`config.tracing: OTEL_TRACES_SAMPLER="sometimes" is not a sampler tailgate knows (want always_on, always_off, traceidratio or parentbased_*)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			before := len(rcv.Spans())
			y := strings.ReplaceAll(cfg, "TRACING", strings.TrimSuffix(strings.TrimPrefix(tc.tracing, "{"), "}"))
			parsed, err := Parse("test.yaml", []byte(strings.ReplaceAll(y, "DEMO", demoBin)), newEnv(t))
			if err != nil {
				t.Fatal(err)
			}
			if tc.err != "" {
				if _, err := New(parsed, Options{Logger: slog.New(slog.DiscardHandler)}); err == nil || err.Error() != tc.err {
					t.Fatalf("New: %v, want %s", err, tc.err)
				}
				return
			}
			s, base := serveLoopbackOpts(t, y, Options{})
			cs := connect(t, base+"/mcp")
			got := callMeta(t, cs, nil)
			cs.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := s.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			spans := rcv.Spans()[before:]
			if len(spans) != tc.spans {
				t.Fatalf("%d spans, want %d:\n%s", len(spans), tc.spans, otlptest.Describe(spans))
			}
			for _, s := range spans {
				if s.Service != tc.service {
					t.Errorf("service.name %q, want %q", s.Service, tc.service)
				}
			}
			if _, traced := got["traceparent"]; traced == (tc.env["OTEL_SDK_DISABLED"] != "") {
				t.Errorf("the child's _meta: %v", got)
			}
		})
	}
}

// Shutdown sends the spans the batch still holds, and does not wait for
// a collector that is down for longer than it is given.
func TestTracingShutdown(t *testing.T) {
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "600000") // only Shutdown sends them
	rcv := otlptest.Start(t)
	for _, tc := range []struct {
		name, endpoint string
		spans          int
	}{
		{"flushed", rcv.GRPCEndpoint, 2},
		{"collector down", "http://127.0.0.1:1", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := &syncBuffer{}
			y := "config:\n  tracing: {otlpEndpoint: " + tc.endpoint + ", randomSampling: true}\n" + demoConfig
			s, base := serveLoopbackOpts(t, y, Options{Logger: slog.New(slog.NewTextHandler(log, nil))})
			cs := connect(t, base+"/mcp")
			callMeta(t, cs, nil)
			cs.Close()
			before := len(rcv.Spans())
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			begin := time.Now()
			if err := s.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			took := time.Since(begin)
			if got := len(rcv.Spans()) - before; got != tc.spans {
				t.Errorf("%d spans exported at shutdown, want %d", got, tc.spans)
			}
			if took > 3*time.Second {
				t.Errorf("shutdown took %v", took)
			}
			if tc.spans == 0 && !strings.Contains(log.String(), "spans not all exported at shutdown") {
				t.Errorf("no line says the spans were lost:\n%s", log)
			}
		})
	}
}

// Off, the trace stages cost a nil check each: no allocation on a call's
// path.
func TestTracingOffAllocatesNothing(t *testing.T) {
	c := &call{fs: &frontSession{f: &mcpFront{}}}
	var extra []slog.Attr
	if n := testing.AllocsPerRun(100, func() {
		c.startTrace()
		c.propagate()
		c.traceAnswer(nil)
		extra = c.endTrace(extra)
	}); n != 0 || extra != nil {
		t.Errorf("%v allocations per call, log attributes %v", n, extra)
	}
}

// A call the policy allows and a limit refuses is traced as the audit
// trail records it: denied by the limit, named by its config path, with
// the limit's error code.
func TestTraceLimited(t *testing.T) {
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
	rcv := otlptest.Start(t)
	y := `
config:
  tracing: {otlpEndpoint: ` + rcv.GRPCEndpoint + `}
binds:
- port: 3000
  listeners:
  - routes:
    - name: team
      policies:
        localRateLimit:
        - {maxTokens: 1, tokensPerFill: 1, fillInterval: 1h, match: 'mcp.method == "tools/call"'}
      backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: DEMO}
`
	_, base := serveLoopbackOpts(t, y, Options{})
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	for _, trace := range []string{strings.Repeat("1", 32), strings.Repeat("2", 32)} {
		cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "meta", Meta: mcp.Meta{"traceparent": "00-" + trace + "-" + clientSpan + "-01"}})
	}
	spans := rcv.Wait(t, 1, 10*time.Second, func(s otlptest.Span) bool { return s.TraceID == strings.Repeat("2", 32) && s.Kind == "server" })
	limited := spans[0]
	checkAttrs(t, limited, map[string]any{"tailgate.decision": "deny", "tailgate.rule": "binds[0].listeners[0].routes[0].policies.localRateLimit[0]",
		"tailgate.outcome": "limited", "error.type": "-32029"})
	if limited.Status != "error" || limited.StatusMessage == "" {
		t.Errorf("limited call: status %s %q", limited.Status, limited.StatusMessage)
	}
}
