package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// This file is the trace stages of a call (pipeline.go), when
// config.tracing is on (tracing.go): a span of the request at the
// gateway (kind server), a child span of its call to its target (kind
// client), with OpenTelemetry's MCP and GenAI attributes, the caller's
// identity, the decision and the outcome; the client's trace context is
// continued (from _meta, else the HTTP headers) and the gateway's is
// passed on in _meta, and to a remote target in its headers too.
//
// Tracing off, each stage is a nil check: no allocation, nothing read.

// callTrace is a call's spans.
type callTrace struct {
	ft *frontTracing
	// span is the request at the gateway; ctx holds it, and the client's
	// baggage.
	span trace.Span
	ctx  context.Context
	// target is the call to the request's target, from propagate until
	// its answer; nil for a request no single target serves, or once
	// ended.
	target trace.Span
	// code is the JSON-RPC error code of the call's answer, if an error.
	code string
}

// startTrace starts the call's span (the trace stage, before every
// other): its parent is the trace context of the request's _meta, else
// of its HTTP headers (traceparent, tracestate, baggage); with both, and
// different, the headers' is a link.
func (c *call) startTrace() bool {
	if ft := c.fs.f.tracing; ft != nil {
		c.trace = ft.startCall(c)
	}
	return true
}

// startCall starts the span of call c.
func (ft *frontTracing) startCall(c *call) *callTrace {
	ctx := ft.prop.Extract(context.Background(), propagation.HeaderCarrier(c.req.http.header))
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(c.start)}
	if meta := c.msg.Path("params", "_meta"); meta.Has() {
		fromHeaders := trace.SpanContextFromContext(ctx)
		ctx = ft.prop.Extract(ctx, metaCarrier{c.msg, meta})
		if sc := trace.SpanContextFromContext(ctx); fromHeaders.IsValid() && !sc.Equal(fromHeaders) {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: fromHeaders,
				Attributes: []attribute.KeyValue{attribute.String("tailgate.link", "http")}}))
		}
	}
	method := c.msg.MethodName()
	ctx, span := ft.tracer.Start(ctx, spanName(method, c.msg.String(c.msg.Path("params", "name"))), opts...)
	if span.IsRecording() {
		span.SetAttributes(requestAttrs(c, method)...)
	}
	return &callTrace{ft: ft, span: span, ctx: ctx}
}

// spanName is "{mcp.method.name} {tool or prompt}", as OpenTelemetry's
// MCP conventions name spans; just the method for others (a URI would
// make too many names).
func spanName(method, name string) string {
	if name != "" && (method == "tools/call" || method == "prompts/get") {
		return clip(method + " " + name)
	}
	return clip(method)
}

// requestAttrs are the attributes of the request's span: MCP's (method,
// id, session, protocol version, what it names), the transport's, the
// route and the caller (address, login, node, tags).
func requestAttrs(c *call, method string) []attribute.KeyValue {
	m := c.msg
	attrs := make([]attribute.KeyValue, 0, 16)
	attrs = append(attrs, attribute.String("mcp.method.name", clip(method)),
		attribute.String("network.transport", "tcp"), attribute.String("network.protocol.name", "http"),
		attribute.String("tailgate.route", c.fs.f.name))
	if m.ID.Has() {
		id := string(m.Bytes(m.ID))
		if strings.HasPrefix(id, `"`) {
			id = m.String(m.ID)
		}
		attrs = append(attrs, attribute.String("jsonrpc.request.id", clip(id)))
	}
	if id := c.fs.id; !c.fs.sessionless && id != "stateless" && id != "" {
		attrs = append(attrs, attribute.String("mcp.session.id", id))
	}
	if v := callProtocol(c); v != "" {
		attrs = append(attrs, attribute.String("mcp.protocol.version", clip(v)))
	}
	attrs = append(attrs, namedAttrs(method, m.String(m.Path("params", "name")), m.String(m.Path("params", "uri")))...)
	if src := c.req.src; src != nil {
		attrs = append(attrs, attribute.String("client.address", src.Address), attribute.Int("client.port", src.Port))
		if ts := src.Tailscale; ts != nil {
			attrs = append(attrs, attribute.String("tailgate.caller.login", ts.User.Login),
				attribute.String("tailgate.caller.node", ts.Node.Name), attribute.StringSlice("tailgate.caller.tags", ts.Node.Tags))
		}
	}
	return attrs
}

// namedAttrs are OpenTelemetry's attributes for what a request names: a
// tool (gen_ai.tool.name, gen_ai.operation.name execute_tool), a prompt
// or a resource.
func namedAttrs(method, name, uri string) []attribute.KeyValue {
	switch method {
	case "tools/call":
		if name != "" {
			return []attribute.KeyValue{attribute.String("gen_ai.tool.name", clip(name)), attribute.String("gen_ai.operation.name", "execute_tool")}
		}
	case "prompts/get":
		if name != "" {
			return []attribute.KeyValue{attribute.String("gen_ai.prompt.name", clip(name))}
		}
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		if uri != "" {
			return []attribute.KeyValue{attribute.String("mcp.resource.uri", clip(uri))}
		}
	}
	return nil
}

// callProtocol is the MCP version the request speaks: its _meta's (a
// 2026-07-28 request), else its Mcp-Protocol-Version header, else its
// session's (legacy SSE, whose posts carry no header).
func callProtocol(c *call) string {
	if v := c.msg.String(c.msg.Path("params", "_meta", jsonrpc.MetaProtocolVersion)); v != "" {
		return v
	}
	if v := c.req.http.header.Get("Mcp-Protocol-Version"); v != "" {
		return v
	}
	if c.bs == nil {
		return ""
	}
	var init struct {
		ProtocolVersion string `json:"protocolVersion"`
	}
	json.Unmarshal(c.bs.InitializeResult(), &init)
	return init.ProtocolVersion
}

// propagate passes the trace context on to the target (the stage before
// forward): a request one target serves gets a span of its own, child of
// the request's; the context (that span's, else the request's) goes in
// the message's _meta, and to a remote target in the HTTP headers too.
func (c *call) propagate() bool {
	if ct := c.trace; ct != nil {
		ct.toTarget(c)
	}
	return true
}

// toTarget starts the span of c's call to its target and passes its
// context on.
func (ct *callTrace) toTarget(c *call) {
	ctx, rt := ct.ctx, c.route
	var peer targetPeer
	if rt.Target != "" {
		peer = ct.ft.peers[rt.Target]
		method := c.msg.MethodName()
		ctx, ct.target = ct.ft.tracer.Start(ctx, spanName(method, rt.TargetName), trace.WithSpanKind(trace.SpanKindClient))
		if ct.target.IsRecording() {
			attrs := append(peer.peerAttrs(), attribute.String("mcp.method.name", clip(method)), attribute.String("tailgate.target", rt.Target))
			attrs = append(attrs, namedAttrs(method, rt.TargetName, rt.TargetName)...)
			ct.target.SetAttributes(attrs...)
		}
	}
	carrier := propagation.MapCarrier{}
	ct.ft.prop.Inject(ctx, carrier)
	if raw := withTraceMeta(c.msg, carrier); raw != nil {
		if m, err := jsonrpc.ParseMessage(raw); err == nil {
			c.msg = m
		}
	}
	if peer.remote {
		if c.opts.Headers == nil {
			c.opts.Headers = make(map[string]string, len(carrier))
		}
		for k, v := range carrier {
			c.opts.Headers[k] = v
		}
	}
}

// traceAnswer notes the call's answer (call.finish): its JSON-RPC error
// code, and the end of the call to its target.
func (c *call) traceAnswer(data []byte) {
	ct := c.trace
	if ct == nil {
		return
	}
	if c.outcome != outcomeOK && c.outcome != outcomeToolError {
		if m, err := jsonrpc.ParseMessage(data); err == nil && m.Error.Has() {
			ct.code = string(m.Bytes(m.Field(m.Error, "code")))
		}
	}
	if ct.target != nil {
		ct.end(ct.target, c.outcome, errText(c.err))
		ct.target = nil
	}
}

// endTrace ends the call's spans (after its stages, before record), the
// request's with the decision and the outcome, and returns the access
// log's attributes with the trace id.
func (c *call) endTrace(logAttrs []slog.Attr) []slog.Attr {
	ct := c.trace
	if ct == nil {
		return logAttrs
	}
	if ct.target != nil { // cancelled, or the client left
		ct.end(ct.target, c.outcome, errText(c.err))
		ct.target = nil
	}
	why := errText(c.err)
	if s := ct.span; s.IsRecording() {
		attrs, refused := decisionAttrs(c)
		if refused != "" {
			why = refused
		}
		if c.route.Target != "" {
			attrs = append(attrs, attribute.String("tailgate.target", c.route.Target))
		}
		if strings.HasSuffix(c.msg.MethodName(), "/list") {
			attrs = append(attrs, attribute.Int("tailgate.list.filtered", int(c.filtered.Load())))
		}
		s.SetAttributes(attrs...)
	}
	ct.end(ct.span, c.outcome, why)
	return append(logAttrs, slog.String("trace_id", ct.span.SpanContext().TraceID().String()))
}

// decisionAttrs are what decided call c, for its span: the policy's
// decision and rule, or the limit that refused a call the policy allowed
// (as its audit record says); refused is the reason of a refusal.
func decisionAttrs(c *call) (attrs []attribute.KeyValue, refused string) {
	attrs = make([]attribute.KeyValue, 0, 6)
	if ref := c.lim.refused; ref != nil {
		return append(attrs, attribute.String("tailgate.decision", "deny"), attribute.String("tailgate.rule", ref.path),
			attribute.String("tailgate.reason", ref.reason)), ref.reason
	}
	if !c.judged {
		return attrs, ""
	}
	attrs = append(attrs, attribute.String("tailgate.decision", decisionOf(c.decision)))
	if c.decision.Rule != "" {
		attrs = append(attrs, attribute.String("tailgate.rule", c.decision.Rule))
	}
	if !c.decision.Allow {
		refused = c.decision.Reason()
		attrs = append(attrs, attribute.String("tailgate.reason", refused))
	}
	return attrs, refused
}

// end ends span s of a call that ended with outcome o: error.type and an
// error status (with why) for any outcome but ok, as OpenTelemetry's MCP
// conventions ask, the JSON-RPC error code when the answer was an error.
func (ct *callTrace) end(s trace.Span, o outcome, why string) {
	if s.IsRecording() {
		attrs := []attribute.KeyValue{attribute.String("tailgate.outcome", string(o))}
		if ct.code != "" {
			attrs = append(attrs, attribute.String("rpc.response.status_code", ct.code))
		}
		if o != outcomeOK {
			errType := string(o)
			if ct.code != "" {
				errType = ct.code
			}
			attrs = append(attrs, attribute.String("error.type", errType))
			s.SetStatus(codes.Error, why)
		}
		s.SetAttributes(attrs...)
	}
	s.End()
}

// errText is err's message, clipped as the log clips it; "" for nil.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return clipTo(err.Error(), maxLoggedError)
}

// traceID is the call's trace id, for its audit record: its span's when
// tracing is on, else the client's traceparent's (HTTP header, else
// _meta).
func (c *call) traceID() string {
	if ct := c.trace; ct != nil {
		if sc := ct.span.SpanContext(); sc.IsValid() {
			return sc.TraceID().String()
		}
	}
	if id := traceIDOf(c.req.http.header.Get("Traceparent")); id != "" {
		return id
	}
	return traceIDOf(c.msg.String(c.msg.Path("params", "_meta", "traceparent")))
}
