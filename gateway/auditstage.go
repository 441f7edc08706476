package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/audit"
	"github.com/tailgate-dev/tailgate/policy"
)

// This file is the audit stage: a record of every decision on the
// gateway's audit trail (config.audit; package audit), each written
// before the answer it decides leaves: a connection admitted or refused
// (networkAuthorization), an HTTP request a route's authorization judged,
// and each MCP request (a call judged by mcpAuthorization, a list with
// how many items it filtered), with its outcome.

// openAudit opens the trail cfg asks for; nil when it asks for none.
func openAudit(cfg *Config) (*audit.Log, error) {
	ac := cfg.Global.Audit
	if ac == nil || ac.File == "" && !ac.Stdout {
		return nil, nil
	}
	return audit.Open(audit.Options{File: ac.File, Stdout: ac.Stdout, MaxSizeMB: ac.MaxSizeMB, MaxAgeDays: ac.MaxAgeDays, MaxBackups: ac.MaxBackups})
}

// auditCaller is src as the trail names it.
func auditCaller(src *policy.Source, remote netip.AddrPort) audit.Caller {
	var c audit.Caller
	if src == nil {
		c.Address = remote.String()
		return c
	}
	c.Address = net.JoinHostPort(src.Address, strconv.Itoa(src.Port))
	if ts := src.Tailscale; ts != nil {
		c.Login, c.Node, c.NodeID, c.Tags = ts.User.Login, ts.Node.Name, ts.Node.ID, ts.Node.Tags
	}
	return c
}

// decisionOf is "allow" or "deny".
func decisionOf(d policy.Decision) string {
	if d.Allow {
		return "allow"
	}
	return "deny"
}

// auditConnection records networkAuthorization's decision on a
// connection (src nil: the peer could not be identified).
func (s *Server) auditConnection(src *policy.Source, remote netip.AddrPort, d policy.Decision) {
	s.status.noteConnection(src, remote, d)
	if s.audit == nil {
		return
	}
	r := audit.Record{Event: "connection", Caller: auditCaller(src, remote), Decision: decisionOf(d), Rule: d.Rule}
	if !d.Allow {
		r.Reason = d.Reason()
	}
	s.writeAudit(r)
}

// auditHTTP records a route's authorization of an HTTP request.
func (s *Server) auditHTTP(rt *route, src *policy.Source, r *http.Request, d policy.Decision) {
	s.status.noteHTTP(rt.name, src, r, d)
	if s.audit == nil {
		return
	}
	rec := audit.Record{Event: "http", Caller: auditCaller(src, netip.AddrPort{}), Route: rt.name, Method: r.Method,
		Name: clip(r.URL.Path), Decision: decisionOf(d), Rule: d.Rule, TraceID: traceIDOf(r.Header.Get("Traceparent"))}
	if !d.Allow {
		rec.Reason = d.Reason()
	}
	s.writeAudit(rec)
}

// writeAudit writes r, logging (not failing the request) when the trail
// cannot be written: the error is loud, and counted.
func (s *Server) writeAudit(r audit.Record) {
	if err := s.audit.Write(r); err != nil {
		s.metrics.auditErrors.Inc()
		s.log.Error("audit record not written", "event", r.Event, "err", err)
	}
}

// audit records the call, as its outcome is known and before its answer
// is sent (call.finish).
func (c *call) audit() {
	f := c.fs.f
	f.status.noteCall(c)
	if f.audit == nil {
		return
	}
	method := c.msg.MethodName()
	r := audit.Record{Event: "mcp.call", Caller: auditCaller(c.req.src, netip.AddrPort{}), Route: f.name,
		Target: c.route.Target, Method: clip(method), Kind: c.route.Kind, Name: clip(c.route.Name),
		Decision: "none", Outcome: string(c.outcome),
		Duration: float64(time.Since(c.start).Microseconds()) / 1000, Session: c.fs.id}
	if c.judged {
		// Not judged: the request failed before (a name no target has).
		r.Decision, r.Rule = decisionOf(c.decision), c.decision.Rule
		if !c.decision.Allow {
			r.Reason = c.decision.Reason()
		}
	}
	if ref := c.lim.refused; ref != nil {
		r.Decision, r.Rule, r.Reason = "deny", ref.path, ref.reason
	}
	if strings.HasSuffix(method, "/list") {
		r.Event, r.Filtered = "mcp.list", int(c.filtered.Load())
	}
	r.TraceID = c.traceID()
	if args := c.msg.Path("params", "arguments"); args.Has() {
		raw := c.msg.Bytes(args)
		sum := sha256.Sum256(raw)
		r.ArgsDigest = hex.EncodeToString(sum[:])
		if ac := f.auditArgs; ac != nil && ac.Include {
			r.Args = redactArgs(raw, ac.Redact)
		}
	}
	c.fs.f.writeAudit(r)
}

// writeAudit writes r on the front's trail.
func (f *mcpFront) writeAudit(r audit.Record) {
	if err := f.audit.Write(r); err != nil {
		if f.metrics != nil {
			f.metrics.auditErrors.Inc()
		}
		f.log.Error("audit record not written", "event", r.Event, "err", err)
	}
}

// redactArgs is a call's arguments with each member named in redact
// (at any depth, names compared without case) replaced by "[redacted]".
// Arguments that are not a JSON object are kept as their digest only.
func redactArgs(raw []byte, redact []string) json.RawMessage {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil
	}
	v = redactValue(v, redact)
	out, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return out
}

func redactValue(v any, redact []string) any {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if containsFold(redact, k) {
				x[k] = "[redacted]"
				continue
			}
			x[k] = redactValue(val, redact)
		}
	case []any:
		for i := range x {
			x[i] = redactValue(x[i], redact)
		}
	}
	return v
}

// traceIDOf is the trace id of a W3C traceparent ("00-<32 hex>-<16
// hex>-<2 hex>"), "" if it is not one.
func traceIDOf(tp string) string {
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || len(parts[1]) != 32 {
		return ""
	}
	if _, err := hex.DecodeString(parts[1]); err != nil || parts[1] == strings.Repeat("0", 32) {
		return ""
	}
	return parts[1]
}

// auditArgsOf is config.audit.arguments.
func auditArgsOf(cfg *Config) *AuditArguments {
	if a := cfg.Global.Audit; a != nil {
		return a.Arguments
	}
	return nil
}
