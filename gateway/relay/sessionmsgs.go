package relay

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
	"github.com/tailgate-dev/tailgate/mcpstdio/buffers"
)

// Messages between a session's client and its children outside the
// client's calls: a child's requests of the client and their answers, the
// client's notifications, and a child's notifications.

// serverRequest is a child's request to the client, waiting for the
// client's answer.
type serverRequest struct {
	c       *child
	childID []byte
	method  string
	timer   *time.Timer
	// answer, if set, takes the client's answer instead of the child: a
	// request of tailgate's own (bridge.go).
	answer chan *jsonrpc.Message
}

// serverRequest passes a child's request to the client under an id of the
// session's own sequence, and answers the child itself if the client does
// not answer in time or the session ends first.
func (s *Session) serverRequest(c *child, m *jsonrpc.Message, held *buffers.Charge) {
	sr := &serverRequest{c: c, childID: m.Bytes(m.ID), method: m.MethodName()}
	if s.sessionless {
		// A sessionless client has no channel back: an older child's
		// request becomes its call's input_required result (MCP
		// 2026-07-28 servers answer that way themselves).
		if c.bridge == toSessionEra && s.park(c, m) {
			return
		}
		go c.write(jsonrpc.ErrorMessage(sr.childID, jsonrpc.CodeMethodNotFound, fmt.Sprintf("tailgate: %s cannot reach a sessionless (2026-07-28) client", sr.method)))
		return
	}
	timeout := s.b.requestTimeout(c.target)
	id, ok := s.addServerRequest(sr, func(id int64) {
		sr.timer = time.AfterFunc(timeout, func() {
			if s.takeServerRequest(id) != nil {
				s.log.Warn("client did not answer a server request", "target", c.target.Name, "method", sr.method, "timeout", timeout)
				c.write(jsonrpc.ErrorMessage(sr.childID, jsonrpc.CodeRequestTimeout, fmt.Sprintf("tailgate: the client did not answer %s within %v", sr.method, timeout)))
			}
		})
	})
	if !ok {
		go c.write(jsonrpc.ErrorMessage(sr.childID, jsonrpc.CodeRequestCancelled, "the MCP session was closed"))
		return
	}
	s.toClient(c, m.Replace(m.ID, strconv.AppendInt(nil, id, 10)), held)
}

// addServerRequest registers sr under the next id of the session's own
// sequence, running arm (if not nil) with that id while no one can find
// it yet; false once the session is ending.
func (s *Session) addServerRequest(sr *serverRequest, arm func(id int64)) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stopping:
		return 0, false
	default:
	}
	s.nextServer++
	id := s.nextServer
	if arm != nil {
		arm(id)
	}
	s.serverReqs[id] = sr
	return id, true
}

func (s *Session) takeServerRequest(id int64) *serverRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	sr := s.serverReqs[id]
	delete(s.serverReqs, id)
	return sr
}

// toClient sends a child's message on the stream of the request in flight
// at that child, else on the client's standalone stream; held is what the
// message read holds of the link's buffers.
func (s *Session) toClient(c *child, msg []byte, held *buffers.Charge) {
	if r := c.related(s.sessionless); r != nil && c.push(r, msg, held) {
		return
	}
	s.notify(msg)
}

// Respond passes the client's answer to a server→client request to the
// child that asked.
func (s *Session) Respond(m *jsonrpc.Message) error {
	id, err := strconv.ParseInt(string(m.Bytes(m.ID)), 10, 64)
	var sr *serverRequest
	if err == nil {
		sr = s.takeServerRequest(id)
	}
	if sr == nil {
		return fmt.Errorf("a response to %s, which no server asked or which was already answered", m.Bytes(m.ID))
	}
	if sr.answer != nil {
		am := *m
		am.Raw = bytes.Clone(m.Raw)
		sr.answer <- &am
		return nil
	}
	sr.timer.Stop()
	return sr.c.write(m.Replace(m.ID, sr.childID))
}

// Notify passes a client notification on: a cancellation to the target
// of the request it cancels, anything else to every child.
func (s *Session) Notify(m *jsonrpc.Message) {
	switch m.MethodName() {
	case "notifications/initialized":
		// tailgate initialized the children itself.
		return
	case "notifications/cancelled":
		id := m.Path("params", "requestId")
		if !id.Has() {
			return
		}
		s.mu.Lock()
		r := s.calls[string(m.Bytes(id))]
		s.mu.Unlock()
		if r != nil {
			reason := m.String(m.Path("params", "reason"))
			if reason == "" {
				reason = "cancelled by the client"
			}
			r.cancel(reason, false)
		}
		return
	}
	for _, c := range s.children {
		if err := c.write(m.Raw); err != nil {
			s.log.Debug("forward notification", "target", c.target.Name, "method", m.MethodName(), "err", err)
		}
	}
}

// childNotification passes a child's notification to the client.
func (s *Session) childNotification(c *child, m *jsonrpc.Message, held *buffers.Charge) {
	if sid := m.Path("params", "_meta", jsonrpc.MetaSubscriptionID); sid.Has() {
		// It belongs to the listen request with that (child) id: it goes
		// on that request's stream, with the client's id for it.
		if strings.HasSuffix(m.MethodName(), "/list_changed") {
			c.listChanged()
		}
		if id, err := strconv.ParseInt(string(m.Bytes(sid)), 10, 64); err == nil {
			if r := c.pendingReply(id); r != nil {
				c.push(r, m.Replace(sid, r.frontID), held)
			}
		}
		return
	}
	switch m.MethodName() {
	case "notifications/progress":
		tok := m.Path("params", "progressToken")
		if !tok.Has() {
			return
		}
		if r := c.byProgressToken(m.Bytes(tok)); r != nil {
			if r.frontToken != nil {
				m.Raw = m.Replace(tok, r.frontToken)
			}
			c.push(r, m.Raw, held)
		}
		return
	case "notifications/message":
		if s.prefixed {
			logger := m.Path("params", "logger")
			name := c.target.Name
			if l := m.String(logger); l != "" {
				name += nameSep + l
			}
			if logger.Has() {
				m.Raw = m.Replace(logger, jsonrpc.Quote(name))
			} else if p := m.Path("params"); p.Has() && m.Raw[p.Start] == '{' {
				m.Raw = m.Replace(jsonrpc.Span{Start: p.Start + 1, End: p.Start + 1}, append(append([]byte(`"logger":`), jsonrpc.Quote(name)...), ','))
			}
		}
	case "notifications/resources/updated":
		if uri := m.Path("params", "uri"); s.prefixed && uri.Has() {
			m.Raw = m.Replace(uri, jsonrpc.Quote(s.exposedURI(c, m.String(uri))))
		}
		s.notify(m.Raw)
		return
	case "notifications/tasks", "notifications/tasks/status":
		if id := m.Path("params", "taskId"); s.prefixed && id.Has() {
			m.Raw = m.Replace(id, jsonrpc.Quote(c.target.Name+nameSep+m.String(id)))
		}
	case "notifications/tools/list_changed", "notifications/prompts/list_changed", "notifications/resources/list_changed":
		c.listChanged()
		if s.sessionless {
			c.legacyListChanged(m.MethodName())
			return
		}
		s.notify(m.Raw)
		return
	case "notifications/cancelled":
		// The child gave up on its own request to the client.
		id := m.Path("params", "requestId")
		s.mu.Lock()
		var front int64
		for fid, sr := range s.serverReqs {
			if sr.c == c && sr.answer == nil && id.Has() && bytes.Equal(sr.childID, m.Bytes(id)) {
				front = fid
				sr.timer.Stop()
				delete(s.serverReqs, fid)
				break
			}
		}
		s.mu.Unlock()
		if front == 0 {
			return
		}
		m.Raw = m.Replace(id, strconv.AppendInt(nil, front, 10))
	}
	s.toClient(c, m.Raw, held)
}
