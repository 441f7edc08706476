package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// A server written for MCP 2026-07-28 alone refuses initialize: a client
// of the session era (initialize, Mcp-Session-Id) could not reach it. For
// such a client tailgate speaks 2026-07-28 to the child in its stead:
// every request the client sends carries the client's version,
// capabilities and info in _meta, as a sessionless request does; and a
// result that asks for input (resultType "input_required", SEP-2322)
// becomes the session era's server→client requests (elicitation,
// sampling, roots) to the client, whose answers tailgate sends back in
// the retried request, until the child answers for good. This is the
// other half of mrtr.go, which bridges an older child to a sessionless
// client.

// maxInputRounds bounds the input_required rounds of one call, as go-sdk's
// client does.
const maxInputRounds = 10

// discoverForSessionClient speaks server/discover to a child that refused
// initialize, for a client of the session era whose initialize params are
// params. It reports whether the child speaks 2026-07-28, and if so keeps
// what tailgate tells the child of the client.
func (c *child) discoverForSessionClient(ctx context.Context, params []byte) bool {
	meta, version := clientMetaOf(params)
	dp, _ := json.Marshal(map[string]any{"_meta": meta})
	res, err := c.request(ctx, "server/discover", dp)
	if err != nil || !res.Result.Has() {
		return false
	}
	if c.init.parseDiscover(res.Bytes(res.Result)) != nil || !c.init.speaksModern() {
		c.init = childInit{}
		return false
	}
	c.clientMeta, c.clientVersion = meta, version
	c.bridge = toModern
	return true
}

// clientMetaOf is what a child of 2026-07-28 only is told, in each
// request's _meta, of the session client whose initialize params are
// params, and the client's protocol version.
func clientMetaOf(params []byte) (map[string]json.RawMessage, string) {
	var p struct {
		ProtocolVersion string          `json:"protocolVersion"`
		Capabilities    json.RawMessage `json:"capabilities"`
		ClientInfo      json.RawMessage `json:"clientInfo"`
	}
	json.Unmarshal(params, &p)
	meta := map[string]json.RawMessage{
		jsonrpc.MetaProtocolVersion:    jsonrpc.Quote(jsonrpc.ModernVersion),
		jsonrpc.MetaClientCapabilities: json.RawMessage(`{}`),
		jsonrpc.MetaClientInfo:         json.RawMessage(tailgateClientInfo),
	}
	if len(p.Capabilities) > 0 && p.Capabilities[0] == '{' {
		meta[jsonrpc.MetaClientCapabilities] = p.Capabilities
	}
	if len(p.ClientInfo) > 0 && p.ClientInfo[0] == '{' {
		meta[jsonrpc.MetaClientInfo] = p.ClientInfo
	}
	if p.ProtocolVersion == "" {
		p.ProtocolVersion = "2025-11-25"
	}
	return meta, p.ProtocolVersion
}

// withParams is m with its params changed by edit (a map of the params'
// fields, created if m has none).
func withParams(m *jsonrpc.Message, edit func(params map[string]json.RawMessage)) (*jsonrpc.Message, error) {
	var params map[string]json.RawMessage
	if m.Params.Has() {
		if err := json.Unmarshal(m.Bytes(m.Params), &params); err != nil {
			return nil, fmt.Errorf("params: %w", err)
		}
	}
	if params == nil { // none, or null
		params = map[string]json.RawMessage{}
	}
	edit(params)
	p, err := json.Marshal(params)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(`{"jsonrpc":"2.0",`)
	if m.ID.Has() {
		b.WriteString(`"id":`)
		b.Write(m.Bytes(m.ID))
		b.WriteByte(',')
	}
	b.WriteString(`"method":`)
	b.Write(jsonrpc.Quote(m.MethodName()))
	b.WriteString(`,"params":`)
	b.Write(p)
	b.WriteByte('}')
	return jsonrpc.ParseMessage(b.Bytes())
}

// withClientMeta is m carrying, in its _meta, what c is told of the
// client (discoverForSessionClient); what the client put there stays.
func (c *child) withClientMeta(m *jsonrpc.Message) (*jsonrpc.Message, error) {
	return withParams(m, func(params map[string]json.RawMessage) {
		var meta map[string]json.RawMessage
		json.Unmarshal(params["_meta"], &meta)
		if meta == nil { // none, null, or not an object
			meta = map[string]json.RawMessage{}
		}
		for k, v := range c.clientMeta {
			if _, ok := meta[k]; !ok {
				meta[k] = v
			}
		}
		params["_meta"], _ = json.Marshal(meta)
	})
}

// inputRetry is how a call to a child spoken to for a session client is
// sent again with the answers to its input requests.
type inputRetry struct {
	send   func(*jsonrpc.Message) (int64, error) // sends a message of the call to the child
	base   *jsonrpc.Message                      // the call as first sent, with _meta
	rounds int
}

// fulfill answers a child's input_required result of call r: each input
// request goes to the client as the session era's request, and the call
// is sent again with the answers and the child's requestState.
func (s *Session) fulfill(c *child, r *Reply, res *jsonrpc.Message) {
	ir := r.retry
	ir.rounds++
	// The client's answer may take a person's time: the call's timeout
	// starts again with each retry, ask bounds each question.
	r.mu.Lock()
	if r.timer != nil {
		r.timer.Stop()
	}
	r.mu.Unlock()
	var result struct {
		InputRequests map[string]struct {
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		} `json:"inputRequests"`
		RequestState json.RawMessage `json:"requestState"`
	}
	if err := json.Unmarshal(res.Bytes(res.Result), &result); err != nil {
		r.fail(fmt.Errorf("target %q: input_required result: %w", c.target.Name, err))
		return
	}
	switch {
	case len(result.InputRequests) == 0:
		r.fail(&CodeError{Code: jsonrpc.CodeInternalError, Err: fmt.Errorf("target %q is busy (input_required without input requests); retry later", c.target.Name)})
		return
	case ir.rounds > maxInputRounds:
		r.fail(&CodeError{Code: jsonrpc.CodeInternalError, Err: fmt.Errorf("target %q asked for input %d times in one call", c.target.Name, maxInputRounds)})
		return
	}
	responses := make(map[string]json.RawMessage, len(result.InputRequests))
	for _, key := range slices.Sorted(mapKeys(result.InputRequests)) {
		req := result.InputRequests[key]
		answer, err := s.ask(c, r, req.Method, req.Params)
		if err != nil {
			r.fail(err)
			return
		}
		responses[key] = answer
	}
	retry, err := withParams(ir.base, func(params map[string]json.RawMessage) {
		params["inputResponses"], _ = json.Marshal(responses)
		if len(result.RequestState) > 0 && string(result.RequestState) != "null" {
			params["requestState"] = result.RequestState
		} else {
			delete(params, "requestState")
		}
	})
	if err != nil {
		r.fail(err)
		return
	}
	r.mu.Lock()
	if r.finished {
		r.mu.Unlock()
		return // cancelled, or its session ended, while the client answered
	}
	r.timer = nil // stopped above; send arms a new one (Reply.sentAs)
	r.mu.Unlock()
	if _, err := ir.send(retry); err != nil {
		r.fail(err)
	}
}

// ask sends the client a request of tailgate's on the stream of call r and
// waits for its answer's result, for no longer than the target's request
// timeout, the call or the session.
func (s *Session) ask(c *child, r *Reply, method string, params json.RawMessage) (json.RawMessage, error) {
	sr := &serverRequest{c: c, method: method, answer: make(chan *jsonrpc.Message, 1)}
	id, ok := s.addServerRequest(sr, nil)
	if !ok {
		return nil, s.ended()
	}
	defer s.takeServerRequest(id)
	if len(params) == 0 {
		params = json.RawMessage(`{}`)
	}
	msg := fmt.Appendf(nil, `{"jsonrpc":"2.0","id":%s,"method":%s,"params":%s}`, strconv.FormatInt(id, 10), jsonrpc.Quote(method), params)
	if !r.push(msg) {
		return nil, fmt.Errorf("target %q: the client left while its input was asked for", c.target.Name)
	}
	timeout := s.b.requestTimeout(c.target)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	// A question tailgate gives up on is withdrawn, so that the client's
	// form or prompt does not wait for nobody.
	withdraw := func(reason string) {
		s.notify(fmt.Appendf(nil, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":%d,"reason":%s}}`, id, jsonrpc.Quote(reason)))
	}
	select {
	case a := <-sr.answer:
		if a.Error.Has() {
			return nil, &WireError{Raw: bytes.Clone(a.Bytes(a.Error))}
		}
		return json.RawMessage(bytes.Clone(a.Bytes(a.Result))), nil
	case <-r.gone:
		withdraw("the call was cancelled")
		return nil, fmt.Errorf("target %q: the call ended while its input was asked for", c.target.Name)
	case <-s.stopping:
		return nil, s.ended()
	case <-timer.C:
		withdraw("no answer in time")
		return nil, &CodeError{Code: jsonrpc.CodeRequestTimeout, Err: fmt.Errorf("tailgate: the client did not answer %s within %v", method, timeout)}
	}
}

// listenForSessionClient opens a listen at a child of 2026-07-28 only for
// its client of the session era, which learns of list changes by
// notification only: the child's list_changed notifications reach the
// client as the session era's. It ends with the child.
func (s *Session) listenForSessionClient(c *child) {
	asked := map[string]bool{}
	for _, lc := range listChanges {
		if c.init.listChanged(lc.capability) {
			asked[lc.filter] = true
		}
	}
	if len(asked) == 0 {
		return
	}
	m, err := jsonrpc.ParseMessage([]byte(`{"jsonrpc":"2.0","id":0,"method":"subscriptions/listen"}`))
	if err == nil {
		m, err = withParams(m, func(params map[string]json.RawMessage) {
			params["notifications"], _ = json.Marshal(asked)
		})
	}
	if err == nil {
		m, err = c.withClientMeta(m)
	}
	if err != nil {
		return
	}
	r := newReply(8)
	r.frontID, r.listen = []byte("0"), true
	id, err := c.send(m, r)
	if err != nil {
		s.log.Warn("listen for list changes: target unavailable", "target", c.target.Name, "err", err)
		return
	}
	r.mu.Lock()
	r.c, r.childID = c, id
	r.mu.Unlock()
	go func() {
		for f := range r.C() {
			f.Release() // parsed below, and dropped
			if f.Final {
				return
			}
			fm, err := jsonrpc.ParseMessage(f.Data)
			if err != nil || !strings.HasSuffix(fm.MethodName(), "/list_changed") {
				continue
			}
			s.notify(fmt.Appendf(nil, `{"jsonrpc":"2.0","method":%s}`, jsonrpc.Quote(fm.MethodName())))
		}
	}()
}
