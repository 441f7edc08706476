package gateway

import (
	"context"
	"log/slog"
)

// quietHandler passes on only records at or above min. go-sdk logs every
// session connect and disconnect at info level (including the throwaway
// sessions of clients' server/discover probes); tailgate logs its own
// session events, so go-sdk gets a logger that keeps only its warnings.
type quietHandler struct {
	slog.Handler
	min slog.Level
}

func quiet(l *slog.Logger, min slog.Level) *slog.Logger {
	return slog.New(quietHandler{Handler: l.Handler(), min: min})
}

func (h quietHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= h.min && h.Handler.Enabled(ctx, level)
}

func (h quietHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return quietHandler{Handler: h.Handler.WithAttrs(attrs), min: h.min}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{Handler: h.Handler.WithGroup(name), min: h.min}
}
