package gateway

import (
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkAuditedToolCall is BenchmarkRelayedToolCall's call with the
// audit trail off and on, side by side: "off" is the config without
// config.audit (its figures must be BenchmarkRelayedToolCall's: the trail
// off costs nothing); "digest" writes a record per call (and per
// connection) to a file, with the arguments' digest; "arguments" keeps
// the arguments too, one field redacted.
//
//	go test -run '^$' -bench AuditedToolCall -benchmem -benchtime=2000x -count=3 -timeout 10m ./gateway/
func BenchmarkAuditedToolCall(b *testing.B) {
	if n := benchClientAllocs(b); n != 0 {
		b.Fatalf("the benchmark client allocates %v times per call", n)
	}
	audited := func(extra string) string {
		file := filepath.Join(b.TempDir(), "audit.jsonl")
		return "config:\n  audit: {file: " + file + extra + "}\n" + demoConfig
	}
	for _, tc := range []struct{ name, config string }{
		{"off", demoConfig},
		{"digest", audited("")},
		{"arguments", audited(", arguments: {include: true, redact: [password]}")},
	} {
		b.Run(tc.name, func(b *testing.B) {
			_, base := serveLoopbackOpts(b, tc.config, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			benchCallsTo(b, strings.TrimPrefix(base, "http://"))
		})
	}
}
