package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay"
	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
	"github.com/tailgate-dev/tailgate/policy"
)

// MCP 2026-07-28 clients have no session: every request carries its
// protocol version and client capabilities in _meta (SEP-2575/2567). They
// are served by children kept per caller, reused across requests, and
// closed when idle.

const (
	protocolVersionHeader = "Mcp-Protocol-Version"
	methodHeader          = "Mcp-Method"
	nameHeader            = "Mcp-Name"
	// codeHeaderMismatch is SEP-2243's error for headers that disagree
	// with the body.
	codeHeaderMismatch = -32020
	// maxCallers bounds the callers whose children each route keeps for
	// sessionless requests (or config.mcp.maxSessions, if lower).
	maxCallers = 64
)

// isSessionless reports whether a request without a session speaks MCP
// 2026-07-28 or later: by its header, else by its _meta.
func isSessionless(r *http.Request, m *jsonrpc.Message) bool {
	v := r.Header.Get(protocolVersionHeader)
	if v == "" {
		v = m.String(m.Path("params", "_meta", jsonrpc.MetaProtocolVersion))
	}
	return v >= jsonrpc.ModernVersion
}

// checkHeaders applies SEP-2243: Mcp-Method must name the body's method,
// and Mcp-Name the tool, prompt or resource the body names; a gateway
// routes and judges by headers only if they agree with the body, which
// stays the truth. The error is the one to answer with.
func checkHeaders(r *http.Request, m *jsonrpc.Message) error {
	hv := r.Header.Get(protocolVersionHeader)
	mv := m.String(m.Path("params", "_meta", jsonrpc.MetaProtocolVersion))
	switch {
	case hv == "" && mv >= jsonrpc.ModernVersion:
		return fmt.Errorf("%s header is required for requests carrying a protocol version in _meta", protocolVersionHeader)
	case hv == "" || hv < jsonrpc.ModernVersion:
		return nil
	case mv != "" && mv != hv:
		return fmt.Errorf("header mismatch: %s header value %q does not match _meta value %q", protocolVersionHeader, hv, mv)
	}
	method := m.MethodName()
	hm := r.Header.Get(methodHeader)
	if hm == "" {
		return fmt.Errorf("missing required %s header", methodHeader)
	}
	if hm != method {
		return fmt.Errorf("header mismatch: %s header value %q does not match body value %q", methodHeader, hm, method)
	}
	name, ok := m.NameSpan()
	if !ok {
		return nil
	}
	hn := r.Header.Get(nameHeader)
	if hn == "" {
		return fmt.Errorf("missing required %s header for method %q", nameHeader, method)
	}
	if body := m.String(name); decodeHeaderValue(hn) != body {
		return fmt.Errorf("header mismatch: %s header value %q does not match body value %q", nameHeader, hn, body)
	}
	return nil
}

// checkMeta refuses a sessionless request whose _meta lacks what every
// such request must carry (SEP-2575): the protocol version and the
// client's capabilities. A child would take it for an older client's.
func checkMeta(m *jsonrpc.Message) error {
	meta := m.Path("params", "_meta")
	if !meta.Has() || m.Raw[meta.Start] != '{' {
		return fmt.Errorf("missing or invalid _meta")
	}
	if m.String(m.Field(meta, jsonrpc.MetaProtocolVersion)) == "" {
		return fmt.Errorf("missing or invalid _meta field %q", jsonrpc.MetaProtocolVersion)
	}
	if c := m.Field(meta, jsonrpc.MetaClientCapabilities); !c.Has() || m.Raw[c.Start] != '{' {
		return fmt.Errorf("missing or invalid _meta field %q", jsonrpc.MetaClientCapabilities)
	}
	return nil
}

// decodeHeaderValue undoes SEP-2243's encoding of values that are not
// plain ASCII ("=?base64?…?=").
func decodeHeaderValue(v string) string {
	if d, ok := decodeBase64Header(v); ok {
		return d
	}
	return v
}

// caller is one caller's children for sessionless requests.
type caller struct {
	fs    *frontSession
	ready chan struct{} // closed once fs.bs is set, or err
	err   error
}

// peerKey names a caller for what is kept or counted per caller: the
// tailnet node, or the address of a caller that is not one. Children
// never serve two nodes.
type peerKey struct {
	node bool
	id   string
}

func (k peerKey) String() string {
	if k.node {
		return "node:" + k.id
	}
	return "addr:" + k.id
}

func callerKey(src *policy.Source) peerKey {
	if src.Tailscale != nil && src.Tailscale.Node.ID != "" {
		return peerKey{true, src.Tailscale.Node.ID}
	}
	return peerKey{false, src.Address}
}

// serveSessionless serves a sessionless (2026-07-28) request.
func (f *mcpFront) serveSessionless(w http.ResponseWriter, r *http.Request, m *jsonrpc.Message) {
	if !m.IsRequest() {
		if m.IsNotification() && r.Header.Get(protocolVersionHeader) >= jsonrpc.ModernVersion && r.Header.Get(methodHeader) == "" {
			writeRPCError(w, http.StatusBadRequest, nil, codeHeaderMismatch, "missing required "+methodHeader+" header")
			return
		}
		// Without a session, a notification or response has nowhere to go.
		w.WriteHeader(http.StatusAccepted)
		return
	}
	if err := checkHeaders(r, m); err != nil {
		writeRPCError(w, http.StatusBadRequest, m.Bytes(m.ID), codeHeaderMismatch, err.Error())
		return
	}
	if err := checkMeta(m); err != nil {
		writeRPCError(w, http.StatusBadRequest, m.Bytes(m.ID), jsonrpc.CodeInvalidParams, err.Error())
		return
	}
	fs, err := f.callerSession(r)
	if err != nil {
		if connectRequired(err) {
			// The caller must connect its account first: its answer
			// carries the link, and nothing is wrong with the gateway.
			w.Header().Set("Content-Type", "application/json")
			w.Write(startError(m.Bytes(m.ID), err))
			return
		}
		writeRPCError(w, http.StatusServiceUnavailable, m.Bytes(m.ID), jsonrpc.CodeInternalError, err.Error())
		return
	}
	fs.touch()
	fs.noteClient(m, true)
	if err := fs.checkParamHeaders(r, m); err != nil {
		writeRPCError(w, http.StatusBadRequest, m.Bytes(m.ID), codeHeaderMismatch, err.Error())
		return
	}
	c := fs.newCall(r.Context(), m, requestOf(r, r.Header))
	c.answerOn(w, r, true)
	fs.inflight.Add(1)
	defer fs.callDone()
	if m.MethodName() == "subscriptions/listen" {
		// A caller that only listens may give way to a new one
		// (makeRoomLocked): its listens end, and it listens again.
		fs.listens.Add(1)
		defer fs.listens.Add(-1)
	}
	c.run(fs.backend())
	c.http.finish()
}

// sameCaller reports whether a and b are the same caller as children
// see it: the same login and tags (the same node is the key already).
func sameCaller(a, b *policy.Source) bool {
	if a.Tailscale == nil || b.Tailscale == nil {
		return a.Tailscale == nil && b.Tailscale == nil
	}
	return a.Tailscale.User.Login == b.Tailscale.User.Login && slices.Equal(a.Tailscale.Node.Tags, b.Tailscale.Node.Tags)
}

// callerSession is the caller's session for sessionless requests, opened
// on its first request.
func (f *mcpFront) callerSession(r *http.Request) (*frontSession, error) {
	src := sourceFrom(r.Context())
	key := callerKey(src)
	f.mu.Lock()
	if f.closed || f.retired.Load() {
		f.mu.Unlock()
		return nil, fmt.Errorf("gateway shutting down")
	}
	c := f.callers[key]
	if c != nil && !sameCaller(c.fs.owner, src) {
		// The node is someone else's now (another login, other tags):
		// children started for who it was, with that caller's identity
		// and secrets, do not serve who it is.
		delete(f.callers, key)
		old := c
		go func() {
			<-old.ready
			old.fs.log.Info("children for sessionless requests closed: the caller's identity changed")
			old.fs.close(nil)
		}()
		c = nil
	}
	if c == nil {
		if err := f.makeRoomLocked(); err != nil {
			f.mu.Unlock()
			return nil, err
		}
		// A caller's children count as a session against the gateway's
		// caps, per peer and in all.
		if err := f.budget.openSession(key); err != nil {
			f.mu.Unlock()
			return nil, err
		}
		c = &caller{ready: make(chan struct{})}
		c.fs = &frontSession{f: f, id: "sessionless", owner: src, sessionless: true, queue: make(chan []byte, 1), closed: make(chan struct{}), opened: time.Now()}
		c.fs.holdsPlace.Store(true)
		c.fs.log = f.log.With(append([]any{"session", "sessionless"}, sourceAttrs(src)...)...)
		c.fs.touch()
		f.callers[key] = c
		f.mu.Unlock()
		go f.openCaller(key, c, src)
	} else {
		f.mu.Unlock()
	}
	select {
	case <-c.ready:
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
	if c.err != nil {
		return nil, c.err
	}
	return c.fs, nil
}

// openCaller starts a caller's children. It does not run on the request's
// context: the children serve the caller's later requests too.
func (f *mcpFront) openCaller(key peerKey, c *caller, src *policy.Source) {
	start := time.Now()
	bs, err := f.backend.Open(context.Background(), relay.OpenParams{ID: "sessionless-" + key.String(), Identity: newCaller(src), Caller: key.String(), Sessionless: true})
	if err != nil {
		c.err = err
		f.mu.Lock()
		if f.callers[key] == c {
			delete(f.callers, key)
		}
		f.mu.Unlock()
		c.fs.releasePlace()
		close(c.ready)
		c.fs.log.Error("children for sessionless requests failed to start", "err", err)
		return
	}
	c.fs.mu.Lock()
	c.fs.bs = bs
	c.fs.mu.Unlock()
	close(c.ready)
	bs.LearnNames() // in the background, to name calls in metrics
	c.fs.log.Info("children started for sessionless requests", "pids", bs.PIDs(), "duration", time.Since(start).Round(time.Millisecond))
	select {
	case <-bs.Done():
		if err := bs.Err(); err != nil {
			c.fs.log.Warn("children for sessionless requests ended", "err", err)
		} else {
			c.fs.log.Info("children for sessionless requests closed")
		}
	case <-c.fs.closed:
	}
	f.mu.Lock()
	if f.callers[key] == c {
		delete(f.callers, key)
	}
	f.mu.Unlock()
	c.fs.close(nil)
}

// makeRoomLocked keeps the callers under their cap: past it, the caller
// idle longest gives up its children, else the one that has only listened
// longest (its listens end; a client listens again); if every one has
// calls in flight, the new one is refused. Callers holding listens cannot
// lock out the others.
func (f *mcpFront) makeRoomLocked() error {
	limit := min(maxCallers, f.budget.sessionCap())
	if len(f.callers) < limit {
		return nil
	}
	var oldest *caller
	var oldestKey peerKey
	oldestBusy := false
	for k, c := range f.callers {
		n := c.fs.inflight.Load()
		busy := n > 0
		if busy && n > c.fs.listens.Load() || c.fs.backend() == nil {
			continue
		}
		if oldest == nil || oldestBusy && !busy || oldestBusy == busy && c.fs.lastUsed.Load() < oldest.fs.lastUsed.Load() {
			oldest, oldestKey, oldestBusy = c, k, busy
		}
	}
	if oldest == nil {
		return fmt.Errorf("too many callers (%d) with requests in flight; retry later", limit)
	}
	delete(f.callers, oldestKey)
	oldest.fs.releasePlace() // now: the new caller takes it
	go oldest.fs.close(nil)
	return nil
}

// requestKeys gives each sessionless request a key of its own: ids of
// different clients may collide.
type requestKeys struct {
	mu sync.Mutex
	n  uint64
}

func (k *requestKeys) next() string {
	k.mu.Lock()
	k.n++
	n := k.n
	k.mu.Unlock()
	return "\x00" + strconv.FormatUint(n, 10)
}

// paramBinding ties a tool argument (a path of property names) to the
// Mcp-Param-* header that must repeat it (SEP-2243 x-mcp-header).
type paramBinding struct {
	path   []string
	header string
}

// toolHeaders caches the callers' tools' header bindings.
type toolHeaders struct {
	bindings map[string][]paramBinding // by tool name as the client sees it
	at       time.Time
}

// toolHeadersTTL bounds how long a caller's tool list is trusted for
// header checks; a tool the cache does not know is looked up at once.
const toolHeadersTTL = 30 * time.Second

// checkParamHeaders applies SEP-2243's Mcp-Param-* rule to a tools/call:
// each argument a tool's input schema marks with x-mcp-header must be
// repeated, equal, in its header. The stdio child never sees headers, so
// tailgate is the server that must check them.
func (fs *frontSession) checkParamHeaders(r *http.Request, m *jsonrpc.Message) error {
	if m.MethodName() != "tools/call" || r.Header.Get(protocolVersionHeader) < jsonrpc.ModernVersion {
		return nil
	}
	name := m.String(m.Path("params", "name"))
	bindings, err := fs.paramBindings(r.Context(), name)
	if err != nil {
		// Headers that cannot be checked are not trusted: a route's
		// rules may have read them.
		for h := range r.Header {
			if strings.HasPrefix(h, "Mcp-Param-") {
				return fmt.Errorf("cannot check the %s header against the tool's schema: %v", h, err)
			}
		}
		return nil
	}
	if len(bindings) == 0 {
		return nil
	}
	var args map[string]json.RawMessage
	if a := m.Path("params", "arguments"); a.Has() {
		json.Unmarshal(m.Bytes(a), &args)
	}
	for _, b := range bindings {
		arg, ok := lookupArg(args, b.path)
		if !ok || string(arg) == "null" {
			continue
		}
		header := "Mcp-Param-" + b.header
		values := r.Header.Values(header)
		if len(values) == 0 {
			return fmt.Errorf("missing required %s header for argument %q", header, strings.Join(b.path, "."))
		}
		if !paramEqual(arg, values[0]) {
			return fmt.Errorf("header mismatch: %s header value %q does not match argument %q", header, values[0], strings.Join(b.path, "."))
		}
	}
	return nil
}

// paramEqual compares an argument with its header's value: strings as
// they are (after the header's base64 is undone), numbers by value,
// booleans as true/false.
func paramEqual(arg json.RawMessage, header string) bool {
	value := header
	if strings.HasPrefix(header, "=?base64?") && strings.HasSuffix(header, "?=") {
		d, ok := decodeBase64Header(header)
		if !ok {
			return false // sentinel with a bad payload: invalid, never equal
		}
		value = d
	}
	var v any
	if json.Unmarshal(arg, &v) != nil {
		return false
	}
	switch v := v.(type) {
	case string:
		return v == value
	case float64:
		f, err := strconv.ParseFloat(value, 64)
		return err == nil && f == v
	case bool:
		return strconv.FormatBool(v) == value
	}
	return false
}

func lookupArg(args map[string]json.RawMessage, path []string) (json.RawMessage, bool) {
	cur, ok := args[path[0]]
	for _, p := range path[1:] {
		if !ok {
			return nil, false
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(cur, &obj) != nil {
			return nil, false
		}
		cur, ok = obj[p]
	}
	return cur, ok
}

// paramBindings are tool name's header bindings, from the caller's
// children's tool list (fetched again when stale or when it lacks name).
func (fs *frontSession) paramBindings(ctx context.Context, name string) ([]paramBinding, error) {
	fs.mu.Lock()
	th := fs.toolHeaders
	fs.mu.Unlock()
	if th != nil && time.Since(th.at) < toolHeadersTTL {
		if b, ok := th.bindings[name]; ok {
			return b, nil
		}
	}
	bs := fs.backend()
	if bs == nil {
		return nil, errors.New("no session")
	}
	tools, err := bs.Tools(ctx)
	if err != nil {
		fs.log.Debug("tool list for header checks", "err", err)
		return nil, fmt.Errorf("tools/list: %w", err)
	}
	th = &toolHeaders{bindings: make(map[string][]paramBinding), at: time.Now()}
	for _, raw := range tools {
		var tool struct {
			Name        string         `json:"name"`
			InputSchema schemaProperty `json:"inputSchema"`
		}
		if json.Unmarshal(raw, &tool) == nil {
			th.bindings[tool.Name] = collectBindings(tool.InputSchema.Properties, nil, nil)
		}
	}
	fs.mu.Lock()
	fs.toolHeaders = th
	fs.mu.Unlock()
	return th.bindings[name], nil
}

type schemaProperty struct {
	XMCPHeader string                    `json:"x-mcp-header"`
	Properties map[string]schemaProperty `json:"properties"`
}

func collectBindings(props map[string]schemaProperty, prefix []string, out []paramBinding) []paramBinding {
	for name, p := range props {
		path := append(append([]string(nil), prefix...), name)
		if p.XMCPHeader != "" {
			out = append(out, paramBinding{path: path, header: p.XMCPHeader})
		}
		if len(p.Properties) > 0 {
			out = collectBindings(p.Properties, path, out)
		}
	}
	return out
}
