package mcpstdio

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/tailgate-dev/tailgate/mcpstdio/buffers"
	"github.com/tailgate-dev/tailgate/mcpstdio/jsonrpc"
)

// Reading a child's output: each line it writes, charged to its link's
// share of the gateway's buffers, parsed and handed to the request it
// answers, the stream it belongs on, or the session (readLoop, readLine,
// handle, response, deliver, finish, push).

// lineReader reads a stdio child's output a line at a time, charging
// each line to the link's share of the gateway's buffers (readLine); a
// line is at most maxMsg bytes.
type lineReader struct {
	mem      *buffers.Share
	patience time.Duration
	maxMsg   int
}

// readLines reads stdout until it closes, handing each line to handle.
// It returns why it stopped: nil at the end of the output, else a line
// too long or held back past patience.
func (c lineReader) readLines(stdout io.Reader, exited <-chan struct{}, handle func([]byte, *buffers.Charge)) error {
	br := bufio.NewReaderSize(stdout, 64<<10)
	var err error
	for {
		var line []byte
		held := c.mem.Charge(0, false)
		line, err = c.readLine(br, exited, &held)
		if len(line) > 0 && (err == nil || errors.Is(err, io.EOF)) {
			handle(bytes.TrimSpace(line), &held)
		}
		held.ReaderDone()
		if err != nil {
			break
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

// readLine reads one line of the child's, charging its bytes to the
// link's share of the gateway's buffers as it grows (takeWaiting). While
// there is no room (the clients have not taken what the child said
// before), the line is not read on: the child waits on its own output,
// for no longer than the link's patience. A line longer than the read
// buffer is read into a buffer of its own, which the answer made of it
// keeps.
func (c lineReader) readLine(br *bufio.Reader, exited <-chan struct{}, held *buffers.Charge) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	var lr buffers.LineRead
	if !errors.Is(err, bufio.ErrBufferFull) {
		if werr := c.mem.TakeWaiting(int64(len(line)), &lr, c.patience, exited); werr != nil {
			return nil, werr
		}
		held.Grow(int64(len(line)))
		return line, err
	}
	lr.Seq = c.mem.StartLine()
	defer c.mem.EndLine(lr.Seq)
	var long []byte
	for {
		if len(long)+len(line) > cap(long) {
			grow := max(len(long)+len(line), 2*cap(long)) - cap(long)
			grow = min(grow, c.maxMsg+1-cap(long))
			if len(long)+len(line) > c.maxMsg || grow <= 0 {
				return nil, &buffers.TooLargeError{Limit: c.maxMsg}
			}
			if werr := c.mem.TakeWaiting(int64(grow), &lr, c.patience, exited); werr != nil {
				return nil, werr
			}
			held.Grow(int64(grow))
			nb := make([]byte, len(long), cap(long)+grow)
			copy(nb, long)
			long = nb
		}
		long = append(long, line...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			held.Owns = true
			return long, err
		}
		line, err = br.ReadSlice('\n')
	}
}

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
