package mcpstdio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// ListKind names a list whose change a child announced.
type ListKind string

// The lists a child may announce changes of.
const (
	ListTools     ListKind = "tools"
	ListPrompts   ListKind = "prompts"
	ListResources ListKind = "resources"
)

// Peer is the front side of a session: where the children's notifications
// and requests go. Progress and log messages are sent with the context of
// the front request that caused them, so that go-sdk delivers them on that
// request's stream.
type Peer interface {
	NotifyProgress(ctx context.Context, params *mcp.ProgressNotificationParams) error
	Log(ctx context.Context, params *mcp.LoggingMessageParams) error
	CreateMessage(ctx context.Context, params *mcp.CreateMessageParams) (*mcp.CreateMessageResult, error)
	Elicit(ctx context.Context, params *mcp.ElicitParams) (*mcp.ElicitResult, error)
	ListRoots(ctx context.Context, params *mcp.ListRootsParams) (*mcp.ListRootsResult, error)
	// ResourceUpdated tells the client that a subscribed resource changed.
	ResourceUpdated(ctx context.Context, params *mcp.ResourceUpdatedNotificationParams) error
	// ListChanged tells the client that a list changed.
	ListChanged(kind ListKind)
}

// OpenParams describe the front session a Session serves.
type OpenParams struct {
	// ID names the front session in logs.
	ID string
	// Peer receives the children's notifications and requests.
	Peer Peer
	// ClientInfo is the front client's implementation, passed on to the
	// children.
	ClientInfo *mcp.Implementation
	// Capabilities are the front client's; children see the same.
	Capabilities *mcp.ClientCapabilities
	// Identity describes the caller as environment variables; it reaches
	// the children of targets with IdentityEnv, and overrides their Env.
	Identity map[string]string
}

// Session is one front session's children, one per target, started and
// initialized by Open. It ends when Close is called or a child exits;
// Done is closed then and Err says why.
type Session struct {
	b           *Backend
	id          string
	peer        Peer
	log         *slog.Logger
	prefixed    bool
	offersRoots bool

	children []*child
	// missing are the targets that failed to start under failOpen.
	missing map[string]error

	mu       sync.Mutex
	progress map[string]context.Context // progress token → front request ctx
	inflight []context.Context          // front request contexts, oldest first

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
	s := &Session{
		b:        b,
		id:       p.ID,
		peer:     p.Peer,
		log:      b.log.With("session", p.ID),
		prefixed: b.prefixed(),
		progress: make(map[string]context.Context),
		missing:  make(map[string]error),
		stopping: make(chan struct{}),
		done:     make(chan struct{}),
	}
	if c := p.Capabilities; c != nil {
		s.offersRoots = c.RootsV2 != nil || c.Roots.ListChanged
	}
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
			if pl := b.pools[t.Name]; pl != nil {
				if c := pl.take(); c != nil {
					children[i] = c
					return
				}
			}
			var identity map[string]string
			if t.IdentityEnv {
				identity = p.Identity
			}
			children[i], errs[i] = b.startChild(ctx, t, identity, p.Capabilities, p.ClientInfo, p.ID)
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
	s.log.Info("session started", "children", len(s.children), "pids", s.PIDs(), "duration", time.Since(start).Round(time.Millisecond))
	for _, c := range s.children {
		go s.supervise(c)
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
		var names []string
		if c.cs.InitializeResult().Capabilities.Tools != nil {
			for t, err := range c.cs.Tools(ctx, nil) {
				if err != nil {
					return c.failure(ctx, "tools/list", err)
				}
				names = append(names, "tool "+t.Name)
			}
		}
		if c.cs.InitializeResult().Capabilities.Prompts != nil {
			for p, err := range c.cs.Prompts(ctx, nil) {
				if err != nil {
					return c.failure(ctx, "prompts/list", err)
				}
				names = append(names, "prompt "+p.Name)
			}
		}
		for _, n := range names {
			if other, dup := owners[n]; dup {
				return fmt.Errorf("prefixMode never: %s is offered by both target %q and target %q", n, other, c.target.Name)
			}
			owners[n] = c.target.Name
		}
	}
	return nil
}

// supervise ends the session when c's process exits on its own.
func (s *Session) supervise(c *child) {
	select {
	case <-c.proc.exited:
		select {
		case <-s.stopping:
			return // stopped by us
		default:
		}
		err := c.proc.exitError()
		s.log.Warn("child exited; ending session", "target", c.target.Name, "pid", c.proc.Pid(), "err", err)
		s.end(err)
	case <-s.stopping:
	}
}

// Alive reports whether the session can still serve requests: it has not
// been closed and none of its children has exited.
func (s *Session) Alive() bool {
	select {
	case <-s.stopping:
		return false
	default:
	}
	for _, c := range s.children {
		if !c.alive() {
			return false
		}
	}
	return true
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

// Close ends the session: it closes each child's stdin, then signals its
// process group, and returns once every child is reaped.
func (s *Session) Close() error {
	s.end(nil)
	return nil
}

// PIDs are the process ids of the session's children.
func (s *Session) PIDs() []int {
	pids := make([]int, len(s.children))
	for i, c := range s.children {
		pids[i] = c.proc.Pid()
	}
	return pids
}

func (s *Session) end(cause error) {
	s.endOnce.Do(func() {
		s.err = cause
		close(s.stopping)
		var wg sync.WaitGroup
		for _, c := range s.children {
			wg.Go(func() { c.stop(s.b.opts.StopGrace) })
		}
		wg.Wait()
		s.b.remove(s)
		close(s.done)
		if cause == nil {
			s.log.Info("session closed")
		}
	})
}

// InitializeResult is what the session's server says of itself. With one
// target it is the target's own result; with several, tailgate's, with the
// capabilities joined and each target's instructions marked with its name.
// Capabilities are reduced to what tailgate forwards.
func (s *Session) InitializeResult() *mcp.InitializeResult {
	res := &mcp.InitializeResult{ServerInfo: &mcp.Implementation{Name: "tailgate"}}
	caps := &mcp.ServerCapabilities{}
	var instructions []string
	for _, c := range s.children {
		ir := c.cs.InitializeResult()
		if len(s.b.targets) == 1 {
			res.ServerInfo = ir.ServerInfo
			instructions = append(instructions, ir.Instructions)
		} else if ir.Instructions != "" {
			instructions = append(instructions, fmt.Sprintf("[%s] %s", c.target.Name, ir.Instructions))
		}
		in := ir.Capabilities
		if in == nil {
			continue
		}
		if in.Tools != nil {
			if caps.Tools == nil {
				caps.Tools = &mcp.ToolCapabilities{}
			}
			caps.Tools.ListChanged = caps.Tools.ListChanged || in.Tools.ListChanged
		}
		if in.Prompts != nil {
			if caps.Prompts == nil {
				caps.Prompts = &mcp.PromptCapabilities{}
			}
			caps.Prompts.ListChanged = caps.Prompts.ListChanged || in.Prompts.ListChanged
		}
		if in.Resources != nil {
			if caps.Resources == nil {
				caps.Resources = &mcp.ResourceCapabilities{}
			}
			caps.Resources.ListChanged = caps.Resources.ListChanged || in.Resources.ListChanged
			caps.Resources.Subscribe = caps.Resources.Subscribe || in.Resources.Subscribe
		}
		if in.Completions != nil {
			caps.Completions = &mcp.CompletionCapabilities{}
		}
		if in.Logging != nil {
			caps.Logging = &mcp.LoggingCapabilities{}
		}
	}
	for _, name := range sortedKeys(errStrings(s.missing)) {
		instructions = append(instructions, fmt.Sprintf("[tailgate] target %s is unavailable in this session: %v", name, s.missing[name]))
	}
	res.Instructions = strings.TrimSpace(strings.Join(instructions, "\n\n"))
	res.Capabilities = caps
	return res
}

func errStrings(m map[string]error) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = fmt.Sprint(v)
	}
	return out
}

// RootsChanged tells every child that the client's roots changed.
func (s *Session) RootsChanged(ctx context.Context) {
	for _, c := range s.children {
		if err := c.notifyRootsChanged(ctx); err != nil {
			s.log.Debug("forward roots change", "target", c.target.Name, "err", err)
		}
	}
}

func tokenKey(token any) string {
	b, _ := json.Marshal(token)
	return string(b)
}

func (s *Session) progressContext(token any) (context.Context, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, ok := s.progress[tokenKey(token)]
	return ctx, ok
}

// relatedContext is the context to send a message that names no request
// with: stdio carries no "related request", so the newest request in
// flight is the best guess, and without one the message goes to the
// client's standalone stream.
func (s *Session) relatedContext() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.inflight); n > 0 {
		return s.inflight[n-1]
	}
	return context.Background()
}

// track records a front request in flight (and its progress token) until
// the returned func is called.
func (s *Session) track(ctx context.Context, params mcp.Params) func() {
	var key string
	// Params may be a typed nil (ping, lists without a cursor).
	if rp, ok := params.(mcp.RequestParams); ok && !reflect.ValueOf(rp).IsNil() {
		if tok := rp.GetProgressToken(); tok != nil {
			key = tokenKey(tok)
		}
	}
	s.mu.Lock()
	s.inflight = append(s.inflight, ctx)
	if key != "" {
		s.progress[key] = ctx
	}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i, c := range s.inflight {
			if c == ctx {
				s.inflight = append(s.inflight[:i], s.inflight[i+1:]...)
				break
			}
		}
		if key != "" {
			delete(s.progress, key)
		}
	}
}

// ErrSessionEnded is returned for requests on a session that has ended.
var ErrSessionEnded = errors.New("mcpstdio: session ended")

// forward sends one request to child c with the request timeout, keeping
// the front ctx for the notifications it causes, and turns a failure into
// an error that names the target.
func forward[P mcp.Params, R any](s *Session, ctx context.Context, c *child, params P, fn func(context.Context, P) (R, error)) (R, error) {
	var zero R
	select {
	case <-s.done:
		if s.err != nil {
			return zero, s.err
		}
		return zero, ErrSessionEnded
	default:
	}
	defer s.track(ctx, params)()
	cctx, cancel := context.WithTimeout(ctx, s.b.requestTimeout(c.target))
	defer cancel()
	r, err := fn(cctx, params)
	if err != nil {
		return zero, c.failure(cctx, "", err)
	}
	return r, nil
}
