package gateway

import (
	"context"
	"log/slog"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay"
	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// This file is the record stage of a call (pipeline.go): the metrics and
// the access log line of every MCP request, whatever became of it.

// record writes the access log line and the metrics of one MCP request;
// extra goes on the log line.
func (fs *frontSession) record(method string, rt relay.Route, o outcome, err error, took time.Duration, extra ...slog.Attr) {
	outcome := string(o)
	toolLabel := ""
	if rt.Kind == "tool" || rt.Kind == "prompt" {
		// A label is a name a target lists; anything else a client can
		// make up, and would stay in /metrics for good. The list is not
		// waited for: a call is never held for tailgate's bookkeeping, and
		// a name whose target's list is not known yet is "unlisted".
		toolLabel = "other"
		if bs := fs.backend(); bs != nil {
			switch listed, known := bs.Listed(rt); {
			case !known:
				toolLabel = "unlisted"
			case listed:
				toolLabel = rt.Name
			}
		}
	}
	rt.Name = clip(rt.Name)
	methodLabel := method
	if !jsonrpc.KnownMethod(method) {
		methodLabel = "other" // as for tool names
	}
	if m := fs.f.metrics; m != nil {
		m.observeCall(fs.f.name, methodLabel, rt.Target, toolLabel, outcome, took)
	}
	fs.f.status.observeCall(fs.f.name, methodLabel, rt.Target, toolLabel, o, took)
	method = clip(method)
	ctx := context.Background()
	if !fs.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	var buf [8]slog.Attr
	attrs := append(buf[:0], slog.String("method", method))
	if rt.Kind != "" {
		kind := rt.Kind
		if kind == "resource" {
			kind = "uri"
		}
		attrs = append(attrs, slog.String(kind, rt.Name))
	}
	if rt.Target != "" {
		attrs = append(attrs, slog.String("target", rt.Target))
	}
	attrs = append(attrs, slog.String("outcome", outcome), slog.Duration("duration", took.Round(time.Microsecond)))
	attrs = append(attrs, extra...)
	if err != nil {
		attrs = append(attrs, slog.String("err", clipTo(err.Error(), maxLoggedError)))
	}
	fs.log.LogAttrs(ctx, slog.LevelInfo, "mcp call", attrs...)
}

// clientOf is what a sessionless (2026-07-28) request says of its
// client, for its log line: each request carries its protocol version
// and client in _meta, as a session's initialize does once.
func clientOf(m *jsonrpc.Message) []slog.Attr {
	return []slog.Attr{
		slog.String("protocol", clip(m.String(m.Path("params", "_meta", jsonrpc.MetaProtocolVersion)))),
		slog.String("client", clip(m.String(m.Path("params", "_meta", jsonrpc.MetaClientInfo, "name")))),
	}
}
