package relay

import (
	"context"
	"errors"
	"strconv"
	"sync"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// Forwarding a routed client request: to its one target, with the ids,
// names, progress token and _meta the target must see and the rewriting
// its answer needs, or to every target (fanOut).

// ForwardOptions adjust one forwarded request.
type ForwardOptions struct {
	// Keep filters list results: an item it refuses is left out. Nil
	// keeps everything, and a single unprefixed target's lists then pass
	// through as they came.
	Keep func(Item) bool
	// Key names the request among those in flight, for Notify's
	// cancellations; default its id. Requests of a shared session come
	// from many clients and need a key of their own.
	Key string
	// Headers go with the request to a remote target: the client's
	// Mcp-Param-* headers, which such a server checks (SEP-2243).
	Headers map[string]string
	// Identity is the caller at this request, as OpenParams.Identity: a
	// remote target told it is told it from this request on. Nil: as
	// before.
	Identity Identity
}

// Forward sends the client request m along rt. The Reply yields what the
// request causes, then its response (always exactly one, an error
// included, unless the client cancels it).
func (s *Session) Forward(m *jsonrpc.Message, rt Route, opts ForwardOptions) *Reply {
	r := newReply(8)
	r.frontID = m.Bytes(m.ID)
	r.headers = opts.Headers
	if c := rt.c; c != nil && !rt.fanOut && m.MethodName() == "subscriptions/listen" {
		// A listen hears of the caller's own tasks only.
		rm, err := s.ownListen(c, m)
		if err != nil {
			r.fail(err)
			return r
		}
		m = rm
	}
	if opts.Identity != nil {
		s.passIdentity(rt.c, r, opts)
	}
	m = s.forTarget(m, rt.c, r)
	if rt.namePath != nil {
		rt.nameSpan = m.Path(rt.namePath...)
	}
	key, ok := s.track(r, opts.Key)
	if !ok {
		r.fail(s.ended())
		return r
	}
	timeout := s.b.opts.RequestTimeout
	if rt.c != nil {
		timeout = s.b.requestTimeout(rt.c.target)
	}
	if rt.listen {
		s.listenAll(m, r, key)
		return r
	}
	if rt.fanOut {
		ctx, cancel := context.WithTimeout(s.ctx, timeout)
		r.onCancel = func(string) { cancel() }
		r.onDone = func() { cancel(); s.untrack(key, r) }
		go s.fanOut(ctx, m, rt, opts, r)
		return r
	}
	c := rt.c
	if state, ok := isRetry(m); ok && s.sessionless {
		r.s, r.key = s, key
		s.resume(m, r, state)
		return r
	}
	s.setTransform(r, c, m, rt, opts.Keep)
	var extra []byte
	if rt.nameSpan.Has() && rt.TargetName != rt.Name {
		extra = jsonrpc.Quote(rt.TargetName)
	}
	if c.bridge == toModern {
		c.armInputRetry(r, m, rt.namePath, extra)
	}
	r.toolCall = rt.Kind == "tool" && m.MethodName() == "tools/call"
	if c.bridge == toSessionEra {
		// An older child may ask in the middle of it: the call is parked,
		// and its retry must name it again.
		r.what = callWhat(m)
	}
	// Only a call that asks for a task can create one, which its caller
	// then owns (noteTask).
	r.mayCreateTask = r.toolCall && createsTask(m)
	r.listen = m.MethodName() == "subscriptions/listen"
	r.s, r.key, r.timeout = s, key, timeout
	// send arms the call's timeout (Reply.sentAs).
	if _, err := c.sendRenamed(m, r, rt.nameSpan, extra); err != nil {
		r.fail(err)
	}
	return r
}

// passIdentity tells the caller's identity at this request (opts.Identity)
// to the route's target c, or to every target when the request goes to
// them all; a remote target with identity headers gets it with r itself.
func (s *Session) passIdentity(c *child, r *Reply, opts ForwardOptions) {
	if c != nil {
		c.setIdentity(opts.Identity)
		if c.target.Remote != nil && c.target.Remote.TellsIdentity {
			// This request says its own caller's identity, whatever
			// another request of the caller's told the link meanwhile.
			r.identity = opts.Identity
		}
	} else {
		for _, c := range s.children {
			c.setIdentity(opts.Identity)
		}
	}
}

// forTarget is m as its target c (nil: every target) must see it: a
// shared session's progress token replaced by one of tailgate's own (r
// keeps both), the protocol version an older child was initialized with,
// the client's _meta for a child that speaks only 2026-07-28.
func (s *Session) forTarget(m *jsonrpc.Message, c *child, r *Reply) *jsonrpc.Message {
	if tok := m.Path(pathProgress...); tok.Has() {
		r.progress = m.Bytes(tok)
		if s.sessionless && c != nil {
			// Two clients may use the same token at once: the child sees
			// one of tailgate's.
			r.frontToken = r.progress
			r.progress = jsonrpc.Quote("tailgate-progress-" + strconv.FormatInt(s.progressSeq.Add(1), 10))
			if rm, err := jsonrpc.ParseMessage(m.Replace(tok, r.progress)); err == nil {
				m = rm
			}
		}
	}
	if c != nil && c.bridge == toSessionEra {
		// An older child was initialized once, by tailgate: the request
		// speaks its version, whichever the client speaks (tailgate
		// bridges the difference).
		if pv := m.Path("params", "_meta", jsonrpc.MetaProtocolVersion); pv.Has() {
			if rm, err := jsonrpc.ParseMessage(m.Replace(pv, jsonrpc.Quote(c.init.version))); err == nil {
				m = rm
			}
		}
	}
	if c != nil && c.bridge == toModern {
		// A child of 2026-07-28 only: each request says who asks.
		if rm, err := c.withClientMeta(m); err == nil {
			m = rm
		}
	}
	return m
}

// setTransform sets how c's answer to r (request m) is rewritten for the
// client: a list's names prefixed and its items filtered (keep), a read's
// URIs prefixed, a task list narrowed to the caller's own tasks, a task
// id prefixed.
func (s *Session) setTransform(r *Reply, c *child, m *jsonrpc.Message, rt Route, keep func(Item) bool) {
	if rt.list != nil && (s.prefixed || keep != nil) {
		lk := *rt.list
		r.transform = func(res *jsonrpc.Message) []byte { return s.rewriteList(c, lk, res, r.frontID, keep) }
	} else if m.MethodName() == "resources/read" && s.prefixed {
		r.transform = func(res *jsonrpc.Message) []byte { return s.rewriteContents(c, res, r.frontID) }
	} else if m.MethodName() == "tasks/list" {
		// A target's list names every caller's tasks: the caller sees
		// its own.
		r.transform = func(res *jsonrpc.Message) []byte { return s.ownTasksList(c, res, r.frontID) }
	} else if s.prefixed && (rt.Kind == "tool" || rt.Kind == "task") {
		// A task a target created is known to the client by a prefixed id,
		// so that tasks/* find the target again.
		r.transform = func(res *jsonrpc.Message) []byte { return s.rewriteTaskID(c, res, r.frontID) }
	}
}

// armInputRetry lets r's call m, to c (a child that speaks only
// 2026-07-28, for a session client), be sent again with the input the
// client gives (bridge.go): the name at namePath is replaced by extra
// (the target's own name) each time, as in the first send.
func (c *child) armInputRetry(r *Reply, m *jsonrpc.Message, namePath []string, extra []byte) {
	switch m.MethodName() {
	case "tools/call", "prompts/get", "resources/read":
		r.retry = &inputRetry{base: m, send: func(rm *jsonrpc.Message) (int64, error) {
			var span jsonrpc.Span
			if namePath != nil {
				span = rm.Path(namePath...)
			}
			return c.sendRenamed(rm, r, span, extra)
		}}
	}
}

// sendRenamed is send with the span name (if v is not nil) replaced by v.
func (c *child) sendRenamed(m *jsonrpc.Message, r *Reply, name jsonrpc.Span, v []byte) (int64, error) {
	if v == nil {
		return c.send(m, r)
	}
	rm, err := jsonrpc.ParseMessage(m.Replace(name, v))
	if err != nil {
		return 0, err
	}
	return c.send(rm, r)
}

// fanOut answers a request that goes to every target: lists are joined in
// target order, ping and logging/setLevel succeed when every target that
// can answer does.
func (s *Session) fanOut(ctx context.Context, m *jsonrpc.Message, rt Route, opts ForwardOptions, r *Reply) {
	var result []byte
	var err error
	switch {
	case rt.discover:
		result = s.discover
	case rt.list != nil:
		result, err = s.joinLists(ctx, *rt.list, opts.Keep)
	default:
		err = s.everyChild(ctx, m)
		result = []byte("{}")
	}
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, context.DeadlineExceeded) {
			err = ctx.Err()
		}
		r.fail(err)
		return
	}
	r.finish(jsonrpc.ResultMessage(r.frontID, result))
}

// everyChild sends m to every child (logging/setLevel: those that log).
func (s *Session) everyChild(ctx context.Context, m *jsonrpc.Message) error {
	method := m.MethodName()
	var params []byte
	if m.Params.Has() {
		params = m.Bytes(m.Params)
	}
	errs := make([]error, len(s.children))
	var wg sync.WaitGroup
	for i, c := range s.children {
		if method == "logging/setLevel" && !c.init.has("logging") || !c.alive() && s.degrades() {
			continue
		}
		wg.Go(func() {
			res, err := c.request(ctx, method, params)
			if err == nil && res.Error.Has() {
				err = &WireError{Raw: append([]byte(nil), res.Bytes(res.Error)...)}
			}
			errs[i] = err
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
