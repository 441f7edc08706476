package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
	"github.com/tailgate-dev/tailgate/mcpstdio/buffers"
)

// Reading a child's output: each line it writes, charged to its link's
// share of the gateway's buffers, parsed and handed to the request it
// answers, the stream it belongs on, or the session (readLoop, readLine,
// handle, response, deliver, finish, push).

// closed fails every pending request: the target's output is gone
// (readErr: why, if it was given up).
func (c *child) closed(readErr error) {
	err := c.failure(context.Background(), "", errors.Join(errors.New("stdout closed"), readErr))
	if readErr != nil {
		// Its output cannot be read on (a line too long, its clients'
		// answers held past the link's patience): it is ended at once,
		// once its calls know why.
		c.log.Warn("reading the child's output failed; stopping it", "err", readErr)
		go c.kill()
	}
	c.mu.Lock()
	c.dead = err
	pending := c.pending
	c.pending = make(map[int64]*Reply)
	c.mu.Unlock()
	for _, r := range pending {
		r.fail(err)
	}
}

// handle routes one message from the child; held is what it holds of the
// link's buffers (nil: nothing yet), for an answer made of it to take over.
func (c *child) handle(line []byte, held *buffers.Charge) {
	if len(line) == 0 {
		return
	}
	m, err := jsonrpc.ParseMessage(line)
	if err != nil {
		c.log.Warn("child wrote a line that is not a JSON-RPC message; skipped", "err", err, "line", truncate(line, 200))
		return
	}
	if m.IsResponse() {
		c.response(m, held)
		return
	}
	s := c.owner.Load()
	// The reader never writes to the child itself: a child blocked on a
	// full stdout would never drain a full stdin. Answers it gives here
	// go from goroutines of their own.
	if s == nil {
		// A pooled child talking before anyone listens.
		if m.IsRequest() {
			go c.write(jsonrpc.ErrorMessage(m.Bytes(m.ID), jsonrpc.CodeInternalError, "no client attached to this server yet"))
		}
		return
	}
	if held == nil || !held.Owns {
		m.Raw = bytes.Clone(m.Raw) // it outlives the read buffer
	}
	if m.IsRequest() {
		s.serverRequest(c, m, held)
		return
	}
	s.childNotification(c, m, held)
}

// response hands the child's answer to the request it answers, with the
// request's own id.
func (c *child) response(m *jsonrpc.Message, held *buffers.Charge) {
	id, err := strconv.ParseInt(string(m.Bytes(m.ID)), 10, 64)
	if err != nil {
		c.log.Debug("response to an id tailgate never sent", "id", string(m.Bytes(m.ID)))
		return
	}
	c.mu.Lock()
	r := c.pending[id]
	delete(c.pending, id)
	if r != nil && r.parked != nil {
		// The call answered while its client was away for input: the
		// retry gets this.
		r.parked.answer = bytes.Clone(m.Raw)
	}
	c.mu.Unlock()
	if r == nil || r.parked != nil {
		return // cancelled, timed out, or parked
	}
	if r.internal {
		r.finish(bytes.Clone(m.Raw))
		return
	}
	c.deliver(r, m, held)
}

// deliver finishes client call r with the child's response m.
func (c *child) deliver(r *Reply, m *jsonrpc.Message, held *buffers.Charge) {
	if r.retry != nil && m.Result.Has() && m.String(m.Path("result", "resultType")) == "input_required" {
		// Input the session client is asked for (bridge.go).
		if rm, err := jsonrpc.ParseMessage(bytes.Clone(m.Raw)); err == nil {
			go r.s.fulfill(c, r, rm)
			return
		}
	}
	if c.bridge == toSessionEra && r.s != nil && m.Result.Has() && m.Raw[m.Result.Start] == '{' && !m.Field(m.Result, "resultType").Has() && !m.Field(m.Result, "task").Has() {
		// An older child answers a sessionless client: every result of
		// 2026-07-28 says its type (a session-era task is left as it is:
		// it is no complete result).
		if rm, err := jsonrpc.ParseMessage(m.Replace(jsonrpc.Span{Start: m.Result.Start + 1, End: m.Result.Start + 1}, resultTypeComplete(m.Bytes(m.Result)))); err == nil {
			m = rm
		}
	}
	o := OutcomeOK
	switch {
	case m.Error.Has():
		o = OutcomeError
	case r.toolCall && string(m.Bytes(m.Field(m.Result, "isError"))) == "true":
		o = OutcomeToolError
	}
	if r.mayCreateTask && o == OutcomeOK {
		r.s.noteTask(c, m)
	}
	if r.transform != nil {
		c.finish(r, r.transform(m), o, held)
		return
	}
	var out []byte
	if held != nil && held.Owns {
		out = m.Rewrite(m.ID, r.frontID) // a large answer is not copied
	} else {
		out = m.Replace(m.ID, r.frontID)
	}
	if r.listen {
		// A listen's result names the subscription by the request's id.
		if om, err := jsonrpc.ParseMessage(out); err == nil {
			if sid := om.Path("result", "_meta", jsonrpc.MetaSubscriptionID); sid.Has() {
				out = om.Replace(sid, r.frontID)
			}
		}
	}
	c.finish(r, out, o, held)
}

// finish ends r with the target's answer out, charged to the link's share
// of the gateway's buffers until the client has taken it. An answer the
// buffers have no room for (the caller has not taken enough of the
// answers before it) is replaced by an error that says so: the target's
// work is lost to this caller, the gateway's memory to nobody.
func (c *child) finish(r *Reply, out []byte, o Outcome, from *buffers.Charge) {
	held, err := c.mem.Answer(from, len(out))
	if err != nil {
		c.log.Warn("answer dropped: the gateway's buffers are full", "size", len(out), "err", err)
		r.fail(&CodeError{Code: jsonrpc.CodeInternalError, Err: fmt.Errorf("target %q: an answer of %d bytes dropped: %w", c.target.Name, len(out), err)})
		return
	}
	r.end(Frame{Data: out, Final: true, Outcome: o, held: held})
}

// push delivers a message of the target's on r's stream, charged as
// finish's answers (from, as there, is what the message read holds); one
// the buffers have no room for is dropped, and counts as delivered. It
// reports false if r has ended.
func (c *child) push(r *Reply, msg []byte, from *buffers.Charge) bool {
	held, err := c.mem.Answer(from, len(msg))
	if err != nil {
		c.log.Warn("message dropped: the gateway's buffers are full", "size", len(msg), "err", err)
		return true
	}
	return r.pushFrame(Frame{Data: msg, held: held})
}

// resultTypeComplete is what goes first in an object result to say it is
// complete: the member, and a comma unless the object is empty.
func resultTypeComplete(result []byte) []byte {
	if len(bytes.TrimSpace(result[1:len(result)-1])) == 0 {
		return []byte(`"resultType":"complete"`)
	}
	return []byte(`"resultType":"complete",`)
}
