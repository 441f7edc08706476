package gateway

import (
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
	"github.com/tailgate-dev/tailgate/policy"
)

// This file holds the status page's book (statusBook): what the page
// shows that nothing else keeps — the latest denials with the rule that
// decided each, and per-tool call counts, errors and latency — and what a
// session remembers of its client for the page. The audit stage
// (auditstage.go) feeds the denials, whether or not the audit trail is
// on; the record stage (record.go) feeds the counts.

// maxDenials is how many denials the book keeps, the newest.
const maxDenials = 100

// statusBook is the server's book for the status page; every front
// writes to the server's one. Its methods do nothing on a nil book (a
// front built without one, in tests).
type statusBook struct {
	started time.Time
	denials denialRing
	calls   sync.Map // callKey → *callCounter
}

func newStatusBook() *statusBook {
	return &statusBook{started: time.Now(), denials: denialRing{buf: make([]statusDenial, maxDenials)}}
}

// statusCaller is a caller as the page names it: never its capabilities
// or anything it sent in a header.
type statusCaller struct {
	Login, Node string
	Tags        []string
	Address     string
}

// callerOf is src as the page names it; remote is the address of a
// connection whose peer could not be identified (src nil).
func callerOf(src *policy.Source, remote netip.AddrPort) statusCaller {
	if src == nil {
		return statusCaller{Address: remote.String()}
	}
	c := statusCaller{Address: net.JoinHostPort(src.Address, strconv.Itoa(src.Port))}
	if ts := src.Tailscale; ts != nil {
		c.Login, c.Node, c.Tags = clip(ts.User.Login), clip(ts.Node.Name), ts.Node.Tags
	}
	return c
}

// Person is the caller's login; "" for a tagged node, whose login
// ("tagged-devices") names nobody.
func (c statusCaller) Person() string {
	if c.Login == "tagged-devices" {
		return ""
	}
	return c.Login
}

// Who is the caller in a few words: its login (or tags, for a tagged
// node), else its address.
func (c statusCaller) Who() string {
	switch {
	case c.Person() != "":
		return c.Person()
	case len(c.Tags) > 0:
		return strings.Join(c.Tags, ",")
	case c.Node != "":
		return c.Node
	}
	return c.Address
}

// statusDenial is one refusal: a connection networkAuthorization refused,
// an HTTP request a route's authorization refused, or an MCP call
// mcpAuthorization or a limit refused.
type statusDenial struct {
	At     time.Time
	Event  string // connection, http, mcp.call
	Caller statusCaller
	Route  string
	Target string
	// What was asked: "tool echo", "GET /status", "connection".
	What string
	// Rule is the path of the rule that decided, Reason how it decided;
	// Expr is the rule as the config now writes it (filled in when the
	// page is drawn).
	Rule, Reason, Expr string
}

// denialRing keeps the latest maxDenials denials.
type denialRing struct {
	mu    sync.Mutex
	buf   []statusDenial
	total uint64
}

func (r *denialRing) add(d statusDenial) {
	r.mu.Lock()
	r.buf[r.total%uint64(len(r.buf))] = d
	r.total++
	r.mu.Unlock()
}

// recent are the denials kept, newest first, and how many there were in
// all.
func (r *denialRing) recent() ([]statusDenial, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := min(r.total, uint64(len(r.buf)))
	out := make([]statusDenial, 0, n)
	for i := uint64(1); i <= n; i++ {
		out = append(out, r.buf[(r.total-i)%uint64(len(r.buf))])
	}
	return out, r.total
}

// noteConnection books a connection networkAuthorization refused.
func (b *statusBook) noteConnection(src *policy.Source, remote netip.AddrPort, d policy.Decision) {
	if b == nil || d.Allow {
		return
	}
	b.denials.add(statusDenial{At: time.Now(), Event: "connection", Caller: callerOf(src, remote), What: "connection", Rule: d.Rule, Reason: d.Reason()})
}

// noteHTTP books an HTTP request a route's authorization refused.
func (b *statusBook) noteHTTP(route string, src *policy.Source, r *http.Request, d policy.Decision) {
	if b == nil || d.Allow {
		return
	}
	b.denials.add(statusDenial{At: time.Now(), Event: "http", Caller: callerOf(src, netip.AddrPort{}), Route: route,
		What: r.Method + " " + clip(r.URL.Path), Rule: d.Rule, Reason: d.Reason()})
}

// noteCall books a call that was refused: by mcpAuthorization, by a
// limit, or by any stage that ends a call as denied.
func (b *statusBook) noteCall(c *call) {
	if b == nil || (!c.judged || c.decision.Allow) && c.outcome != outcomeDenied && c.lim.refused == nil {
		return
	}
	what := clip(c.msg.MethodName())
	if c.route.Kind != "" {
		what = c.route.Kind + " " + clip(c.route.Name)
	}
	d := statusDenial{At: time.Now(), Event: "mcp.call", Caller: callerOf(c.req.src, netip.AddrPort{}), Route: c.fs.f.name,
		Target: c.route.Target, What: what}
	switch ref := c.lim.refused; {
	case c.judged && !c.decision.Allow:
		d.Rule, d.Reason = c.decision.Rule, c.decision.Reason()
	case ref != nil:
		d.Rule, d.Reason = ref.path, ref.reason
	case c.err != nil:
		d.Reason = clipTo(c.err.Error(), maxLoggedError)
	}
	b.denials.add(d)
}

// callKey is a row of the page's calls table: the labels of
// tailgate_mcp_calls_total, so that its rows are as few as the metric's.
type callKey struct{ route, method, target, tool string }

// latencyBounds are the upper bounds of callCounter's latency buckets.
var latencyBounds = [...]time.Duration{
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond,
	50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second, 30 * time.Second, time.Minute,
}

// callCounter counts a row's calls, lock-free.
type callCounter struct {
	// denied counts calls refused, by policy or by a limit.
	calls, errors, denied atomic.Uint64
	nanos, maxNanos       atomic.Int64
	// buckets[i] counts calls that took at most latencyBounds[i]; the
	// last, longer ones.
	buckets [len(latencyBounds) + 1]atomic.Uint64
}

// observeCall counts a call in its row (the labels record gives the
// metric).
func (b *statusBook) observeCall(route, method, target, tool string, o outcome, took time.Duration) {
	if b == nil {
		return
	}
	key := callKey{route, method, target, tool}
	v, ok := b.calls.Load(key)
	if !ok {
		v, _ = b.calls.LoadOrStore(key, new(callCounter))
	}
	c := v.(*callCounter)
	c.calls.Add(1)
	switch o {
	case outcomeError, outcomeToolError, outcomeWriteError:
		c.errors.Add(1)
	case outcomeDenied, outcomeLimited:
		c.denied.Add(1)
	}
	c.nanos.Add(int64(took))
	for {
		cur := c.maxNanos.Load()
		if int64(took) <= cur || c.maxNanos.CompareAndSwap(cur, int64(took)) {
			break
		}
	}
	i, _ := slices.BinarySearch(latencyBounds[:], took)
	c.buckets[i].Add(1)
}

// quantile is the upper bound of the bucket that holds quantile q of the
// row's latencies, or the longest latency when that is less (or the
// bucket is the last, unbounded one).
func (c *callCounter) quantile(q float64) time.Duration {
	var counts [len(latencyBounds) + 1]uint64
	var total uint64
	for i := range counts {
		counts[i] = c.buckets[i].Load()
		total += counts[i]
	}
	if total == 0 {
		return 0
	}
	rank := max(uint64(math.Ceil(q*float64(total))), 1)
	var seen uint64
	longest := time.Duration(c.maxNanos.Load())
	for i, n := range counts[:len(latencyBounds)] {
		if seen += n; seen >= rank {
			return min(latencyBounds[i], longest)
		}
	}
	return longest
}

// statusClient is what a session's client says of itself: in initialize
// for a session, in each request's _meta for a sessionless caller.
type statusClient struct {
	Protocol, Name, Version string
	// rawProtocol and rawInfo are the bytes they were read from, so that
	// the next request of a caller that says the same is compared without
	// a copy; "" when they were too long to keep.
	rawProtocol, rawInfo string
}

// maxRawClient bounds what a session keeps of its client's bytes.
const maxRawClient = 1 << 10

// noteClient remembers m's client: its initialize params
// ("protocolVersion" and "clientInfo"), or a sessionless request's _meta.
// A sessionless caller's client is read on each request and kept anew
// only when it changed.
func (fs *frontSession) noteClient(m *jsonrpc.Message, sessionless bool) {
	var protocol, info jsonrpc.Span
	if sessionless {
		meta := m.Path("params", "_meta")
		protocol, info = m.Field(meta, jsonrpc.MetaProtocolVersion), m.Field(meta, jsonrpc.MetaClientInfo)
	} else {
		params := m.Path("params")
		protocol, info = m.Field(params, "protocolVersion"), m.Field(params, "clientInfo")
	}
	rawProtocol, rawInfo := m.Bytes(protocol), m.Bytes(info)
	if old := fs.client.Load(); old != nil && old.rawProtocol == string(rawProtocol) && old.rawInfo == string(rawInfo) {
		return
	}
	c := &statusClient{Protocol: clip(m.String(protocol)), Name: clip(m.String(m.Field(info, "name"))), Version: clip(m.String(m.Field(info, "version")))}
	if len(rawProtocol)+len(rawInfo) <= maxRawClient {
		c.rawProtocol, c.rawInfo = string(rawProtocol), string(rawInfo)
	}
	fs.client.Store(c)
}
