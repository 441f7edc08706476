package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
	"github.com/tailgate-dev/tailgate/mcpstdio/buffers"
)

// Outcome is what a response says, for logs and metrics.
type Outcome uint8

// The outcomes of a response.
const (
	OutcomeOK        Outcome = iota
	OutcomeError             // a JSON-RPC error
	OutcomeToolError         // a tools/call result with isError
)

// Frame is one message for the client: something a request caused (a
// progress or log notification, a server→client request), or, when Final,
// its response. A Final frame with no Data ends the call without a
// response: the client cancelled it.
type Frame struct {
	Data  []byte
	Final bool
	// Outcome is set on the final frame.
	Outcome Outcome
	// Err is set instead of Data on tailgate's own requests.
	Err error
	// held is what Data holds of the gateway's Buffers.
	held buffers.Charge
}

// Release says the frame's data has been written or dropped: what it
// held of the gateway's buffers is free for the next answer. Whoever
// takes a frame from a Reply releases it.
func (f Frame) Release() { f.held.Release() }

// Reply is one client request in flight: C yields the messages it causes,
// then its response, and is then closed. A Reply whose client went away
// must be closed with Close, which cancels the request at the target.
type Reply struct {
	ch   chan Frame
	gone chan struct{}
	once sync.Once

	mu       sync.Mutex
	finished bool

	// replyKind is what the request is, which decides how its answer is
	// read.
	replyKind
	// replyRequest is what came with the client's request.
	replyRequest
	// replySent is where the request went.
	replySent
	// replyBridge is a call's state between protocol generations.
	replyBridge
}

// replyKind is what a Reply's request is.
type replyKind struct {
	internal bool
	toolCall bool // a tools/call, whose result may say isError
	// mayCreateTask is set on a sessionless caller's task-augmented call.
	mayCreateTask bool
	listen        bool // a subscriptions/listen: lives as long as its client wants
	// legacy, on an older child's part of a listen, which tailgate holds
	// for the child (listenForLegacy), are the notifications it wants.
	legacy []string
}

// replyRequest is what came with a Reply's request from the client, and
// how its answer is turned back for the client.
type replyRequest struct {
	frontID  []byte            // the client's id, raw
	headers  map[string]string // for a remote target (ForwardOptions.Headers)
	identity Identity          // the request's own caller, for a remote target told it
	progress []byte            // the progress token the child sees, raw
	// frontToken is the client's own progress token where the child sees
	// another (a shared child: tokens of different requests must differ).
	frontToken []byte
	transform  func(*jsonrpc.Message) []byte
}

// replySent is where a Reply's request went: one child, under which id,
// until when; or, for a request fanned out to several, the hooks that
// replace them.
type replySent struct {
	s       *Session
	key     string // in s.calls
	c       *child
	childID int64
	timer   *time.Timer
	timeout time.Duration

	// onCancel and onDone replace the above for fan-out requests.
	onCancel func(reason string)
	onDone   func()
}

// replyBridge is the state of a call that waits for its client's input
// (MRTR, mrtr.go) or is bridged to a child of the other protocol
// generation (bridge.go).
type replyBridge struct {
	// parked is set on the placeholder of a call that waits for its
	// client's input (see mrtr.go).
	parked *parkedCall
	// what, on a call that may be parked, is its method and name, which
	// its retry must repeat (mrtr.go).
	what string
	// retry, for a call to a child spoken to in 2026-07-28 for a client
	// of the session era, sends it again with the client's input
	// (bridge.go).
	retry *inputRetry
}

// sentAs records that the request went to child c under id, and arms its
// timeout (a listen has none: it ends when its client goes or the session
// ends), before the request is written: a fast answer always finds the
// timer to stop.
func (r *Reply) sentAs(c *child, id int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.c, r.childID = c, id
	if r.timeout > 0 && !r.listen && r.timer == nil && !r.finished {
		r.timer = time.AfterFunc(r.timeout, r.expire)
	}
}

// cancelAtChild tells the target that nobody waits any more.
func (r *Reply) cancelAtChild(reason string) {
	switch {
	case r.onCancel != nil:
		r.onCancel(reason)
	default:
		r.mu.Lock()
		c, id := r.c, r.childID
		r.mu.Unlock()
		if c != nil {
			c.cancel(id, reason)
		}
	}
}

// release lets go of what the call held: its timer, its session entry.
func (r *Reply) release() {
	if r.onDone != nil {
		r.onDone()
		return
	}
	r.mu.Lock()
	t := r.timer
	r.mu.Unlock()
	if t != nil {
		t.Stop()
	}
	if r.s != nil {
		r.s.untrack(r.key, r)
	}
}

// expire ends a call its target did not answer in time.
func (r *Reply) expire() {
	r.mu.Lock()
	c, id := r.c, r.childID
	r.mu.Unlock()
	if c == nil {
		return // never sent
	}
	r.fail(&CodeError{Code: jsonrpc.CodeRequestTimeout, Err: fmt.Errorf("target %q: no answer in time (requestTimeout %v)", c.target.Name, r.timeout)})
	c.cancel(id, "tailgate's request timeout")
}

func newReply(buf int) *Reply {
	return &Reply{ch: make(chan Frame, buf), gone: make(chan struct{})}
}

// C yields the call's messages; it is closed after the final one.
func (r *Reply) C() <-chan Frame { return r.ch }

// Close says the client no longer listens: a call still in flight is
// cancelled at the target, and nothing more is delivered. Frames not
// taken yet are released.
func (r *Reply) Close() {
	r.once.Do(func() { close(r.gone) })
	r.drain()
	r.mu.Lock()
	done := r.finished
	r.mu.Unlock()
	if done {
		return
	}
	// Whoever leaves does not wait for the target to take the news: a
	// child held back (Buffers) reads nothing until its reader goes on.
	go r.cancelAtChild("the client went away")
	r.end(Frame{Final: true})
}

// drain releases the frames nobody will take.
func (r *Reply) drain() {
	r.mu.Lock() // a push under way has put its frame in, or will drop it
	defer r.mu.Unlock()
	for {
		select {
		case f, ok := <-r.ch:
			if !ok {
				return
			}
			f.Release()
		default:
			return
		}
	}
}

// abandon ends a call that no request to a child stands behind (an older
// child's part of a listen), without waiting for whoever reads it.
func (r *Reply) abandon() {
	r.once.Do(func() { close(r.gone) })
	r.end(Frame{Final: true})
}

// push delivers a message the call caused. It reports false if the call
// has ended or nobody listens.
func (r *Reply) push(data []byte) bool { return r.pushFrame(Frame{Data: data}) }

// pushFrame delivers f, or releases it if the call has ended or nobody
// listens.
func (r *Reply) pushFrame(f Frame) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.gone:
		f.Release()
		return false
	default:
	}
	if r.finished {
		f.Release()
		return false
	}
	select {
	case r.ch <- f:
		return true
	case <-r.gone:
		f.Release()
		return false
	}
}

// finish delivers the response and ends the call.
func (r *Reply) finish(data []byte) bool { return r.end(Frame{Data: data, Final: true}) }

func (r *Reply) finishAs(data []byte, o Outcome) bool {
	return r.end(Frame{Data: data, Final: true, Outcome: o})
}

func (r *Reply) end(f Frame) bool {
	r.mu.Lock()
	if r.finished {
		r.mu.Unlock()
		f.Release()
		return false
	}
	r.finished = true
	select {
	case <-r.gone:
		f.Release()
	default:
		select {
		case r.ch <- f:
		case <-r.gone:
			f.Release()
		}
	}
	close(r.ch)
	r.mu.Unlock()
	r.release()
	return true
}

// fail ends the call with err as its JSON-RPC error.
func (r *Reply) fail(err error) {
	if r.internal {
		r.end(Frame{Err: err, Final: true})
		return
	}
	r.finishAs(errorResponse(r.frontID, err), OutcomeError)
}

// cancel ends a call that is still in flight: the target is told, and the
// client gets respond's answer (nothing if respond is false: the client
// cancelled it itself).
func (r *Reply) cancel(reason string, respond bool) {
	if !respond {
		r.once.Do(func() { close(r.gone) })
	}
	r.mu.Lock()
	done := r.finished
	r.mu.Unlock()
	if done {
		return
	}
	r.cancelAtChild(reason)
	if respond {
		r.fail(&CodeError{Code: jsonrpc.CodeRequestCancelled, Err: errors.New(reason)})
		return
	}
	r.end(Frame{Final: true})
}

// CodeError is an error with the JSON-RPC code the client gets.
type CodeError struct {
	Code int
	Err  error
	// Data is the error's data, raw JSON, if any.
	Data []byte
}

func (e *CodeError) Error() string { return e.Err.Error() }
func (e *CodeError) Unwrap() error { return e.Err }

// ErrorResponse is the JSON-RPC error response to id for err: a target's
// own error as it came, a CodeError with its code (and data), anything
// else an internal error.
func ErrorResponse(id []byte, err error) []byte { return errorResponse(id, err) }

func errorResponse(id []byte, err error) []byte {
	var wire *WireError
	if errors.As(err, &wire) {
		out := append([]byte(`{"jsonrpc":"2.0","id":`), id...)
		out = append(out, `,"error":`...)
		out = append(out, wire.Raw...)
		return append(out, '}')
	}
	code := jsonrpc.CodeInternalError
	var ce *CodeError
	switch {
	case errors.As(err, &ce):
		code = ce.Code
		if len(ce.Data) > 0 {
			msg := jsonrpc.ErrorMessage(id, code, err.Error())
			return append(append(append(msg[:len(msg)-2], `,"data":`...), ce.Data...), "}}"...)
		}
	case errors.Is(err, context.DeadlineExceeded):
		code = jsonrpc.CodeRequestTimeout
	}
	return jsonrpc.ErrorMessage(id, code, err.Error())
}
