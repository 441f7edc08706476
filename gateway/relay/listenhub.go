package relay

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// listenEndWait bounds how long a new listen at a child waits for the
// child to answer the listen it replaces (a server that does not answer a
// cancelled request is waited for this long).
const listenEndWait = 2 * time.Second

// listenHub holds tailgate's one subscriptions/listen at a child that
// speaks MCP 2026-07-28, and serves every client listen that reaches the
// child from it. A server keeps one listen per session, and a stdio child
// is one session: go-sdk v1.8.0 keys a listen by its session, and the end
// of any listen ends all of them. Two client listens passed on as they are
// would take each other's notifications away (the older one's end, racing
// the newer one's start, silenced the newer). So the hub's listen asks for
// the union of what its clients ask (every list change the child
// announces, from the first), each client is acknowledged with its own
// part of what the child agreed to, and gets only the notifications it
// asked for, tagged with its own subscription id. When a client asks for
// more (a resource URI, a task), the hub's listen is replaced: the child
// answers the old one before the new one is sent.
type listenHub struct {
	c *child

	mu   sync.Mutex
	subs map[*Reply]*hubSub
	cur  *hubListen // the listen open at the child, or being opened
	last *hubListen // the latest listen, ended or ending: the next waits for it
}

// hubSub is one client listen served by a hub.
type hubSub struct {
	asked  map[string]any // the client's notifications filter
	agreed map[string]any // its part of what the child agreed to; nil until then
}

// hubListen is one listen of the hub's at the child.
type hubListen struct {
	r        *Reply
	id       int64
	stopping bool // cancelled, or to be once it reaches the child
	asked    map[string]any
	meta     json.RawMessage // the _meta of the client listen that opened it
	agreed   map[string]any  // the child's acknowledgement; nil until it came
	done     chan struct{}   // closed when the child has ended it
	once     sync.Once
}

func (l *hubListen) ended() { l.once.Do(func() { close(l.done) }) }

// listenHub is c's hub, made on first use.
func (c *child) listenHub() *listenHub {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hub == nil {
		c.hub = &listenHub{c: c, subs: map[*Reply]*hubSub{}}
	}
	return c.hub
}

// attach serves a client listen whose subscription id is frontID and
// whose notifications filter is asked (and _meta meta, which the hub's
// listen carries if this one opens it): the returned Reply yields its
// acknowledgement, then its notifications, and ends when the hub's listen
// at the child ends. detach ends it early.
func (h *listenHub) attach(frontID []byte, asked map[string]any, meta json.RawMessage) *Reply {
	sr := newReply(8)
	sr.frontID, sr.listen = frontID, true
	sub := &hubSub{asked: asked}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[sr] = sub
	if l := h.cur; l != nil && coversFilter(l.asked, asked) {
		if l.agreed != nil {
			sub.agreed = filterAgreed(asked, l.agreed)
			sr.push(subAck(frontID, sub.agreed))
		}
		return sr
	}
	base := map[string]any{}
	if h.cur != nil {
		base = h.cur.asked
	} else {
		for _, lc := range listChanges {
			if h.c.init.listChanged(lc.capability) {
				base[lc.filter] = true
			}
		}
	}
	l := &hubListen{asked: unionFilter(base, asked), meta: meta, done: make(chan struct{})}
	prev := h.last
	if h.cur != nil {
		prev = h.cur
		h.stop(h.cur, "replaced by a listen that asks for more")
	}
	h.cur, h.last = l, l
	go h.run(l, prev)
	return sr
}

// detach ends a client listen; the hub's listen at the child ends with
// the last one.
func (h *listenHub) detach(sr *Reply) {
	h.mu.Lock()
	delete(h.subs, sr)
	if len(h.subs) == 0 && h.cur != nil {
		h.stop(h.cur, "no client listens")
		h.cur = nil
	}
	h.mu.Unlock()
	sr.abandon()
}

// stop cancels l at the child (or, not sent yet, once it is), keeping
// its answer expected: the child's answer says it has let go of the listen
// (or, past listenEndWait, it is given up). Called with h.mu held.
func (h *listenHub) stop(l *hubListen, reason string) {
	l.stopping = true
	if l.id == 0 {
		return // run cancels it once sent, or does not send it
	}
	h.cancelAtChild(l, reason)
}

func (h *listenHub) cancelAtChild(l *hubListen, reason string) {
	msg := fmt.Appendf(nil, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":%d,"reason":%s}}`, l.id, jsonrpc.Quote(reason))
	if err := h.c.write(msg); err != nil {
		h.c.log.Debug("send cancellation", "err", err)
	}
	go func() {
		t := time.NewTimer(listenEndWait)
		defer t.Stop()
		select {
		case <-l.done:
		case <-t.C:
			h.c.forget(l.id)
			l.r.abandon()
			l.ended()
		}
	}()
}

// run opens l at the child, once prev has ended there, and passes on what
// the child sends on it until it ends.
func (h *listenHub) run(l *hubListen, prev *hubListen) {
	if prev != nil {
		select {
		case <-prev.done:
		case <-time.After(listenEndWait + time.Second):
		}
	}
	params := map[string]any{"notifications": l.asked}
	if l.meta != nil {
		params["_meta"] = l.meta
	}
	body, _ := json.Marshal(params)
	m, err := jsonrpc.ParseMessage(append(append([]byte(`{"jsonrpc":"2.0","id":0,"method":"subscriptions/listen","params":`), body...), '}'))
	if err == nil && h.c.bridge == toModern {
		m, err = h.c.withClientMeta(m)
	}
	h.mu.Lock()
	current := h.cur == l
	h.mu.Unlock()
	if err != nil || !current {
		l.ended()
		return
	}
	r := newReply(8)
	r.frontID, r.listen = []byte("0"), true
	id, err := h.c.send(m, r)
	if err != nil {
		h.c.log.Warn("listen: target unavailable", "target", h.c.target.Name, "err", err)
		l.ended()
		h.endSubs(l, errorResponse([]byte("0"), err))
		return
	}
	h.mu.Lock()
	l.r, l.id = r, id
	stopping := l.stopping
	h.mu.Unlock()
	if stopping {
		h.cancelAtChild(l, "no client listens")
	}
	var final []byte
	for f := range r.C() {
		f.Release()
		if f.Final {
			final = f.Data
			break
		}
		h.relay(l, f.Data)
	}
	l.ended()
	if l.agreed != nil || !isErrorResponse(final) {
		final = nil
	}
	h.endSubs(l, final)
}

// endSubs ends every client listen of the hub when l, still its current
// listen, ended at the child (the child ended it, or exited); refused, an
// error response from the child that each client gets with its own id.
func (h *listenHub) endSubs(l *hubListen, refused []byte) {
	h.mu.Lock()
	if h.cur != l {
		h.mu.Unlock()
		return
	}
	h.cur = nil
	subs := h.subs
	h.subs = map[*Reply]*hubSub{}
	h.mu.Unlock()
	for sr := range subs {
		var out []byte
		if m, err := jsonrpc.ParseMessage(refused); err == nil && refused != nil {
			out = m.Replace(m.ID, sr.frontID)
		}
		sr.finish(out)
	}
}

// isErrorResponse reports whether data is a JSON-RPC error response.
func isErrorResponse(data []byte) bool {
	m, err := jsonrpc.ParseMessage(data)
	return err == nil && m.Path("error").Has()
}

// relay passes one message of the child's listen l on: the
// acknowledgement to the clients waiting for it, a notification to the
// clients that asked for it.
func (h *listenHub) relay(l *hubListen, data []byte) {
	m, err := jsonrpc.ParseMessage(data)
	if err != nil {
		return
	}
	method := m.MethodName()
	type out struct {
		sr   *Reply
		data []byte
	}
	var to []out
	h.mu.Lock()
	if method == "notifications/subscriptions/acknowledged" {
		var agreed map[string]any
		json.Unmarshal(m.Bytes(m.Path("params", "notifications")), &agreed)
		if agreed == nil {
			agreed = map[string]any{}
		}
		l.agreed = agreed
		if h.cur == l {
			for sr, sub := range h.subs {
				if sub.agreed == nil {
					sub.agreed = filterAgreed(sub.asked, agreed)
					to = append(to, out{sr, subAck(sr.frontID, sub.agreed)})
				}
			}
		}
	} else if sid := m.Path("params", "_meta", jsonrpc.MetaSubscriptionID); sid.Has() && h.cur == l {
		for sr, sub := range h.subs {
			if sub.agreed != nil && wants(sub.agreed, m) {
				to = append(to, out{sr, m.Replace(sid, sr.frontID)})
			}
		}
	}
	h.mu.Unlock()
	for _, o := range to {
		o.sr.push(o.data)
	}
}

// wants reports whether a listen that was agreed filter gets notification
// m: a list change it asked for, an update of a resource or a task it
// named; anything else goes to every listen.
func wants(filter map[string]any, m *jsonrpc.Message) bool {
	method := m.MethodName()
	for _, lc := range listChanges {
		if method == lc.method {
			return filter[lc.filter] == true
		}
	}
	switch {
	case method == "notifications/resources/updated":
		return listHas(filter["resourceSubscriptions"], m.String(m.Path("params", "uri")))
	case strings.HasPrefix(method, "notifications/tasks"):
		if ids, ok := filter["taskIds"]; ok {
			return listHas(ids, m.String(m.Path("params", "taskId")))
		}
	}
	return true
}

func listHas(list any, v string) bool {
	l, _ := list.([]any)
	return slices.Contains(l, any(v))
}

// unionFilter is a notifications filter that asks for all that a and b
// ask: flags set in either, lists joined.
func unionFilter(a, b map[string]any) map[string]any {
	u := make(map[string]any, len(a)+len(b))
	for k, v := range a {
		u[k] = v
	}
	for k, v := range b {
		switch bv := v.(type) {
		case bool:
			u[k] = bv || u[k] == true
		case []any:
			al, _ := u[k].([]any)
			joined := slices.Clone(al)
			for _, x := range bv {
				if !slices.Contains(joined, x) {
					joined = append(joined, x)
				}
			}
			u[k] = joined
		default:
			if _, ok := u[k]; !ok {
				u[k] = v
			}
		}
	}
	return u
}

// coversFilter reports whether a listen that asked for have also has all
// that want asks for.
func coversFilter(have, want map[string]any) bool {
	for k, v := range want {
		switch wv := v.(type) {
		case bool:
			if wv && have[k] != true {
				return false
			}
		case []any:
			hl, ok := have[k].([]any)
			if !ok {
				return false
			}
			for _, x := range wv {
				if !slices.Contains(hl, x) {
					return false
				}
			}
		default:
			if _, ok := have[k]; !ok {
				return false
			}
		}
	}
	return true
}

// filterAgreed is a client's part of what the child agreed to: what the
// client asked for and the child agreed.
func filterAgreed(asked, agreed map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range asked {
		av, ok := agreed[k]
		if !ok {
			continue
		}
		switch wv := v.(type) {
		case bool:
			if wv && av == true {
				out[k] = true
			}
		case []any:
			al, _ := av.([]any)
			both := []any{}
			for _, x := range wv {
				if slices.Contains(al, x) {
					both = append(both, x)
				}
			}
			out[k] = both
		default:
			out[k] = av
		}
	}
	return out
}

// subAck is a client listen's acknowledgement.
func subAck(frontID []byte, agreed map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{
		"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
		"params": map[string]any{"_meta": map[string]json.RawMessage{jsonrpc.MetaSubscriptionID: frontID}, "notifications": agreed},
	})
	return b
}
