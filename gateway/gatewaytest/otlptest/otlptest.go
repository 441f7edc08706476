// Package otlptest is an OpenTelemetry collector for tests: a real OTLP
// receiver, over gRPC (the collector's TraceService) and over HTTP
// (protobuf ExportTraceServiceRequest posted to /v1/traces), on
// 127.0.0.1, that decodes the wire format and keeps the spans for the
// test to check. It imports nothing of tailgate's, so that the gateway's
// own tests can use it as well as gatewaytest's users.
package otlptest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// Span is one span as the receiver decoded it.
type Span struct {
	// Via is how it came: "grpc" or "http".
	Via string
	// Service is its resource's service.name; Scope its instrumentation
	// scope's name.
	Service, Scope string
	// TraceID, SpanID and ParentSpanID are lowercase hex; ParentSpanID is
	// "" for a root span.
	TraceID, SpanID, ParentSpanID string
	TraceState                    string
	Name                          string
	// Kind is "server", "client", "internal", "producer" or "consumer".
	Kind string
	// Attrs are its attributes: string, int64, float64, bool or []any.
	Attrs map[string]any
	// Status is "unset", "ok" or "error", with StatusMessage.
	Status, StatusMessage string
	Links                 []Link
	Start, End            time.Time
}

// Link is a span's link to another span.
type Link struct {
	TraceID, SpanID string
	Attrs           map[string]any
}

// Export is one export request as it arrived: its headers (gRPC metadata
// or HTTP headers, keys lower-cased) and how many spans it held.
type Export struct {
	Via     string
	Headers map[string][]string
	Spans   int
}

// Receiver is an OTLP receiver on 127.0.0.1.
type Receiver struct {
	// GRPCEndpoint is the gRPC receiver's URL (http://127.0.0.1:port);
	// HTTPEndpoint the HTTP receiver's base URL, which takes
	// POST /v1/traces.
	GRPCEndpoint, HTTPEndpoint string

	mu      sync.Mutex
	spans   []Span
	exports []Export
	changed chan struct{} // closed and replaced when spans come
}

// Start starts both receivers, stopped when the test ends.
func Start(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{changed: make(chan struct{})}
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, &traceService{r: r})
	go gs.Serve(gln)
	t.Cleanup(gs.Stop)
	r.GRPCEndpoint = "http://" + gln.Addr().String()

	hln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.serveHTTP)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(hln)
	t.Cleanup(func() { hs.Close() })
	r.HTTPEndpoint = "http://" + hln.Addr().String()
	return r
}

// traceService is the gRPC collector's TraceService.
type traceService struct {
	coltracepb.UnimplementedTraceServiceServer
	r *Receiver
}

// Export takes one batch of spans.
func (s *traceService) Export(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.r.add("grpc", map[string][]string(md), req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// serveHTTP takes one batch of spans over OTLP/HTTP (protobuf, gzipped
// or not), answering as a collector does.
func (r *Receiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		http.Error(w, "want application/x-protobuf, got "+ct, http.StatusUnsupportedMediaType)
		return
	}
	var body io.Reader = http.MaxBytesReader(w, req.Body, 64<<20)
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var msg coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &msg); err != nil {
		http.Error(w, "not an ExportTraceServiceRequest: "+err.Error(), http.StatusBadRequest)
		return
	}
	headers := make(map[string][]string, len(req.Header))
	for k, v := range req.Header {
		headers[strings.ToLower(k)] = v
	}
	r.add("http", headers, &msg)
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// add decodes and keeps the spans of one export.
func (r *Receiver) add(via string, headers map[string][]string, req *coltracepb.ExportTraceServiceRequest) {
	var spans []Span
	for _, rs := range req.GetResourceSpans() {
		service, _ := value(findAttr(rs.GetResource().GetAttributes(), "service.name")).(string)
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				spans = append(spans, decode(via, service, ss.GetScope().GetName(), sp))
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spans = append(r.spans, spans...)
	r.exports = append(r.exports, Export{Via: via, Headers: headers, Spans: len(spans)})
	close(r.changed)
	r.changed = make(chan struct{})
}

// decode is sp as a Span.
func decode(via, service, scope string, sp *tracepb.Span) Span {
	s := Span{
		Via: via, Service: service, Scope: scope,
		TraceID: hex.EncodeToString(sp.GetTraceId()), SpanID: hex.EncodeToString(sp.GetSpanId()),
		TraceState: sp.GetTraceState(), Name: sp.GetName(),
		Kind:   strings.ToLower(strings.TrimPrefix(sp.GetKind().String(), "SPAN_KIND_")),
		Attrs:  attrs(sp.GetAttributes()),
		Status: strings.ToLower(strings.TrimPrefix(sp.GetStatus().GetCode().String(), "STATUS_CODE_")), StatusMessage: sp.GetStatus().GetMessage(),
		Start: time.Unix(0, int64(sp.GetStartTimeUnixNano())), End: time.Unix(0, int64(sp.GetEndTimeUnixNano())),
	}
	if len(sp.GetParentSpanId()) > 0 {
		s.ParentSpanID = hex.EncodeToString(sp.GetParentSpanId())
	}
	for _, l := range sp.GetLinks() {
		s.Links = append(s.Links, Link{TraceID: hex.EncodeToString(l.GetTraceId()), SpanID: hex.EncodeToString(l.GetSpanId()), Attrs: attrs(l.GetAttributes())})
	}
	return s
}

func attrs(kvs []*commonpb.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = value(kv.GetValue())
	}
	return m
}

func findAttr(kvs []*commonpb.KeyValue, key string) *commonpb.AnyValue {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return kv.GetValue()
		}
	}
	return nil
}

// value is an attribute's value as a Go value.
func value(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_BytesValue:
		return x.BytesValue
	case *commonpb.AnyValue_ArrayValue:
		var out []any
		for _, e := range x.ArrayValue.GetValues() {
			out = append(out, value(e))
		}
		return out
	}
	return nil
}

// Spans are the spans received so far, in the order they came.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Exports are the export requests received so far.
func (r *Receiver) Exports() []Export {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Export(nil), r.exports...)
}

// Wait waits up to timeout for spans that match to come, and returns them
// all; the test fails if fewer than n came.
func (r *Receiver) Wait(t testing.TB, n int, timeout time.Duration, match func(Span) bool) []Span {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		var found []Span
		for _, s := range r.spans {
			if match(s) {
				found = append(found, s)
			}
		}
		changed := r.changed
		r.mu.Unlock()
		if len(found) >= n {
			return found
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("%d of %d spans after %v; received:\n%s", len(found), n, timeout, Describe(r.Spans()))
			return nil
		}
	}
}

// Describe is spans as the receiver shows them: one per line, with its
// ids, kind, status and attributes (sorted), for test logs and failures.
func Describe(spans []Span) string {
	var b bytes.Buffer
	for _, s := range spans {
		parent := s.ParentSpanID
		if parent == "" {
			parent = "-"
		}
		fmt.Fprintf(&b, "%s %q trace=%s span=%s parent=%s kind=%s status=%s", s.Via, s.Name, s.TraceID, s.SpanID, parent, s.Kind, s.Status)
		if s.StatusMessage != "" {
			fmt.Fprintf(&b, " (%s)", s.StatusMessage)
		}
		fmt.Fprintf(&b, " %s service=%s\n", s.End.Sub(s.Start).Round(time.Microsecond), s.Service)
		keys := make([]string, 0, len(s.Attrs))
		for k := range s.Attrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "    %s = %v\n", k, s.Attrs[k])
		}
		for _, l := range s.Links {
			fmt.Fprintf(&b, "    link trace=%s span=%s %v\n", l.TraceID, l.SpanID, l.Attrs)
		}
	}
	return b.String()
}
