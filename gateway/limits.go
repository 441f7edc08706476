package gateway

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/tailgate-dev/tailgate/policy"
)

// This file is the limits stage of a call (pipeline.go): a route's
// policies.localRateLimit, each limit a token bucket and a cap on calls
// in flight per key (a CEL expression: a person, a tag, a tool), asked of
// every call its match selects, after authorize. Past a limit the call
// gets a JSON-RPC error naming the limit and when to retry (HTTP 429 with
// Retry-After where the answer is its own HTTP response); the places in
// flight a call holds are given back when it ends, however it ends
// (call.run). What the limits count survives a reload for every limit
// whose definition did not change (limitRegistry).

// limit is one compiled entry of a route's localRateLimit, and what it
// counts.
type limit struct {
	route string // the route's name, for metrics and status
	path  string // its config path, for errors, metrics, audit and status
	spec  limitSpec
	// key names the bucket a call counts against (nil: one for the
	// route); match selects the calls the limit applies to (nil: all).
	key, match *policy.Expr
	keys       *limitKeys
}

// routeLimits are a route's limits, in config order.
type routeLimits struct {
	limits []*limit
	// readsRequest says some expression reads request, whose input is
	// built only then.
	readsRequest bool
}

// limitRegistry is every limit of a config by its identity (limitID): a
// reload's config takes over the counts of each limit whose identity is
// the same, and a changed limit starts afresh.
type limitRegistry map[string]*limit

// limitID is what makes a limit the same across a reload: its route, its
// place in the route's list and its definition.
func limitID(routeKey, path string, rl *RateLimit) string {
	def, _ := json.Marshal(rl)
	return routeKey + "\x00" + path + "\x00" + string(def)
}

// specOf is a limit's numbers, with agentgateway's default of one token
// per fill.
func specOf(rl *RateLimit) limitSpec {
	spec := limitSpec{maxTokens: int64(rl.MaxTokens), perFill: int64(rl.TokensPerFill), interval: time.Duration(rl.FillInterval), concurrency: int64(rl.Concurrency)}
	if spec.maxTokens > 0 && spec.perFill == 0 {
		spec.perFill = 1
	}
	return spec
}

// routeLimits are the limits of route name (at routeKey) for the config st
// is built from, each keeping the counts it had in the running config if
// its identity is unchanged; st's registry records them.
func (s *Server) routeLimits(st *state, routeKey, name string, rp *RoutePolicies) *routeLimits {
	if rp == nil || len(rp.LocalRateLimit) == 0 {
		return nil
	}
	var prev limitRegistry
	if cur := s.state.Load(); cur != nil {
		prev = cur.limits
	}
	if st.limits == nil {
		st.limits = make(limitRegistry)
	}
	out := &routeLimits{}
	for i := range rp.LocalRateLimit {
		rl := &rp.LocalRateLimit[i]
		id := limitID(routeKey, rl.path, rl)
		l := &limit{route: name, path: rl.path, spec: specOf(rl), key: rl.key, match: rl.match}
		if old := prev[id]; old != nil {
			l.keys = old.keys
		} else {
			l.keys = newLimitKeys(l.spec)
		}
		st.limits[id] = l
		out.limits = append(out.limits, l)
		out.readsRequest = out.readsRequest || l.key != nil && l.key.Reads("request") || l.match != nil && l.match.Reads("request")
	}
	return out
}

// callLimits is what a call holds of its route's limits: the places in
// flight it took, and the limit that refused it, if one did.
type callLimits struct {
	held    []heldKey
	refused *limitRefusal
}

// heldKey is what a call took from one limit's key.
type heldKey struct {
	keys  *limitKeys
	key   *keyState
	place bool // a place in flight, besides a token
}

// limitRefusal is the limit that refused a call, for its audit record
// (path, reason) and its answer: retryAfter is when to retry, 0 for a
// limit that could not be evaluated (retrying does not help).
type limitRefusal struct {
	path, reason string
	retryAfter   time.Duration
}

// limit is the limits stage: the call counts against each of its route's
// limits whose match selects it, under the key the limit's expression
// names; the first limit it is past refuses it, and what the others
// counted is given back.
func (c *call) limit() bool {
	rl := c.fs.f.limits.Load()
	if rl == nil {
		return true
	}
	in := c.limitInput(rl)
	// A listen lasts as long as the client listens: it takes a token but
	// no place in flight.
	place := c.msg.MethodName() != "subscriptions/listen"
	now := time.Now()
	for _, l := range rl.limits {
		if l.match != nil {
			ok, err := l.match.Match(in)
			if err != nil {
				return c.limitFailed(l, l.match.Path(), err)
			}
			if !ok {
				continue
			}
		}
		key := ""
		if l.key != nil {
			k, err := l.key.Key(in)
			if err != nil {
				return c.limitFailed(l, l.key.Path(), err)
			}
			key = boundedKey(k)
		}
		k, ref := l.keys.take(key, now, place)
		if ref != nil {
			c.giveBackLimits()
			return c.limited(l, key, ref)
		}
		c.lim.held = append(c.lim.held, heldKey{keys: l.keys, key: k, place: place})
	}
	return true
}

// limitInput is what a route's limit expressions see of the call: the
// caller, the request's method and what it names (mcp.method is the
// request's own: tools/call, tools/list, resources/read, ...), and the
// HTTP request if an expression reads it.
func (c *call) limitInput(rl *routeLimits) policy.Input {
	m := &policy.MCP{Method: c.msg.MethodName()}
	switch c.route.Kind {
	case "tool":
		m.Tool = policy.Tool{Name: c.route.TargetName, Target: c.route.Target}
	case "prompt":
		m.Prompt = policy.Prompt{Name: c.route.TargetName, Target: c.route.Target}
	case "resource":
		m.Resource = policy.Resource{URI: c.route.TargetName, Target: c.route.Target}
	}
	if ts := c.fs.f.secrets; ts != nil && c.route.Target != "" {
		m.Secrets = ts.of(c.ctx, c.route.Target, c.req.src)
	}
	in := policy.Input{Source: c.req.src, MCP: m}
	if rl.readsRequest {
		in.Request = c.authz.req
		if in.Request == nil {
			h := c.req.http
			in.Request = requestInput(h.method, h.path, h.host, h.header)
		}
	}
	return in
}

// maxKeyBytes bounds a key as a limit keeps it: a longer one (a header a
// client chose) is kept as its start and a digest of the whole.
const maxKeyBytes = 256

// boundedKey is key as a limit keeps it, at most about maxKeyBytes long.
func boundedKey(key string) string {
	if len(key) <= maxKeyBytes {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return clipTo(key, maxKeyBytes-40) + hex.EncodeToString(sum[:16])
}

// giveBackLimits undoes what the call took from its limits, when a later
// limit refuses it: a refused call costs nothing.
func (c *call) giveBackLimits() {
	for _, h := range c.lim.held {
		h.keys.giveBack(h.key, h.place)
	}
	c.lim.held = nil
}

// releaseLimits gives back the places in flight the call holds; call.run
// calls it as the call ends, whatever ended it (an answer, an error, a
// cancellation, a client gone).
func (c *call) releaseLimits() {
	for _, h := range c.lim.held {
		if h.place {
			h.keys.release(h.key)
		}
	}
	c.lim.held = nil
}

// limited answers a call limit l refused for key: a JSON-RPC error that
// names the limit and says when to retry, counted, audited and (where the
// answer is its own HTTP response) under HTTP 429 with Retry-After.
func (c *call) limited(l *limit, key string, ref *refusal) bool {
	who := "the route"
	if l.key != nil {
		who = strconv.Quote(clip(key))
	}
	var msg string
	retry := ref.retryAfter
	if ref.concurrency {
		msg = fmt.Sprintf("concurrency limit %s reached for %s: %d requests in flight at most; retry when one ends", l.path, who, l.spec.concurrency)
		retry = time.Second
	} else {
		msg = fmt.Sprintf("rate limit %s reached for %s: %d requests, then %d every %v; retry after %ds", l.path, who, l.spec.maxTokens, l.spec.perFill, l.spec.interval, retrySeconds(retry))
	}
	c.countLimited(l)
	c.lim.refused = &limitRefusal{path: l.path, reason: msg, retryAfter: retry}
	data := limitErrorData{Limit: l.path, RetryAfter: retrySeconds(retry)}
	if l.key != nil {
		data.Key = clip(key)
	}
	c.finish(limitError(c.msg.Bytes(c.msg.ID), msg, data), outcomeLimited, errors.New(msg))
	return false
}

// limitFailed refuses a call whose expression at path, of limit l, could
// not be evaluated for it: a limit fails closed, as a rule does.
func (c *call) limitFailed(l *limit, path string, err error) bool {
	msg := fmt.Sprintf("limit %s could not be evaluated for this call: %v", path, err)
	c.giveBackLimits()
	c.countLimited(l)
	c.lim.refused = &limitRefusal{path: path, reason: msg}
	c.finish(limitError(c.msg.Bytes(c.msg.ID), msg, limitErrorData{Limit: l.path}), outcomeLimited, errors.New(msg))
	return false
}

// countLimited counts a call limit l refused.
func (c *call) countLimited(l *limit) {
	if m := c.fs.f.metrics; m != nil {
		m.limited.WithLabelValues(l.route, l.path).Inc()
	}
}

// limitErrorData is the data of a limit's JSON-RPC error: which limit,
// the caller's key, and the seconds to wait before retrying.
type limitErrorData struct {
	Limit      string `json:"limit"`
	Key        string `json:"key,omitempty"`
	RetryAfter int    `json:"retryAfter,omitempty"`
}

// limitError is the JSON-RPC error answering request id with msg and
// data, under codeLimited.
func limitError(id []byte, msg string, data limitErrorData) []byte {
	if len(id) == 0 {
		id = []byte("null")
	}
	type rpcError struct {
		Code    int            `json:"code"`
		Message string         `json:"message"`
		Data    limitErrorData `json:"data"`
	}
	b, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   rpcError        `json:"error"`
	}{"2.0", id, rpcError{codeLimited, msg, data}})
	return b
}

// retrySeconds is d in whole seconds, rounded up, at least 1: what
// Retry-After says.
func retrySeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// setLimits swaps the front's limits (on reload): calls from then on, in
// running sessions too, count against the new ones.
func (f *mcpFront) setLimits(rl *routeLimits) { f.limits.Store(rl) }

// LimitStatus is one key of a limit near its bound (a fifth of its tokens
// or fewer left, or four fifths of its places in flight taken), for the
// status page.
type LimitStatus struct {
	// Route is the route's name, Limit the limit's config path
	// ("binds[0].listeners[0].routes[0].policies.localRateLimit[0]"), Key
	// the caller's key ("" for a limit without one: the whole route).
	Route, Limit, Key string
	// Tokens are left of MaxTokens (both 0 without a bucket); RetryAfter
	// is when the next comes, if none is left.
	Tokens, MaxTokens int64
	RetryAfter        time.Duration
	// InFlight are the key's requests in flight, of Concurrency (0: no
	// cap).
	InFlight, Concurrency int64
}

// LimitsStatus lists the keys of the running config's limits that are
// near their bound, by route, limit and key. It reads only the keys that
// came near their bound, not every key a limit keeps.
func (s *Server) LimitsStatus() []LimitStatus {
	st := s.state.Load()
	if st == nil {
		return nil
	}
	limits := make([]*limit, 0, len(st.limits))
	for _, l := range st.limits {
		limits = append(limits, l)
	}
	slices.SortFunc(limits, func(a, b *limit) int { return cmp.Or(cmp.Compare(a.route, b.route), cmp.Compare(a.path, b.path)) })
	now := time.Now()
	var out []LimitStatus
	for _, l := range limits {
		for _, k := range l.keys.nearBound(now) {
			out = append(out, LimitStatus{
				Route: l.route, Limit: l.path, Key: k.key,
				Tokens: k.tokens, MaxTokens: l.spec.maxTokens, RetryAfter: k.retryAfter,
				InFlight: k.inflight, Concurrency: l.spec.concurrency,
			})
		}
	}
	return out
}
