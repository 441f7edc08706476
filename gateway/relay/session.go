package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// A front session: opening it (a child per target), supervising its
// children, ending it, and the client requests it tracks. What it tells
// the client of its targets is in sessioninit.go, the messages outside
// calls in sessionmsgs.go.

// OpenParams describe the front session a Session serves.
type OpenParams struct {
	// ID names the front session in logs.
	ID string
	// Initialize is the params of the client's initialize request, as it
	// sent them; each child is initialized with them, so that it sees the
	// client's protocol version, capabilities and name. Empty: tailgate's
	// own (every capability offered).
	Initialize []byte
	// Identity is the caller: its Env reaches the children of targets with
	// IdentityEnv, and overrides their Env; targets with CallerEnv, and
	// remote targets told it, get it whole.
	Identity Identity
	// Notify receives what the children send that belongs to no request
	// in flight (list_changed, resource updates, requests made while the
	// client waits for nothing): the client's standalone stream. It must
	// not block for long.
	Notify func(msg []byte)
	// Caller names the caller (its tailnet node, say) for what it owns
	// across sessions: the tasks its calls create. Empty: the session
	// alone.
	Caller string
	// Sessionless opens a session for the sessionless (MCP 2026-07-28) requests of
	// one caller: children are not initialized with a client's params
	// (each request describes its client), a child that answers
	// server/discover is spoken to in 2026-07-28, an older one is
	// initialized by tailgate; the session outlives any one request.
	Sessionless bool
}

// Session is one front session's children, one per target, started and
// initialized by Open. It relays the client's messages to them and theirs
// back, as bytes, changing only ids and, when names are prefixed, names.
// It ends when Close is called or a child exits; Done is closed then and
// Err says why.
type Session struct {
	b           *Backend
	id          string
	log         *slog.Logger
	prefixed    bool
	notify      func([]byte)
	sessionless bool
	// caller owns the tasks created through the session (owners.go).
	caller string

	children []*child
	// missing are the targets that failed to start under failOpen.
	missing map[string]error
	init    []byte // the initialize result the client gets
	// discover is the server/discover result of a sessionless session whose
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

// Open starts and initializes a child for each target (or takes one from
// the target's pool). Under failClosed it fails if any child fails to
// start or initialize, and leaves no process behind; under failOpen it
// fails only if none starts.
func (b *Backend) Open(ctx context.Context, p OpenParams) (*Session, error) {
	s := b.newSession(p)
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
			if pl := b.pools[t.Name]; pl != nil && !p.Sessionless {
				if c := pl.take(); c != nil {
					if c.bridge == toModern {
						// Started before its client was known.
						c.clientMeta, c.clientVersion = clientMetaOf(p.Initialize)
					}
					children[i] = c
					return
				}
			}
			children[i], errs[i] = b.startChild(ctx, t, identityFor(t, p.Identity), p.Initialize, p.ID, p.Sessionless)
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
	if s.sessionless {
		s.discover = s.discoverResult()
	}
	s.log.Info("session started", "children", len(s.children), "pids", s.PIDs(), "duration", time.Since(start).Round(time.Millisecond))
	for _, c := range s.children {
		go s.supervise(c)
		if c.bridge != sameGeneration {
			s.log.Info("target bridged between protocol generations", "target", c.target.Name, "bridge", c.bridge.String(), "target_version", c.init.version)
		}
		if c.bridge == toModern {
			s.listenForSessionClient(c)
		}
	}
	return s, nil
}

// newSession is a session of b for p, with no children yet.
func (b *Backend) newSession(p OpenParams) *Session {
	s := &Session{
		b:           b,
		id:          p.ID,
		log:         b.log.With("session", p.ID),
		prefixed:    b.prefixed(),
		notify:      p.Notify,
		sessionless: p.Sessionless,
		caller:      p.Caller,
		missing:     make(map[string]error),
		calls:       make(map[string]*Reply),
		serverReqs:  make(map[int64]*serverRequest),
		stopping:    make(chan struct{}),
		done:        make(chan struct{}),
	}
	if s.notify == nil {
		s.notify = func([]byte) {}
	}
	if s.caller == "" {
		s.caller = fmt.Sprintf("\x00session %p", s)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// identityFor is what of the caller identity a child of t is told: all
// of it for a target that reads it, nothing for the others.
func identityFor(t *Target, identity Identity) Identity {
	if t.IdentityEnv || t.CallerEnv != nil || t.Remote != nil && t.Remote.TellsIdentity {
		return identity
	}
	return nil
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
	case <-c.conn.Done():
		select {
		case <-s.stopping:
			return // stopped by us
		default:
		}
		err := c.conn.Err()
		if s.degrades() && s.Alive() {
			// failOpen: the others go on; the lost target's calls fail
			// naming it, and the client is told to list again.
			s.log.Warn("target gone; serving the others (failOpen)", "target", c.target.Name, "pid", c.pid(), "err", err)
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
		s.log.Warn("target gone; ending session", "target", c.target.Name, "pid", c.pid(), "err", err)
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
	return s.b.opts.FailureMode == FailOpen && !s.sessionless
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
		if pid := c.pid(); pid != 0 {
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

// ErrSessionEnded is returned for requests on a session that has ended.
var ErrSessionEnded = errors.New("tailgate: session ended")

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
