package gateway

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/tailgate-dev/tailgate/gateway/gatewaytest/otlptest"
)

// BenchmarkTracedToolCall is BenchmarkRelayedToolCall's call with tracing
// off and on, side by side: "off" is the config without config.tracing
// (its figures must be BenchmarkRelayedToolCall's: tracing off costs
// nothing); "on" traces every call (randomSampling: true) to an OTLP
// receiver over gRPC in this process, so B/op and allocs/op include the
// receiver's decoding; "unsampled" has tracing on and the call not
// sampled (the trace context is still made and passed to the child).
//
//	go test -run '^$' -bench TracedToolCall -benchmem -benchtime=2000x -count=3 -timeout 10m ./gateway/
func BenchmarkTracedToolCall(b *testing.B) {
	if n := benchClientAllocs(b); n != 0 {
		b.Fatalf("the benchmark client allocates %v times per call", n)
	}
	rcv := otlptest.Start(b)
	traced := func(sampling string) string {
		return "config:\n  tracing: {otlpEndpoint: " + rcv.GRPCEndpoint + ", randomSampling: " + sampling + "}\n" + demoConfig
	}
	for _, tc := range []struct{ name, config string }{
		{"off", demoConfig},
		{"on", traced("true")},
		{"unsampled", traced("false")},
	} {
		b.Run(tc.name, func(b *testing.B) {
			// A text handler, as startBenchGateway's: the access log is
			// part of what a call costs.
			_, base := serveLoopbackOpts(b, tc.config, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			benchCallsTo(b, strings.TrimPrefix(base, "http://"))
		})
	}
}
