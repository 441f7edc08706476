package mcpstdio

import (
	"context"
	"errors"
	"sync"
)

// Frame is one message for the client: something a request caused (a
// progress or log notification, a server→client request), or, when Final,
// its response. A Final frame with no Data ends the call without a
// response: the client cancelled it.
type Frame struct {
	Data  []byte
	Final bool
	// Err is set instead of Data on tailgate's own requests.
	Err error
}

// Reply is one client request in flight: C yields the messages it causes,
// then its response, and is then closed. A Reply whose client went away
// must be closed with Close, which cancels the request at the target.
type Reply struct {
	ch   chan Frame
	gone chan struct{}
	once sync.Once

	mu       sync.Mutex
	finished bool

	internal  bool
	frontID   []byte // the client's id, raw
	progress  []byte // the client's progress token, raw
	transform func(*Message) []byte
	// onCancel tells the target that nobody waits any more.
	onCancel func(reason string)
	// onDone releases what the call held (timer, session entry, context).
	onDone func()
}

func newReply(buf int) *Reply {
	return &Reply{ch: make(chan Frame, buf), gone: make(chan struct{})}
}

// C yields the call's messages; it is closed after the final one.
func (r *Reply) C() <-chan Frame { return r.ch }

// Close says the client no longer listens: a call still in flight is
// cancelled at the target, and nothing more is delivered.
func (r *Reply) Close() { r.cancel("the client went away", false) }

// push delivers a message the call caused. It reports false if the call
// has ended or nobody listens.
func (r *Reply) push(data []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished {
		return false
	}
	select {
	case r.ch <- Frame{Data: data}:
		return true
	case <-r.gone:
		return false
	}
}

// finish delivers the response and ends the call.
func (r *Reply) finish(data []byte) bool { return r.end(Frame{Data: data, Final: true}) }

func (r *Reply) end(f Frame) bool {
	r.mu.Lock()
	if r.finished {
		r.mu.Unlock()
		return false
	}
	r.finished = true
	select {
	case r.ch <- f:
	case <-r.gone:
	}
	close(r.ch)
	r.mu.Unlock()
	if r.onDone != nil {
		r.onDone()
	}
	return true
}

// fail ends the call with err as its JSON-RPC error.
func (r *Reply) fail(err error) {
	if r.internal {
		r.end(Frame{Err: err, Final: true})
		return
	}
	r.finish(errorResponse(r.frontID, err))
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
	if r.onCancel != nil {
		r.onCancel(reason)
	}
	if respond {
		r.fail(&CodeError{Code: CodeRequestCancelled, Err: errors.New(reason)})
		return
	}
	r.end(Frame{Final: true})
}

// CodeError is an error with the JSON-RPC code the client gets.
type CodeError struct {
	Code int
	Err  error
}

func (e *CodeError) Error() string { return e.Err.Error() }
func (e *CodeError) Unwrap() error { return e.Err }

// errorResponse is the JSON-RPC error response to id for err.
func errorResponse(id []byte, err error) []byte {
	var wire *WireError
	if errors.As(err, &wire) {
		out := append([]byte(`{"jsonrpc":"2.0","id":`), id...)
		out = append(out, `,"error":`...)
		out = append(out, wire.Raw...)
		return append(out, '}')
	}
	code := CodeInternalError
	var ce *CodeError
	switch {
	case errors.As(err, &ce):
		code = ce.Code
	case errors.Is(err, context.DeadlineExceeded):
		code = CodeRequestTimeout
	}
	return ErrorMessage(id, code, err.Error())
}
