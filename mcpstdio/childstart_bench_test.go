package mcpstdio_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/tailgate-dev/tailgate/mcpstdio"
)

// BenchmarkChildStart: a session's child started (guard, confinement,
// exec) and initialized, then stopped.
func BenchmarkChildStart(b *testing.B) {
	bk, err := mcpstdio.NewBackend("bench", []mcpstdio.Target{{Name: "demo", Command: demoBin}}, mcpstdio.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer bk.Close()
	for b.Loop() {
		s, err := bk.Open(context.Background(), mcpstdio.OpenParams{ID: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}
