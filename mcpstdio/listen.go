package mcpstdio

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
)

// listenAll serves a subscriptions/listen (MCP 2026-07-28) on a backend of
// several targets: each target that can announce anything gets a listen of
// its own, and the client one stream. The targets' acknowledgements are
// joined into the one the client gets first; their notifications follow,
// each tagged with the client's subscription id (the id of its listen),
// resource URIs prefixed as in lists. The stream ends when the client
// leaves (every target's listen is cancelled) or when every target ended
// its listen.
func (s *Session) listenAll(m *Message, r *Reply, key string) {
	var params map[string]json.RawMessage
	if m.Params.Has() {
		json.Unmarshal(m.Bytes(m.Params), &params)
	}
	type sub struct {
		c  *child
		r  *Reply
		id int64
	}
	var subs []sub
	for _, c := range s.children {
		if !c.init.has("tools") && !c.init.has("prompts") && !c.init.has("resources") {
			continue
		}
		p := params
		if !c.init.modern && s.shared {
			// An older child answers no listen: it has none to give.
			continue
		}
		sr := newReply(8)
		sr.frontID, sr.listen = r.frontID, true
		body, _ := json.Marshal(p)
		msg := append(append([]byte(`{"jsonrpc":"2.0","id":0,"method":"subscriptions/listen","params":`), body...), '}')
		sm, err := ParseMessage(msg)
		if err != nil {
			continue
		}
		id, err := c.send(sm, sr)
		if err != nil {
			s.log.Warn("listen: target unavailable", "target", c.target.Name, "err", err)
			continue
		}
		sr.c, sr.childID = c, id
		subs = append(subs, sub{c, sr, id})
	}
	r.s, r.key = s, key
	r.listen = true
	r.onCancel = func(reason string) {
		for _, sb := range subs {
			sb.c.cancel(sb.id, reason)
			sb.r.Close()
		}
	}
	r.onDone = func() { s.untrack(key, r) }
	if len(subs) == 0 {
		r.fail(&CodeError{Code: CodeMethodNotFound, Err: errors.New("no target of this backend can be listened to")})
		return
	}

	var mu sync.Mutex
	acks := make([]any, 0, len(subs))
	acked := 0
	var wg sync.WaitGroup
	for _, sb := range subs {
		wg.Go(func() {
			first := true
			for f := range sb.r.C() {
				if f.Final {
					return
				}
				fm, err := ParseMessage(f.Data)
				if err != nil {
					continue
				}
				if first && fm.MethodName() == "notifications/subscriptions/acknowledged" {
					first = false
					var ack any
					json.Unmarshal(fm.Bytes(fm.Path("params", "notifications")), &ack)
					mu.Lock()
					acks = append(acks, ack)
					acked++
					all := acked == len(subs)
					mu.Unlock()
					if all {
						joined := any(map[string]any{})
						for _, a := range acks {
							joined = mergeJSON(joined, a)
						}
						b, _ := json.Marshal(map[string]any{
							"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
							"params": map[string]any{"_meta": map[string]json.RawMessage{metaSubscriptionID: r.frontID}, "notifications": joined},
						})
						r.push(b)
					}
					continue
				}
				out := f.Data
				if uri := fm.Path("params", "uri"); s.prefixed && uri.Has() && strings.HasPrefix(fm.MethodName(), "notifications/resources/") {
					out = fm.Replace(uri, quote(s.exposedURI(sb.c, fm.String(uri))))
				}
				r.push(out)
			}
		})
	}
	go func() {
		wg.Wait()
		result, _ := json.Marshal(map[string]any{"resultType": "complete", "_meta": map[string]json.RawMessage{metaSubscriptionID: r.frontID}})
		r.finish(ResultMessage(r.frontID, result))
	}()
}
