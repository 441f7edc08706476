package mcpstdio

import (
	"context"
	"log/slog"
	"strings"
)

// Known secret values (Options.Secrets: the auth key) must not reach the
// gateway's log or a client through what a child prints. A child that got
// hold of one anyway (a key file it could read) and writes it on stderr
// has it replaced with redacted in the logged "child stderr" lines and in
// the exit error that quotes its last lines. Values shorter than
// minSecretLen are left alone: replacing them would garble ordinary text,
// and they are no keys. A secret cut in two by the line length limits
// (StderrMaxLine, 200 bytes in an exit error) may show its first part.

const (
	redacted     = "[redacted]"
	minSecretLen = 8
)

// redactor replaces secret values in strings.
type redactor struct{ r *strings.Replacer }

func newRedactor(secrets []string) *redactor {
	var pairs []string
	for _, s := range secrets {
		if len(s) >= minSecretLen {
			pairs = append(pairs, s, redacted)
		}
	}
	if len(pairs) == 0 {
		return nil
	}
	return &redactor{strings.NewReplacer(pairs...)}
}

func (r *redactor) string(s string) string {
	if r == nil {
		return s
	}
	return r.r.Replace(s)
}

// RedactLogger is log with every string in its records (message,
// attributes, errors, groups) redacted; log itself when there is nothing
// to redact.
func RedactLogger(log *slog.Logger, secrets []string) *slog.Logger {
	r := newRedactor(secrets)
	if r == nil {
		return log
	}
	return slog.New(&redactHandler{h: log.Handler(), r: r})
}

type redactHandler struct {
	h slog.Handler
	r *redactor
}

func (h *redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.h.Enabled(ctx, l) }

func (h *redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.string(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.h.Handle(ctx, out)
}

func (h *redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = h.attr(a)
	}
	return &redactHandler{h: h.h.WithAttrs(red), r: h.r}
}

func (h *redactHandler) WithGroup(name string) slog.Handler {
	return &redactHandler{h: h.h.WithGroup(name), r: h.r}
}

func (h *redactHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.r.string(v.String()))
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, m := range g {
			red[i] = h.attr(m)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			if s := err.Error(); h.r.string(s) != s {
				return slog.String(a.Key, h.r.string(s))
			}
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
