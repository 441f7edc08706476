package mcpstdio

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// OpenParams describe the front session a Session serves.
type OpenParams struct {
	// ID names the front session in logs.
	ID string
	// Initialize is the params of the client's initialize request, as it
	// sent them; each child is initialized with them, so that it sees the
	// client's protocol version, capabilities and name. Empty: tailgate's
	// own (every capability offered).
	Initialize []byte
	// Identity describes the caller as environment variables; it reaches
	// the children of targets with IdentityEnv, and overrides their Env.
	Identity map[string]string
	// Notify receives what the children send that belongs to no request
	// in flight (list_changed, resource updates, requests made while the
	// client waits for nothing): the client's standalone stream. It must
	// not block for long.
	Notify func(msg []byte)
	// Caller names the caller (its tailnet node, say) for what it owns
	// across sessions: the tasks its calls create. Empty: the session
	// alone.
	Caller string
	// Shared opens a session for sessionless (MCP 2026-07-28) requests of
	// one caller: children are not initialized with a client's params
	// (each request describes its client), a child that answers
	// server/discover is spoken to in 2026-07-28, an older one is
	// initialized by tailgate; the session outlives any one request.
	Shared bool
}

// Session is one front session's children, one per target, started and
// initialized by Open. It relays the client's messages to them and theirs
// back, as bytes, changing only ids and, when names are prefixed, names.
// It ends when Close is called or a child exits; Done is closed then and
// Err says why.
type Session struct {
	b        *Backend
	id       string
	log      *slog.Logger
	prefixed bool
	notify   func([]byte)
	shared   bool
	// caller owns the tasks created through the session (owners.go).
	caller string

	children []*child
	// missing are the targets that failed to start under failOpen.
	missing map[string]error
	init    []byte // the initialize result the client gets
	// discover is the server/discover result of a shared session whose
	// targets cannot answer it as one (several, or an older one).
	discover []byte

	// ctx ends with the session: tailgate's own requests use it.
	ctx    context.Context
	cancel context.CancelFunc

	progressSeq atomic.Int64

	mu         sync.Mutex
	calls      map[string]*Reply // client requests in flight, by raw id
	serverReqs map[int64]*serverRequest
	parked     map[string]*parkedCall // by requestState token
	nextServer int64

	endOnce  sync.Once
	stopping chan struct{} // closed when end begins
	done     chan struct{} // closed when end has reaped every child
	err      error
}

// serverRequest is a child's request to the client, waiting for the
// client's answer.
type serverRequest struct {
	c       *child
	childID []byte
	method  string
	timer   *time.Timer
	// answer, if set, takes the client's answer instead of the child: a
	// request of tailgate's own (bridge.go).
	answer chan *Message
}

// Open starts and initializes a child for each target (or takes one from
// the target's pool). Under failClosed it fails if any child fails to
// start or initialize, and leaves no process behind; under failOpen it
// fails only if none starts.
func (b *Backend) Open(ctx context.Context, p OpenParams) (*Session, error) {
	s := &Session{
		b:          b,
		id:         p.ID,
		log:        b.log.With("session", p.ID),
		prefixed:   b.prefixed(),
		notify:     p.Notify,
		shared:     p.Shared,
		caller:     p.Caller,
		missing:    make(map[string]error),
		calls:      make(map[string]*Reply),
		serverReqs: make(map[int64]*serverRequest),
		stopping:   make(chan struct{}),
		done:       make(chan struct{}),
	}
	if s.notify == nil {
		s.notify = func([]byte) {}
	}
	if s.caller == "" {
		s.caller = fmt.Sprintf("\x00session %p", s)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := b.add(s); err != nil {
		return nil, err
	}
	start := time.Now()
	children := make([]*child, len(b.targets))
	errs := make([]error, len(b.targets))
	var wg sync.WaitGroup
	for i := range b.targets {
		t := &b.targets[i]
		wg.Go(func() {
			if pl := b.pools[t.Name]; pl != nil && !p.Shared {
				if c := pl.take(); c != nil {
					if c.clientMeta != nil {
						// Started before its client was known.
						c.clientMeta, c.clientVersion = clientMetaOf(p.Initialize)
					}
					children[i] = c
					return
				}
			}
			var identity map[string]string
			if t.IdentityEnv || t.Remote != nil && t.Remote.IdentityHeaders {
				identity = p.Identity
			}
			children[i], errs[i] = b.startChild(ctx, t, identity, p.Initialize, p.ID, p.Shared)
		})
	}
	wg.Wait()
	for i, c := range children {
		if c != nil {
			c.owner.Store(s)
			s.children = append(s.children, c)
		} else {
			s.missing[b.targets[i].Name] = errs[i]
		}
	}
	if err := errors.Join(errs...); err != nil && (b.opts.FailureMode != FailOpen || len(s.children) == 0) {
		s.end(err)
		return nil, err
	}
	for name, err := range s.missing {
		s.log.Warn("target unavailable; serving the others (failOpen)", "target", name, "err", err)
	}
	if b.opts.PrefixMode == PrefixNever {
		if err := s.checkCollisions(ctx); err != nil {
			s.end(err)
			return nil, err
		}
	}
	s.init = s.initializeResult()
	if s.shared {
		s.discover = s.discoverResult()
	}
	s.log.Info("session started", "children", len(s.children), "pids", s.PIDs(), "duration", time.Since(start).Round(time.Millisecond))
	for _, c := range s.children {
		go s.supervise(c)
		if c.clientMeta != nil {
			s.listenForSessionClient(c)
		}
	}
	return s, nil
}

// checkCollisions fails when two targets offer a tool or prompt of the same
// name and names are not prefixed: a call could not say which it means.
func (s *Session) checkCollisions(ctx context.Context) error {
	if len(s.children) < 2 {
		return nil
	}
	owners := make(map[string]string)
	for _, c := range s.children {
		for _, kind := range []string{"tool", "prompt"} {
			names, err := c.listNames(ctx, kind)
			if err != nil {
				return err
			}
			for _, n := range slices.Sorted(mapKeys(names)) {
				key := kind + " " + n
				if other, dup := owners[key]; dup {
					return fmt.Errorf("prefixMode never: %s is offered by both target %q and target %q", key, other, c.target.Name)
				}
				owners[key] = c.target.Name
			}
		}
	}
	return nil
}

// supervise ends the session when c's process exits on its own.
func (s *Session) supervise(c *child) {
	select {
	case <-c.link.exited():
		select {
		case <-s.stopping:
			return // stopped by us
		default:
		}
		err := c.link.exitError()
		if s.degrades() && s.Alive() {
			// failOpen: the others go on; the lost target's calls fail
			// naming it, and the client is told to list again.
			s.log.Warn("target gone; serving the others (failOpen)", "target", c.target.Name, "pid", c.link.pid(), "err", err)
			// What it left behind (a grandchild holding its pipes) goes
			// with it, as when the session ends.
			go c.stop(s.b.opts.StopGrace)
			for _, lc := range listChanges {
				if c.init.has(lc.capability) {
					s.notify([]byte(`{"jsonrpc":"2.0","method":"` + lc.method + `"}`))
				}
			}
			return
		}
		s.log.Warn("target gone; ending session", "target", c.target.Name, "pid", c.link.pid(), "err", err)
		s.end(err)
	case <-s.stopping:
	}
}

// Alive reports whether the session can still serve requests: it has not
// been closed, and none of its children has exited (under failOpen: one
// at least has not).
func (s *Session) Alive() bool {
	select {
	case <-s.stopping:
		return false
	default:
	}
	alive := 0
	for _, c := range s.children {
		if c.alive() {
			alive++
		}
	}
	if s.degrades() {
		return alive > 0
	}
	return alive == len(s.children)
}

// degrades reports whether the session goes on without a target that
// exits: under failOpen, for a client's session. A sessionless caller's
// session ends instead, so that its next request starts the target again.
func (s *Session) degrades() bool {
	return s.b.opts.FailureMode == FailOpen && !s.shared
}

// Done is closed when the session has ended and its children are reaped.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err reports why the session ended: nil after Close, the child's exit
// (status and last stderr lines) if a child ended it.
func (s *Session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Close ends the session: calls in flight are cancelled (the client gets
// an error, the target notifications/cancelled), then each child's stdin
// is closed and its process group signalled. It returns once every child
// is reaped.
func (s *Session) Close() error {
	s.end(nil)
	return nil
}

// PIDs are the process ids of the session's children, in target order;
// a remote target has none.
func (s *Session) PIDs() []int {
	pids := make([]int, 0, len(s.children))
	for _, c := range s.children {
		if pid := c.link.pid(); pid != 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Inflight is the number of client requests in flight.
func (s *Session) Inflight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

func (s *Session) end(cause error) {
	s.endOnce.Do(func() {
		s.err = cause
		close(s.stopping)
		s.cancel()
		s.mu.Lock()
		calls := make([]*Reply, 0, len(s.calls))
		for _, r := range s.calls {
			calls = append(calls, r)
		}
		for id, sr := range s.serverReqs {
			if sr.timer != nil {
				sr.timer.Stop()
			}
			delete(s.serverReqs, id)
		}
		for token, pc := range s.parked {
			pc.timer.Stop()
			delete(s.parked, token)
		}
		s.mu.Unlock()
		reason := "the MCP session was closed"
		if cause != nil {
			reason = cause.Error()
		}
		// Each child reads notifications/cancelled for its calls before its
		// stdin closes (c.stop closes it at once: sent alongside, the
		// cancellations lost that race). A child that does not read its
		// stdin holds this up for no more than its stop grace.
		told := make(chan struct{})
		go func() {
			defer close(told)
			var wg sync.WaitGroup
			for _, r := range calls {
				wg.Go(func() { r.cancelAtChild(reason) })
			}
			wg.Wait()
		}()
		grace := time.NewTimer(s.b.opts.StopGrace)
		select {
		case <-told:
		case <-grace.C:
		}
		grace.Stop()
		// Each call's error waits for its reader; one that stalls must not
		// hold up the others, or the children's stop.
		for _, r := range calls {
			go r.cancel(reason, true)
		}
		var wg sync.WaitGroup
		for _, c := range s.children {
			wg.Go(func() { c.stop(s.b.opts.StopGrace) })
		}
		wg.Wait()
		for _, c := range s.children {
			if c.target.Remote == nil {
				s.b.tasks.forgetChild(s.caller, c)
			}
		}
		s.b.remove(s)
		close(s.done)
		if cause == nil {
			s.log.Info("session closed")
		}
	})
}

// InitializeResult is the result of the client's initialize: with one
// target, the target's own, as it sent it; with several, tailgate's, with
// the capabilities joined, the lowest protocol version and each target's
// instructions marked with its name.
func (s *Session) InitializeResult() []byte { return s.init }

func (s *Session) initializeResult() []byte {
	if len(s.b.targets) == 1 && len(s.children) == 1 && s.children[0].clientMeta == nil {
		return s.children[0].init.raw
	}
	caps := map[string]any{}
	var instructions []string
	version := ""
	serverInfo := any(map[string]any{"name": "tailgate", "version": s.b.opts.Version})
	for _, c := range s.children {
		v := c.init.version
		if c.clientMeta != nil {
			// Spoken to in 2026-07-28 for this client (bridge.go): the
			// client's own version is the session's.
			v = c.clientVersion
			if len(s.children) == 1 && len(c.init.serverInfo) > 0 {
				serverInfo = c.init.serverInfo
			}
		}
		if version == "" || v < version {
			version = v
		}
		if c.init.instructions != "" {
			instructions = append(instructions, fmt.Sprintf("[%s] %s", c.target.Name, c.init.instructions))
		}
		for k, raw := range c.init.capabilities {
			var v any
			if json.Unmarshal(raw, &v) == nil {
				caps[k] = mergeJSON(caps[k], v)
			}
		}
	}
	for _, name := range slices.Sorted(mapKeys(s.missing)) {
		instructions = append(instructions, fmt.Sprintf("[tailgate] target %s is unavailable in this session: %v", name, s.missing[name]))
	}
	res := map[string]any{
		"protocolVersion": version,
		"capabilities":    caps,
		"serverInfo":      serverInfo,
	}
	if len(instructions) > 0 {
		res["instructions"] = strings.Join(instructions, "\n\n")
	}
	b, _ := json.Marshal(res)
	return b
}

// discoverResult is server/discover's result for the targets as one
// server: capabilities joined as for initialize, the versions every target
// speaks, each target's instructions marked with its name.
func (s *Session) discoverResult() []byte {
	caps := map[string]any{}
	var instructions []string
	var versions []string
	for i, c := range s.children {
		if i == 0 {
			versions = append(versions, c.init.versions...)
		} else {
			versions = slices.DeleteFunc(versions, func(v string) bool { return !slices.Contains(c.init.versions, v) })
		}
		if c.init.instructions != "" {
			if len(s.children) == 1 {
				instructions = append(instructions, c.init.instructions)
			} else {
				instructions = append(instructions, fmt.Sprintf("[%s] %s", c.target.Name, c.init.instructions))
			}
		}
		for k, raw := range c.init.capabilities {
			var v any
			if json.Unmarshal(raw, &v) == nil {
				caps[k] = mergeJSON(caps[k], v)
			}
		}
	}
	if versions == nil {
		versions = []string{}
	}
	serverInfo := any(map[string]any{"name": "tailgate", "version": s.b.opts.Version})
	if len(s.children) == 1 && len(s.children[0].init.serverInfo) > 0 {
		serverInfo = s.children[0].init.serverInfo
	}
	res := map[string]any{
		"resultType":        "complete",
		"ttlMs":             0,
		"cacheScope":        "public",
		"supportedVersions": versions,
		"capabilities":      caps,
		"_meta":             map[string]any{"io.modelcontextprotocol/serverInfo": serverInfo},
	}
	if len(instructions) > 0 {
		res["instructions"] = strings.Join(instructions, "\n\n")
	}
	b, _ := json.Marshal(res)
	return b
}

// needsOwnDiscover reports whether tailgate answers server/discover for the
// session's targets rather than passing it to the one target.
func (s *Session) needsOwnDiscover() bool {
	return len(s.children) > 1 || len(s.children) == 1 && !s.children[0].init.modern
}

// mergeJSON joins two capability values: objects key by key, booleans by
// "or"; otherwise the first one stays.
func mergeJSON(a, b any) any {
	switch av := a.(type) {
	case nil:
		return b
	case map[string]any:
		if bv, ok := b.(map[string]any); ok {
			for k, v := range bv {
				av[k] = mergeJSON(av[k], v)
			}
		}
	case bool:
		if bv, ok := b.(bool); ok {
			return av || bv
		}
	}
	return a
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// ErrSessionEnded is returned for requests on a session that has ended.
var ErrSessionEnded = errors.New("mcpstdio: session ended")

// serverRequest passes a child's request to the client under an id of the
// session's own sequence, and answers the child itself if the client does
// not answer in time or the session ends first.
func (s *Session) serverRequest(c *child, m *Message, held *charge) {
	sr := &serverRequest{c: c, childID: m.Bytes(m.ID), method: m.MethodName()}
	if s.shared {
		// A sessionless client has no channel back: an older child's
		// request becomes its call's input_required result (MCP
		// 2026-07-28 servers answer that way themselves).
		if !c.init.modern && s.park(c, m) {
			return
		}
		go c.write(ErrorMessage(sr.childID, CodeMethodNotFound, fmt.Sprintf("tailgate: %s cannot reach a sessionless (2026-07-28) client", sr.method)))
		return
	}
	timeout := s.b.requestTimeout(c.target)
	id, ok := s.addServerRequest(sr, func(id int64) {
		sr.timer = time.AfterFunc(timeout, func() {
			if s.takeServerRequest(id) != nil {
				s.log.Warn("client did not answer a server request", "target", c.target.Name, "method", sr.method, "timeout", timeout)
				c.write(ErrorMessage(sr.childID, CodeRequestTimeout, fmt.Sprintf("tailgate: the client did not answer %s within %v", sr.method, timeout)))
			}
		})
	})
	if !ok {
		go c.write(ErrorMessage(sr.childID, CodeRequestCancelled, "the MCP session was closed"))
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
func (s *Session) toClient(c *child, msg []byte, held *charge) {
	if r := c.related(s.shared); r != nil && c.push(r, msg, held) {
		return
	}
	s.notify(msg)
}

// Respond passes the client's answer to a server→client request to the
// child that asked.
func (s *Session) Respond(m *Message) error {
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
func (s *Session) Notify(m *Message) {
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

// metaSubscriptionID tags the notifications of a subscriptions/listen
// (MCP 2026-07-28): the listen request's id, as the child saw it.
const metaSubscriptionID = "io.modelcontextprotocol/subscriptionId"

// The _meta keys with which a sessionless request says its protocol
// version and its client.
const (
	metaProtocolVersion    = "io.modelcontextprotocol/protocolVersion"
	metaClientCapabilities = "io.modelcontextprotocol/clientCapabilities"
	metaClientInfo         = "io.modelcontextprotocol/clientInfo"
)

// childNotification passes a child's notification to the client.
func (s *Session) childNotification(c *child, m *Message, held *charge) {
	if sid := m.Path("params", "_meta", metaSubscriptionID); sid.Has() {
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
				m.Raw = m.Replace(logger, quote(name))
			} else if p := m.Path("params"); p.Has() && m.Raw[p.Start] == '{' {
				m.Raw = m.Replace(Span{p.Start + 1, p.Start + 1}, append(append([]byte(`"logger":`), quote(name)...), ','))
			}
		}
	case "notifications/resources/updated":
		if uri := m.Path("params", "uri"); s.prefixed && uri.Has() {
			m.Raw = m.Replace(uri, quote(s.exposedURI(c, m.String(uri))))
		}
		s.notify(m.Raw)
		return
	case "notifications/tasks", "notifications/tasks/status":
		if id := m.Path("params", "taskId"); s.prefixed && id.Has() {
			m.Raw = m.Replace(id, quote(c.target.Name+nameSep+m.String(id)))
		}
	case "notifications/tools/list_changed", "notifications/prompts/list_changed", "notifications/resources/list_changed":
		c.listChanged()
		if s.shared {
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

// track records a client request in flight under its id, so that a
// cancellation finds it.
func (s *Session) track(r *Reply, key string) (string, bool) {
	if key == "" {
		key = string(r.frontID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stopping:
		return "", false
	default:
	}
	s.calls[key] = r
	return key, true
}

func (s *Session) untrack(key string, r *Reply) {
	s.mu.Lock()
	if s.calls[key] == r {
		delete(s.calls, key)
	}
	s.mu.Unlock()
}

func (s *Session) ended() error {
	select {
	case <-s.stopping:
		if err := s.err; err != nil {
			return err
		}
		return ErrSessionEnded
	default:
		return nil
	}
}
