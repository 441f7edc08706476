package relay_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/tailgate-dev/tailgate/gateway/relay"
)

// BenchmarkChildStart: a session's child started (guard, confinement,
// exec) and initialized, then stopped.
func BenchmarkChildStart(b *testing.B) {
	bk, err := relay.NewBackend("bench", []relay.Target{{Name: "demo", Command: demoBin}}, relay.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer bk.Close()
	for b.Loop() {
		s, err := bk.Open(context.Background(), relay.OpenParams{ID: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}
