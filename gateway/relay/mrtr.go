package relay

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// MCP 2026-07-28 clients cannot be asked anything while they wait: a
// server that needs input answers input_required, and the client retries
// with the answers (SEP-2322, "MRTR"). An older child asks with a request
// of its own (sampling, elicitation, roots) in the middle of a call. For a
// sessionless client, tailgate bridges the two: the child's request
// becomes the call's input_required result, the call stays in flight at
// the child ("parked"), and the client's retry carries the answer to the
// child's request and waits for the call's result.

// requestStatePrefix marks a requestState tailgate issued for a parked
// call; any other requestState is the target's own and passes through.
const requestStatePrefix = "tailgate-mrtr:"

// parkedCall is a call of a sessionless client that waits at a legacy
// child for the answer to the child's request.
type parkedCall struct {
	c        *child
	callID   int64  // the child's id of the parked call
	key      string // the input request's key in inputRequests
	serverID []byte // the child's id of its request
	request  []byte // {"method":…,"params":…} as the client gets it
	toolCall bool
	// what is the call's method and name (callWhat), which its retry
	// must repeat.
	what string
	// placeholder holds the call's place among the child's pending
	// requests; answer is the call's response, should the child send it
	// while parked.
	placeholder *Reply
	answer      []byte // under c.mu
	timer       *time.Timer
}

// park turns a legacy child's request to a sessionless client into the
// input_required result of the call it interrupts. It reports false if no
// single client call is in flight at the child to carry it.
func (s *Session) park(c *child, m *jsonrpc.Message) bool {
	r := c.related(true)
	if r == nil {
		return false
	}
	r.mu.Lock()
	callID, started := r.childID, r.c != nil
	r.mu.Unlock()
	if !started {
		return false
	}
	pc := &parkedCall{c: c, callID: callID, serverID: m.Bytes(m.ID), toolCall: r.toolCall, what: r.what}
	pc.key = "tailgate-input-" + strconv.FormatInt(s.progressSeq.Add(1), 10)
	params := []byte("{}")
	if m.Params.Has() {
		params = m.Bytes(m.Params)
	}
	pc.request = fmt.Appendf(nil, `{"method":%s,"params":%s}`, jsonrpc.Quote(m.MethodName()), params)
	pc.placeholder = newReply(1)
	pc.placeholder.parked = pc
	token := rand.Text()

	c.mu.Lock()
	if c.pending[callID] != r {
		c.mu.Unlock()
		return false // the call ended meanwhile
	}
	c.pending[callID] = pc.placeholder
	c.mu.Unlock()

	timeout := s.b.requestTimeout(c.target)
	s.mu.Lock()
	if s.parked == nil {
		s.parked = make(map[string]*parkedCall)
	}
	s.parked[token] = pc
	s.mu.Unlock()
	pc.timer = time.AfterFunc(timeout, func() {
		if s.takeParked(token) == nil {
			return
		}
		s.log.Warn("client did not come back with the input a call needed", "target", c.target.Name, "method", m.MethodName(), "timeout", timeout)
		c.write(jsonrpc.ErrorMessage(pc.serverID, jsonrpc.CodeRequestTimeout, fmt.Sprintf("tailgate: the client did not answer %s within %v", m.MethodName(), timeout)))
		c.cancel(callID, "the client did not come back with the input the call needed")
	})
	r.finishAs(jsonrpc.ResultMessage(r.frontID, inputRequired(pc, token)), OutcomeOK)
	return true
}

// inputRequired is the result that asks the client for pc's input.
func inputRequired(pc *parkedCall, token string) []byte {
	return fmt.Appendf(nil, `{"resultType":"input_required","inputRequests":{%s:%s},"requestState":%s}`,
		jsonrpc.Quote(pc.key), pc.request, jsonrpc.Quote(requestStatePrefix+token))
}

func (s *Session) takeParked(token string) *parkedCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	pc := s.parked[token]
	delete(s.parked, token)
	return pc
}

// resume serves the retry of a parked call: the client's answer goes to
// the child's request, and r waits for the call's result.
func (s *Session) resume(m *jsonrpc.Message, r *Reply, state string) {
	token := strings.TrimPrefix(state, requestStatePrefix)
	pc := s.takeParked(token)
	if pc == nil {
		r.fail(errInvalidRequestState)
		return
	}
	answer := m.Path("params", "inputResponses", pc.key)
	if !answer.Has() {
		// Asked again, as a server does when a response is missing.
		s.mu.Lock()
		s.parked[token] = pc
		s.mu.Unlock()
		r.finishAs(jsonrpc.ResultMessage(r.frontID, inputRequired(pc, token)), OutcomeOK)
		return
	}
	pc.timer.Stop()
	c := pc.c
	timeout := s.b.requestTimeout(c.target)
	r.mu.Lock()
	r.c, r.childID, r.timeout, r.toolCall = c, pc.callID, timeout, pc.toolCall
	r.timer = time.AfterFunc(timeout, r.expire)
	r.mu.Unlock()
	c.mu.Lock()
	done := pc.answer
	if done == nil && c.pending[pc.callID] == pc.placeholder {
		c.pending[pc.callID] = r
	}
	c.mu.Unlock()
	if done != nil {
		if dm, err := jsonrpc.ParseMessage(done); err == nil {
			c.deliver(r, dm, nil)
		}
		return
	}
	reply := append(append(append([]byte(`{"jsonrpc":"2.0","id":`), pc.serverID...), `,"result":`...), m.Bytes(answer)...)
	if err := c.write(append(reply, '}')); err != nil {
		r.fail(err)
	}
}

var errInvalidRequestState = &CodeError{Code: jsonrpc.CodeInvalidParams, Err: errors.New("invalid requestState: not one tailgate issued, already used, or expired")}

// checkRetry refuses a retry that does not name the call it resumes. A
// retry is routed and judged (policy, with the caller's identity at the
// retry) by the method and name it carries, and resumes the parked call:
// they must be one call, or a retry naming an allowed tool would resume
// a call to one the caller may no longer use.
func (s *Session) checkRetry(m *jsonrpc.Message, state string) error {
	s.mu.Lock()
	pc := s.parked[strings.TrimPrefix(state, requestStatePrefix)]
	s.mu.Unlock()
	if pc == nil {
		return errInvalidRequestState
	}
	if callWhat(m) != pc.what {
		return &CodeError{Code: jsonrpc.CodeInvalidParams, Err: fmt.Errorf("invalid requestState: it was issued for another call than this %s", m.MethodName())}
	}
	return nil
}

// callWhat is a call's method and the name (or URI) it names.
func callWhat(m *jsonrpc.Message) string {
	name := ""
	if sp, ok := m.NameSpan(); ok {
		name = m.String(sp)
	}
	return m.MethodName() + "\x00" + name
}

// isRetry reports whether m retries a call tailgate parked, and with which
// requestState.
func isRetry(m *jsonrpc.Message) (string, bool) {
	st := m.Path("params", "requestState")
	if !st.Has() || !bytes.HasPrefix(m.Bytes(st), []byte(`"`+requestStatePrefix)) {
		return "", false
	}
	return m.String(st), true
}
