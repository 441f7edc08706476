package mcpstdio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Session is one front session's children, one per target, started and
// initialized by Open. It ends when Close is called or a child exits;
// Done is closed then and Err says why.
type Session struct {
	b    *Backend
	id   string
	peer Peer
	log  *slog.Logger

	children []*child
	prefixed bool

	mu       sync.Mutex
	progress map[string]context.Context // progress token → front request ctx
	inflight []context.Context          // front request contexts, oldest first

	endOnce  sync.Once
	stopping chan struct{} // closed when end begins
	done     chan struct{} // closed when end has reaped every child
	err      error
}

type child struct {
	target *Target
	proc   *process
	cs     *mcp.ClientSession
}

// Open starts and initializes a child for each target. It fails if any
// child fails to start or to initialize within the initialize timeout,
// and leaves no process behind when it does.
func (b *Backend) Open(ctx context.Context, p OpenParams) (*Session, error) {
	s := &Session{
		b:        b,
		id:       p.ID,
		peer:     p.Peer,
		log:      b.log.With("session", p.ID),
		prefixed: b.opts.PrefixMode == PrefixAlways || (b.opts.PrefixMode == PrefixConditional && len(b.targets) > 1),
		progress: make(map[string]context.Context),
		stopping: make(chan struct{}),
		done:     make(chan struct{}),
	}
	if err := b.add(s); err != nil {
		return nil, err
	}
	ictx, cancel := context.WithTimeout(ctx, b.opts.InitializeTimeout)
	defer cancel()
	start := time.Now()
	for i := range b.targets {
		c, err := s.startChild(ictx, &b.targets[i], p)
		if c != nil {
			s.children = append(s.children, c)
		}
		if err != nil {
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

func (s *Session) startChild(ctx context.Context, t *Target, p OpenParams) (*child, error) {
	log := s.log.With("target", t.Name)
	var identity map[string]string
	if t.IdentityEnv {
		identity = p.Identity
	}
	proc, err := startProcess(t, s.b.childEnv(t, identity), log, stderrLimits{maxLine: s.b.opts.StderrMaxLine, perSecond: s.b.opts.StderrLinesPerSecond})
	if err != nil {
		return nil, fmt.Errorf("target %q: start %s: %w", t.Name, t.Command, err)
	}
	s.b.started.Add(1)
	c := &child{target: t, proc: proc}
	impl := &mcp.Implementation{Name: "tailgate"}
	if p.ClientInfo != nil {
		impl = p.ClientInfo
	}
	client := mcp.NewClient(impl, &mcp.ClientOptions{Logger: s.b.opts.SDKLogger.With("session", s.id, "target", t.Name)})
	transport := &interceptTransport{
		Transport: &mcp.IOTransport{Reader: proc.stdout, Writer: proc.stdin},
		intercept: func(req *jsonrpc.Request) bool { return s.intercept(c, req) },
	}
	cs, err := client.Connect(ctx, transport, &mcp.ClientSessionOptions{ProtocolVersion: ClientVersion})
	if err != nil {
		return c, s.childError(ctx, c, "initialize", err)
	}
	c.cs = cs
	return c, nil
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
		select {
		case <-c.proc.exited:
			return false
		default:
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
			wg.Go(func() {
				if c.cs != nil {
					c.cs.Close()
				}
				c.proc.stop(s.b.opts.StopGrace)
			})
		}
		wg.Wait()
		s.b.remove(s)
		close(s.done)
		if cause == nil {
			s.log.Info("session closed")
		}
	})
}

// InitializeResult is what the session's server says of itself: the
// target's own result, with capabilities reduced to what tailgate forwards.
func (s *Session) InitializeResult() *mcp.InitializeResult {
	c := s.children[0]
	res := *c.cs.InitializeResult()
	caps := &mcp.ServerCapabilities{}
	if in := res.Capabilities; in != nil {
		if in.Tools != nil {
			caps.Tools = &mcp.ToolCapabilities{}
		}
		if in.Prompts != nil {
			caps.Prompts = &mcp.PromptCapabilities{}
		}
		if in.Resources != nil {
			caps.Resources = &mcp.ResourceCapabilities{}
		}
		caps.Completions = in.Completions
		caps.Logging = in.Logging
	}
	res.Capabilities = caps
	return &res
}

// intercept takes the child's notifications that must reach the front in
// order: progress, on the stream of the request that asked for it, and
// log messages.
func (s *Session) intercept(c *child, req *jsonrpc.Request) bool {
	switch req.Method {
	case "notifications/progress":
		var p mcp.ProgressNotificationParams
		if err := json.Unmarshal(req.Params, &p); err != nil {
			s.log.Warn("bad progress notification from child", "target", c.target.Name, "err", err)
			return true
		}
		ctx, ok := s.progressContext(p.ProgressToken)
		if !ok {
			s.log.Debug("progress for no pending request", "target", c.target.Name, "token", p.ProgressToken)
			return true
		}
		if err := s.peer.NotifyProgress(ctx, &p); err != nil {
			s.log.Debug("forward progress", "target", c.target.Name, "err", err)
		}
		return true
	case "notifications/message":
		var p mcp.LoggingMessageParams
		if err := json.Unmarshal(req.Params, &p); err != nil {
			s.log.Warn("bad log notification from child", "target", c.target.Name, "err", err)
			return true
		}
		if err := s.peer.Log(s.relatedContext(), &p); err != nil {
			s.log.Debug("forward log message", "target", c.target.Name, "err", err)
		}
		return true
	}
	return false
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

// relatedContext is the context to send a notification that names no
// request with: stdio carries no "related request", so the newest request
// in flight is the best guess, and without one the notification goes to
// the client's standalone stream.
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
	cctx, cancel := context.WithTimeout(ctx, s.b.opts.RequestTimeout)
	defer cancel()
	r, err := fn(cctx, params)
	if err != nil {
		return zero, s.childError(cctx, c, "", err)
	}
	return r, nil
}

// childError explains a failed request to c: the child's own JSON-RPC
// errors pass unchanged; a dead child is named with its exit status and
// last stderr; a timeout says which.
func (s *Session) childError(ctx context.Context, c *child, op string, err error) error {
	var wire *jsonrpc.Error
	if errors.As(err, &wire) {
		return err
	}
	// A closed stdout usually means the child is exiting: give it a moment
	// so the error can say how it ended.
	if c.proc.waitExited(context.Background(), 200*time.Millisecond) {
		msg := c.proc.exitError().Error()
		if op != "" {
			msg += " (during " + op + ")"
		}
		return &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: msg}
	}
	if op != "" {
		op = " " + op
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: fmt.Sprintf("target %q%s: no answer in time: %v", c.target.Name, op, err)}
	}
	return fmt.Errorf("target %q%s: %w", c.target.Name, op, err)
}
