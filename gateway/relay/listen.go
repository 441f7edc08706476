package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// listenAll serves a subscriptions/listen (MCP 2026-07-28) on a backend of
// several targets: each target that can announce anything gets a listen of
// its own, and the client one stream. The targets' acknowledgements are
// joined into the one the client gets first; their notifications follow,
// each tagged with the client's subscription id (the id of its listen),
// resource URIs prefixed as in lists. The stream ends when the client
// leaves (every target's listen is cancelled) or when every target ended
// its listen.
func (s *Session) listenAll(m *jsonrpc.Message, r *Reply, key string) {
	r.s, r.key = s, key
	r.listen = true
	var params struct {
		Notifications map[string]any `json:"notifications"`
	}
	if err := json.Unmarshal(m.Bytes(m.Params), &params); err != nil || params.Notifications == nil {
		r.onDone = func() { s.untrack(key, r) }
		r.fail(&CodeError{Code: jsonrpc.CodeInvalidParams, Err: errors.New("subscriptions/listen: params.notifications must be an object")})
		return
	}
	subs := s.openListens(m, r.frontID)
	r.onCancel = func(reason string) {
		for _, sb := range subs {
			switch {
			case sb.hub:
				sb.c.listenHub().detach(sb.r)
			case sb.r.legacy != nil:
				sb.c.forget(sb.id)
				sb.r.abandon()
			default:
				sb.c.cancel(sb.id, reason)
				sb.r.Close()
			}
		}
	}
	r.onDone = func() { s.untrack(key, r) }
	if len(subs) == 0 {
		r.fail(&CodeError{Code: jsonrpc.CodeMethodNotFound, Err: errors.New("no target of this backend can be listened to")})
		return
	}

	acks := &listenAcks{r: r, want: len(subs), acks: make([]any, 0, len(subs)), all: make(chan struct{})}
	var wg sync.WaitGroup
	for _, sb := range subs {
		wg.Go(func() { s.relayListen(r, sb, acks) })
	}
	go func() {
		wg.Wait()
		if refused := acks.refusal(); refused != nil {
			r.finish(refused)
			return
		}
		result, _ := json.Marshal(map[string]any{"resultType": "complete", "_meta": map[string]json.RawMessage{jsonrpc.MetaSubscriptionID: r.frontID}})
		r.finish(jsonrpc.ResultMessage(r.frontID, result))
	}()
}

// listenSub is one target's part of a joined listen: the child, the reply
// its listen answers, and the listen's id at the child.
type listenSub struct {
	c   *child
	r   *Reply
	id  int64
	hub bool // served by the child's listenHub
}

// openListens opens a listen at each target that can announce anything,
// for the client's listen m (its id frontID); a target that cannot be
// reached is left out.
func (s *Session) openListens(m *jsonrpc.Message, frontID []byte) []listenSub {
	var params map[string]json.RawMessage
	if m.Params.Has() {
		json.Unmarshal(m.Bytes(m.Params), &params)
	}
	var subs []listenSub
	for _, c := range s.children {
		if !c.init.has("tools") && !c.init.has("prompts") && !c.init.has("resources") || !c.alive() && s.degrades() {
			continue
		}
		if c.bridge == toSessionEra {
			// An older child answers no listen, but announces list
			// changes on its own: tailgate listens for it.
			if sr, id := c.listenForLegacy(frontID, params); sr != nil {
				subs = append(subs, listenSub{c: c, r: sr, id: id})
			}
			continue
		}
		p := s.childListenParams(c, params)
		if c.proc != nil {
			var asked map[string]any
			json.Unmarshal(p["notifications"], &asked)
			subs = append(subs, listenSub{c: c, r: c.listenHub().attach(frontID, asked, p["_meta"]), hub: true})
			continue
		}
		// A remote target serves each listen as a request of its own.
		sr := newReply(8)
		sr.frontID, sr.listen = frontID, true
		body, _ := json.Marshal(p)
		msg := append(append([]byte(`{"jsonrpc":"2.0","id":0,"method":"subscriptions/listen","params":`), body...), '}')
		sm, err := jsonrpc.ParseMessage(msg)
		if err != nil {
			continue
		}
		id, err := c.send(sm, sr)
		if err != nil {
			s.log.Warn("listen: target unavailable", "target", c.target.Name, "err", err)
			continue
		}
		sr.c, sr.childID = c, id
		subs = append(subs, listenSub{c: c, r: sr, id: id})
	}
	return subs
}

// listenAcks gathers the targets' acknowledgements of a joined listen.
// The joined acknowledgement comes first on the client's stream (SEP-
// 2575): a target's notifications wait until every target acknowledged
// (or ended its listen), which closes all.
type listenAcks struct {
	r    *Reply // the client's listen
	want int    // how many targets listen
	all  chan struct{}

	mu      sync.Mutex
	acks    []any
	acked   int
	agreed  bool   // a target acknowledged
	refused []byte // the first target's refusal (an error response)
}

// add takes one target's acknowledgement (nil: it has none to join); the
// last one sends the joined acknowledgement, unless every target refused.
func (a *listenAcks) add(ack any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.acks = append(a.acks, ack)
	a.acked++
	a.agreed = a.agreed || ack != nil
	if a.acked == a.want {
		if a.agreed || a.refused == nil {
			a.r.push(joinedAck(a.r.frontID, a.acks))
		}
		close(a.all)
	}
}

// refuse takes a target's refusal of the listen, before it acknowledged.
func (a *listenAcks) refuse(resp []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.refused == nil {
		a.refused = resp
	}
}

// refusal is the error the client's listen ends with: a target's, when no
// target acknowledged it.
func (a *listenAcks) refusal() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.agreed {
		return nil
	}
	return a.refused
}

// relayListen passes one target's listen (sb) on to the client's (r): its
// acknowledgement to acks, then, once every target acknowledged, its
// notifications, until it ends or the client leaves.
func (s *Session) relayListen(r *Reply, sb listenSub, acks *listenAcks) {
	first := true
	defer func() {
		if first {
			acks.add(nil) // ended without acknowledging: nothing to join
		}
	}()
	for f := range sb.r.C() {
		f.Release() // what is passed on is a message of its own
		if f.Final {
			if first && f.Data != nil {
				acks.refuse(f.Data)
			}
			return
		}
		fm, err := jsonrpc.ParseMessage(f.Data)
		if err != nil {
			continue
		}
		if first && fm.MethodName() == "notifications/subscriptions/acknowledged" {
			first = false
			var agreed map[string]any
			json.Unmarshal(fm.Bytes(fm.Path("params", "notifications")), &agreed)
			if ids, ok := agreed["taskIds"].([]any); ok && s.prefixed {
				for i, id := range ids {
					if str, ok := id.(string); ok {
						ids[i] = sb.c.target.Name + nameSep + str
					}
				}
			}
			acks.add(agreed)
			continue
		}
		if first {
			first = false // a target that did not acknowledge first
			acks.add(nil)
		}
		select {
		case <-acks.all:
		case <-r.gone:
			return
		}
		out := f.Data
		if uri := fm.Path("params", "uri"); s.prefixed && uri.Has() && strings.HasPrefix(fm.MethodName(), "notifications/resources/") {
			out = fm.Replace(uri, jsonrpc.Quote(s.exposedURI(sb.c, fm.String(uri))))
		}
		if id := fm.Path("params", "taskId"); s.prefixed && id.Has() && strings.HasPrefix(fm.MethodName(), "notifications/tasks") {
			out = fm.Replace(id, jsonrpc.Quote(sb.c.target.Name+nameSep+fm.String(id)))
		}
		sb.c.push(r, out, nil)
	}
}

// listChanges are the lists whose changes a child announces: the
// capability that has them, the listen filter that asks for them, and the
// notification.
var listChanges = []struct{ capability, filter, method string }{
	{"tools", "toolsListChanged", "notifications/tools/list_changed"},
	{"prompts", "promptsListChanged", "notifications/prompts/list_changed"},
	{"resources", "resourcesListChanged", "notifications/resources/list_changed"},
}

// listenForLegacy is an older child's part of a listen whose client id is
// frontID: a reply that no request to the child stands behind (the child
// knows nothing of it), acknowledged at once with the list changes the
// child can announce and the client asked for, fed by the child's
// list_changed notifications (childNotification) and ended with the
// listen or the child.
func (c *child) listenForLegacy(frontID []byte, params map[string]json.RawMessage) (*Reply, int64) {
	var asked map[string]json.RawMessage
	json.Unmarshal(params["notifications"], &asked)
	var methods []string
	agreed := map[string]bool{}
	for _, lc := range listChanges {
		if string(asked[lc.filter]) == "true" && c.init.listChanged(lc.capability) {
			methods = append(methods, lc.method)
			agreed[lc.filter] = true
		}
	}
	if len(methods) == 0 {
		return nil, 0
	}
	sr := newReply(8)
	sr.frontID, sr.listen, sr.legacy = frontID, true, methods
	c.mu.Lock()
	if c.dead != nil {
		c.mu.Unlock()
		return nil, 0
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = sr
	c.mu.Unlock()
	ack, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged", "params": map[string]any{"notifications": agreed}})
	sr.push(ack)
	return sr, id
}

// legacyListChanged passes an older child's list_changed to the listens
// that tailgate holds for it (listenForLegacy), tagged with each listen's
// subscription id.
func (c *child) legacyListChanged(method string) {
	c.mu.Lock()
	var to []*Reply
	for _, r := range c.pending {
		if slices.Contains(r.legacy, method) {
			to = append(to, r)
		}
	}
	c.mu.Unlock()
	for _, r := range to {
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": method, "params": map[string]any{"_meta": map[string]json.RawMessage{jsonrpc.MetaSubscriptionID: r.frontID}}})
		r.push(b)
	}
}

// childListenParams are a listen's params for one child: the task ids it
// names are those of the child's own tasks that the caller created,
// without their prefix.
func (s *Session) childListenParams(c *child, params map[string]json.RawMessage) map[string]json.RawMessage {
	ids, ok := s.ownListenTaskIDs(c, params)
	if !ok {
		return params
	}
	return withListenTaskIDs(params, ids)
}

// ownListen is a listen m sent to c alone, naming only the tasks of the
// caller's own (childListenParams).
func (s *Session) ownListen(c *child, m *jsonrpc.Message) (*jsonrpc.Message, error) {
	var params map[string]json.RawMessage
	if m.Params.Has() {
		if err := json.Unmarshal(m.Bytes(m.Params), &params); err != nil {
			return nil, &CodeError{Code: jsonrpc.CodeInvalidParams, Err: fmt.Errorf("subscriptions/listen params: %w", err)}
		}
	}
	ids, ok := s.ownListenTaskIDs(c, params)
	if !ok {
		return m, nil
	}
	notes := withListenTaskIDs(params, ids)["notifications"]
	return withParams(m, func(p map[string]json.RawMessage) { p["notifications"] = notes })
}

// joinedAck is the client's acknowledgement of a listen joined from its
// targets' (task ids listed together, the rest merged).
func joinedAck(frontID []byte, acks []any) []byte {
	joined := any(map[string]any{})
	taskIDs := []any{}
	for _, a := range acks {
		if a, ok := a.(map[string]any); ok {
			if ids, ok := a["taskIds"].([]any); ok {
				taskIDs = append(taskIDs, ids...)
				delete(a, "taskIds")
			}
			joined = mergeJSON(joined, a)
		}
	}
	if len(taskIDs) > 0 {
		joined.(map[string]any)["taskIds"] = taskIDs
	}
	b, _ := json.Marshal(map[string]any{
		"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
		"params": map[string]any{"_meta": map[string]json.RawMessage{jsonrpc.MetaSubscriptionID: frontID}, "notifications": joined},
	})
	return b
}
