package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/audit"
	"github.com/tailgate-dev/tailgate/gateway/relay"
	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
	"github.com/tailgate-dev/tailgate/policy"
)

// A request's way through the gateway, top to bottom:
//
//  1. read and check: a front turns what arrives into a message
//     (front.go readMessage: one body, bounded and charged, read one way
//     by every decoder, jsonrpc.ParseClientMessage), and checks what its
//     transport adds (sessionless.go: the headers of a 2026-07-28 sessionless
//     request); initialize, notifications and the client's answers go
//     their own ways (front.go dispatch);
//  2. the call's stages, below, in the order of callStages;
//  3. record (record.go): metrics and the access log, whatever became of
//     the call, with the outcome (outcome.go) its stages set.
//
// The stages run for Streamable HTTP sessions, legacy SSE sessions and
// sessionless requests alike; what differs between them is the sink the
// answer goes to (stream.go).

// call is one MCP request on its way through the gateway. Each stage reads
// what the stages before it found, and adds its own.
type call struct {
	ctx   context.Context
	fs    *frontSession
	bs    *relay.Session
	msg   *jsonrpc.Message
	req   callRequest
	out   sink
	start time.Time
	// http is out for a request answered on its own HTTP response (a
	// Streamable HTTP POST), kept here so that a call is one allocation.
	http httpSink

	route    relay.Route          // resolve: the target, and what it names
	authz    authorizer           // authorize: the rules that judged it
	decision policy.Decision      // authorize: what they said
	judged   bool                 // authorize: it ran
	filtered atomic.Int32         // authorize: list items they removed
	lim      callLimits           // limit: what it holds of the route's limits
	opts     relay.ForwardOptions // prepare: what goes with it to the target
	reply    *relay.Reply         // forward: what the target says
	trace    *callTrace           // trace: its spans; nil when tracing is off

	// outcome and err are how the call ended, for record.
	outcome outcome
	err     error
}

// stage is one step of a call. It returns false when the call ends there:
// the stage has answered the client (an error, a refusal) and set the
// call's outcome.
type stage struct {
	name string
	run  func(*call) bool
}

// callStages are the steps of every call, in order. A step that concerns
// every call (credentials, audit, tracing, limits) is a stage here, and
// nowhere else.
func callStages() []stage {
	return []stage{
		{"trace", (*call).startTrace},
		{"resolve", (*call).resolve},
		{"authorize", (*call).authorize},
		{"limit", (*call).limit},
		{"prepare", (*call).prepare},
		{"propagate", (*call).propagate},
		{"forward", (*call).forward},
		{"stream", (*call).stream},
	}
}

// stageDeps are what the stages of a route's calls use beyond the call
// itself: the gateway's trails and books, and the route's view of its
// callers. build.go fills them for each front; a new stage adds its own
// here and there, and the fronts do not change.
type stageDeps struct {
	// metrics receives per-call metrics (record).
	metrics *metrics
	// status is the status page's book: denials and per-tool calls; nil
	// in tests.
	status *statusBook
	// secrets are the targets' per-caller secrets, for mcp.secrets
	// (authorize).
	secrets *targetSecrets
	// connection says whether a caller is connected to a target, for
	// mcp.connection (authorize).
	connection func(target, owner string) (bool, []string)
	// audit is the gateway's audit trail (nil: none), auditArgs what it
	// keeps of a call's arguments (finish).
	audit     *audit.Log
	auditArgs *AuditArguments
	// tracing is the gateway's tracer with the route's targets (nil: off;
	// trace, propagate).
	tracing *frontTracing
}

// newCall is a message of the session's, as its front read it; the front
// says where its answer goes (c.out, or answerOn).
func (fs *frontSession) newCall(ctx context.Context, m *jsonrpc.Message, req callRequest) *call {
	return &call{ctx: ctx, fs: fs, msg: m, req: req, start: time.Now()}
}

// answerOn sends the call's answer on the HTTP response of its request
// (sessionless: a 2026-07-28 request, whose errors carry their
// HTTP status).
func (c *call) answerOn(w http.ResponseWriter, r *http.Request, sessionless bool) {
	c.http = httpSink{w: w, done: r.Context().Done(), sessionless: sessionless, stall: c.fs.f.writeStall}
	c.out = &c.http
}

// run takes a request of the session's backend session bs through the
// front's stages, and records it.
func (c *call) run(bs *relay.Session) {
	c.bs = bs
	defer c.releaseLimits()
	for _, st := range c.fs.f.stages {
		if !st.run(c) {
			break
		}
	}
	var extra []slog.Attr
	if c.fs.sessionless {
		extra = clientOf(c.msg)
	}
	extra = c.endTrace(extra)
	c.fs.record(c.msg.MethodName(), c.route, c.outcome, c.err, time.Since(c.start), extra...)
}

// finish sends the call's answer, data, having set its outcome (o, and
// err for the log) and written its audit record: a call decided is on
// the trail before its answer leaves.
func (c *call) finish(data []byte, o outcome, err error) error {
	c.outcome, c.err = o, err
	c.traceAnswer(data)
	c.audit()
	if o == outcomeLimited {
		return answerLimited(c.out, data, c.lim.refused)
	}
	return c.out.send(data, true)
}

// end ends the call with outcome o (and err, for the log).
func (c *call) end(o outcome, err error) bool {
	c.outcome, c.err = o, err
	return false
}

// resolve finds the target the request is for, and what it names there
// (relay.Session.Route): a tool, prompt or resource, a task, or every
// target for a list.
func (c *call) resolve() bool {
	rt, err := c.bs.Route(c.ctx, c.msg)
	c.route = rt
	if err != nil {
		c.finish(relay.ErrorResponse(c.msg.Bytes(c.msg.ID), err), outcomeError, err)
		return false
	}
	if rt.Kind == "tool" || rt.Kind == "prompt" {
		// The metric label is a name the target lists: if tailgate does
		// not know the list yet, it asks now, beside the call, so that
		// record can name the call without waiting for it.
		c.bs.Listed(rt)
	}
	return true
}

// authorize judges the call by the front's mcpAuthorization, with the
// caller's identity at this request (authorize.go); a list is let
// through, to be filtered item by item on its way back.
func (c *call) authorize() bool {
	c.authz = c.fs.f.authorizer(c.req)
	c.authz.bs, c.authz.ctx = c.bs, c.ctx
	c.decision, c.judged = c.authz.decide(c.route), true
	if !c.decision.Allow {
		err := c.authz.denied(c.fs, c.msg.MethodName(), c.route, c.decision)
		c.finish(jsonrpc.ErrorMessage(c.msg.Bytes(c.msg.ID), jsonrpc.CodeInvalidParams, err.Error()), outcomeDenied, nil)
		return false
	}
	if c.authz.rs != nil {
		c.opts.Keep = func(it relay.Item) bool {
			if c.authz.keep(it) {
				return true
			}
			c.filtered.Add(1)
			return false
		}
	}
	return true
}

// prepare says what goes with the request to its target: the caller's
// identity as it is now (not as it was when the session opened), and,
// for a sessionless request, a key of its own and the client's
// Mcp-Param-* headers, which a remote target checks itself.
func (c *call) prepare() bool {
	if c.fs.sessionless {
		c.opts.Key = c.fs.f.keys.next()
		for k, v := range c.req.http.header {
			if strings.HasPrefix(k, "Mcp-Param-") && len(v) > 0 {
				if c.opts.Headers == nil {
					c.opts.Headers = make(map[string]string)
				}
				c.opts.Headers[k] = v[0]
			}
		}
	}
	if c.bs.TellsIdentity() {
		c.opts.Identity = newCaller(c.req.src)
	}
	return true
}

// forward sends the request to its target.
func (c *call) forward() bool {
	c.reply = c.bs.Forward(c.msg, c.route, c.opts)
	return true
}

// stream passes what the request causes (progress, logs, the target's
// requests to the client) and then its answer to the client, until the
// answer, a cancellation or the client's leaving.
func (c *call) stream() bool {
	for {
		select {
		case fr, ok := <-c.reply.C():
			if !ok || fr.Final && fr.Data == nil {
				return c.end(outcomeCancelled, nil)
			}
			var err error
			if fr.Final {
				// The answer: the call's outcome, audited before it leaves.
				c.outcome, c.err = finalOutcome(fr)
				err = c.finish(c.connectAnswer(fr.Data), c.outcome, c.err)
			} else {
				err = c.out.send(fr.Data, false)
			}
			fr.Release()
			if err != nil {
				c.reply.Close()
				return c.end(sendOutcome(err))
			}
			if fr.Final {
				return false
			}
		case <-c.out.gone():
			c.reply.Close()
			return c.end(outcomeClientGone, nil)
		}
	}
}
