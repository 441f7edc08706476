// Package relay owns the target side of tailgate's call pipeline: a
// Backend is a route's targets served as one MCP server; a Session is one
// front session's (or one caller's sessionless) way to them. It routes
// each message to its target (Route), forwards it as bytes with ids
// mapped and names prefixed where several targets share a session
// (Forward), streams what the target answers back (Reply), joins lists
// and listens across targets, bridges the two protocol generations
// (bridge.go, mrtr.go), binds tasks to their creators (owners.go), and
// supervises the targets' connections. Every target is a Conn: a stdio
// child (package mcpstdio) or a remote server's link made by
// RemoteTarget.Dial (package gateway/remote). It knows nothing of
// tailnets, HTTP routing or policy: the gateway judges each call before
// Forward.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tailgate-dev/tailgate/mcpstdio"
	"github.com/tailgate-dev/tailgate/mcpstdio/buffers"
)

// Target is a stdio MCP server command.
type Target struct {
	// Name identifies the target in logs, errors and prefixed names.
	Name    string
	Command string
	Args    []string
	// Env is added to the child's environment.
	Env map[string]string
	// ClearEnv starts the child with only Env (and the session's extra
	// environment) instead of the gateway's environment plus Env.
	ClearEnv bool
	// Dir is the child's working directory; empty is the gateway's.
	Dir string
	// User, if set, is the account the children run as, with its
	// supplementary groups; HOME, USER and LOGNAME are its own unless Env
	// sets them. Needs the gateway to run as root.
	User *mcpstdio.User
	// IdentityEnv gives the child the session's OpenParams.Identity in its
	// environment.
	IdentityEnv bool
	// CallerEnv, if set, is what a caller's child adds to its
	// environment (the caller's own secrets, a token naming it), and its
	// arguments if not nil: called as the caller's child starts, with the
	// session's OpenParams.Identity. An error fails the child's start and
	// says why, naming the target. The values in redact are redacted from
	// the child's stderr as the gateway's secrets are. Such a target has no pool and no warm-up: a
	// child starts only for a known caller.
	CallerEnv func(ctx context.Context, identity Identity) (env map[string]string, args []string, redact []string, err error)
	// Pool is how many children to keep started and initialized ahead of
	// demand; 0 starts each session's child on initialize. Safe only for
	// servers that keep no per-client state, and not with IdentityEnv or
	// CallerEnv.
	Pool int
	// InitializeTimeout and RequestTimeout override the backend's.
	InitializeTimeout time.Duration
	RequestTimeout    time.Duration
	// Remote, if set, makes the target an MCP server tailgate reaches
	// over the network instead of a command it starts.
	Remote *RemoteTarget
}

// RemoteTarget is an MCP server tailgate reaches over the network (a
// remote Streamable HTTP or SSE server, package gateway/remote): the relay
// treats its links as it treats a child's pipes.
type RemoteTarget struct {
	// Dial makes the link to the target for one session (or one caller's
	// sessionless requests): identity is its caller's (when TellsIdentity),
	// handle gets each message the target sends, with what it holds of
	// mem, the link's share of the gateway's buffers. Nothing is sent
	// until the first message; a link that cannot be made is a Conn that
	// has ended, its Err saying why.
	Dial func(identity Identity, handle func([]byte, *buffers.Charge), mem *buffers.Share, log *slog.Logger) Conn
	// TellsIdentity says the target is told the caller's identity with
	// each request: the relay passes each request's (ForwardOptions.Identity).
	TellsIdentity bool
}

// PrefixMode says when tool and prompt names carry their target's name,
// as agentgateway's prefixMode.
type PrefixMode string

const (
	// PrefixConditional prefixes names only when there are several
	// targets. It is the default.
	PrefixConditional PrefixMode = "conditional"
	// PrefixAlways always prefixes names with "<target>_".
	PrefixAlways PrefixMode = "always"
	// PrefixNever never prefixes names.
	PrefixNever PrefixMode = "never"
)

// Options configure a Backend. The zero value is usable.
type Options struct {
	// Logger receives session events and children's stderr. Default:
	// slog.Default().
	Logger *slog.Logger
	// Version is tailgate's version, in the serverInfo of a session that
	// multiplexes several targets.
	Version string
	// PrefixMode is how names are prefixed; default PrefixConditional.
	PrefixMode PrefixMode
	// FailureMode is what Open does when a target fails; default
	// FailClosed.
	FailureMode FailureMode
	// InitializeTimeout bounds starting and initializing a child; default
	// 30s.
	InitializeTimeout time.Duration
	// RequestTimeout bounds each forwarded request; default 10m. A client
	// that gives up earlier cancels sooner.
	RequestTimeout time.Duration
	// StopGrace is how long a child gets after its stdin closes, and again
	// after SIGTERM, before its process group is killed; default 2s.
	StopGrace time.Duration
	// DropEnv names variables of the gateway's environment that no child
	// may inherit, such as TS_AUTHKEY.
	DropEnv []string
	// Secrets are values that must not reach a child: any variable whose
	// value contains one is removed, whatever its name or origin.
	Secrets []string
	// HidePaths are files and directories no child may open, read, write
	// or remove (the node's state dir, the auth key file): on Linux with
	// Landlock, each child is confined away from them before it execs
	// (confine_linux.go); elsewhere they are not enforced.
	HidePaths []string
	// StderrLinesPerSecond caps how many stderr lines per child are logged
	// each second; the rest are counted. Default 100.
	StderrLinesPerSecond int
	// StderrMaxLine is the longest stderr line logged; default 4096 bytes.
	StderrMaxLine int
	// MaxMessageBytes is the longest message a child may write; a child
	// that writes a longer one is stopped. Default 64 MiB.
	MaxMessageBytes int
	// HeldPatience is how long a stdio child's output is not read for
	// want of room in Buffers (its clients have not taken enough of what
	// it said before) before the child is given up; default one minute,
	// longer than the gateway's write stall limit (30s), past which the
	// answers of a client that does not read are dropped.
	HeldPatience time.Duration
	// Buffers bound what the backend holds of messages being read from
	// remote targets, shared by every backend of a gateway; nil: the
	// backend's own, buffers.DefaultMax.
	Buffers *buffers.Bound
}

// FailureMode is what a session does when a target fails to start, as
// agentgateway's failureMode.
type FailureMode string

const (
	// FailClosed fails the session (its initialize) if any target fails.
	// It is the default.
	FailClosed FailureMode = "failClosed"
	// FailOpen serves the targets that started and says which are missing.
	FailOpen FailureMode = "failOpen"
)

// command is the stdio server t runs.
func (t *Target) command() *mcpstdio.Command {
	return &mcpstdio.Command{Name: t.Name, Path: t.Command, Args: t.Args, Env: t.Env, ClearEnv: t.ClearEnv, Dir: t.Dir, User: t.User}
}

// envPolicy is what of the gateway's own no child of b may get.
func (b *Backend) envPolicy() mcpstdio.EnvPolicy {
	return mcpstdio.EnvPolicy{DropEnv: b.opts.DropEnv, Secrets: b.opts.Secrets, HidePaths: b.opts.HidePaths}
}

// Backend is a set of targets served as one MCP server. Open starts a
// Session for each front session.
type Backend struct {
	name    string
	targets []Target
	opts    Options
	log     *slog.Logger

	pools map[string]*pool

	buffers *buffers.Bound

	mu       sync.Mutex
	sessions map[*Session]struct{}
	closed   bool

	// tasks are the tasks its targets created, by caller (owners.go).
	tasks taskOwners

	started atomic.Uint64
	running atomic.Int64

	exitMu sync.Mutex
	exits  map[ExitKey]uint64
	// health is how each target's latest start went.
	health targetHealth
	// shuttingDown is set by ShuttingDown: its children stop quickly.
	shuttingDown atomic.Bool
}

// shutdownInputGrace is how long a stdio child gets to exit on its own
// once its stdin closes when the gateway goes down, before SIGTERM: a
// server that keeps running past the end of its input (server-everything
// after a session that used it: its timers) held Ctrl-C of tailgate dev up
// for a whole StopGrace; servers that exit on end of input do so within
// tens of milliseconds.
const shutdownInputGrace = 200 * time.Millisecond

// ShuttingDown says the gateway is going down: from now on the backend's
// stdio children get shutdownInputGrace after their stdin closes, not
// StopGrace, before SIGTERM (StopGrace still before SIGKILL).
func (b *Backend) ShuttingDown() { b.shuttingDown.Store(true) }

// ExitKey counts child exits by target and cause.
type ExitKey struct {
	Target string
	// Cause is "stopped" (tailgate ended it), "exited" (status 0 on its
	// own), "failed" (non-zero status) or "signaled".
	Cause string
}

// NewBackend returns a backend named name (for logs) serving targets.
func NewBackend(name string, targets []Target, opts Options) (*Backend, error) {
	if len(targets) == 0 {
		return nil, fmt.Errorf("backend %q: no targets", name)
	}
	for _, t := range targets {
		if t.Remote != nil {
			if t.Pool > 0 {
				return nil, fmt.Errorf("backend %q: target %q: a pool is for stdio targets", name, t.Name)
			}
			continue
		}
		if t.Command == "" {
			return nil, fmt.Errorf("backend %q: target %q: no command", name, t.Name)
		}
		if t.Pool > 0 && (t.IdentityEnv || t.CallerEnv != nil) {
			return nil, fmt.Errorf("backend %q: target %q: a pool cannot be used with identityEnv or per-caller environment (pooled children start before the caller is known)", name, t.Name)
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = mcpstdio.DefaultMaxMessageBytes
	}
	if opts.HeldPatience <= 0 {
		opts.HeldPatience = mcpstdio.DefaultHeldPatience
	}
	if opts.Buffers == nil {
		opts.Buffers = buffers.New(0)
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.PrefixMode == "" {
		opts.PrefixMode = PrefixConditional
	}
	if opts.FailureMode == "" {
		opts.FailureMode = FailClosed
	}
	if opts.InitializeTimeout <= 0 {
		opts.InitializeTimeout = 30 * time.Second
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 10 * time.Minute
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = 2 * time.Second
	}
	if opts.StderrLinesPerSecond <= 0 {
		opts.StderrLinesPerSecond = mcpstdio.DefaultStderrLinesPerSecond
	}
	if opts.StderrMaxLine <= 0 {
		opts.StderrMaxLine = mcpstdio.DefaultStderrMaxLine
	}
	b := &Backend{
		name:     name,
		targets:  slices.Clone(targets),
		opts:     opts,
		log:      mcpstdio.RedactLogger(opts.Logger, opts.Secrets).With("backend", name),
		sessions: make(map[*Session]struct{}),
		pools:    make(map[string]*pool),
		buffers:  opts.Buffers,
		exits:    make(map[ExitKey]uint64),
	}
	for i := range b.targets {
		if t := &b.targets[i]; t.Pool > 0 {
			b.pools[t.Name] = startPool(b, t)
		}
	}
	return b, nil
}

func (b *Backend) prefixed() bool {
	return b.opts.PrefixMode == PrefixAlways || (b.opts.PrefixMode == PrefixConditional && len(b.targets) > 1)
}

func (b *Backend) initializeTimeout(t *Target) time.Duration {
	if t.InitializeTimeout > 0 {
		return t.InitializeTimeout
	}
	return b.opts.InitializeTimeout
}

// Warm starts and initializes each stdio target once, all at once, and
// stops them: a first start's cost (npx fetching a package) is paid before
// a client waits for it. Remote targets are left alone: they have nothing
// to install, and a slow one would only hold the others' warm-up (and the
// callers waiting for it) for tailgate's own sake. It returns the names
// of the targets started, and what failed (each bounded by its
// initializeTimeout).
func (b *Backend) Warm(ctx context.Context) ([]string, error) {
	var names []string
	errs := make([]error, len(b.targets))
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range b.targets {
		t := &b.targets[i]
		if t.Remote != nil || t.CallerEnv != nil {
			continue // nothing to start without a caller
		}
		wg.Go(func() {
			c, err := b.startChild(ctx, t, nil, nil, "warm-up", false)
			if err != nil {
				errs[i] = fmt.Errorf("target %q: %w", t.Name, err)
				return
			}
			c.stop(b.opts.StopGrace)
			mu.Lock()
			names = append(names, t.Name)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(names)
	return names, errors.Join(errs...)
}

// ownTimeout bounds each request tailgate makes of t for itself (the lists
// it routes, judges and labels calls by): as long as t may take to start
// answering at all, its initializeTimeout, and no longer than a client's
// request may take.
func (b *Backend) ownTimeout(t *Target) time.Duration {
	return min(b.initializeTimeout(t), b.requestTimeout(t))
}

func (b *Backend) requestTimeout(t *Target) time.Duration {
	if t.RequestTimeout > 0 {
		return t.RequestTimeout
	}
	return b.opts.RequestTimeout
}

// exited counts a child's exit by cause (mcpstdio.Child.ExitCause).
func (b *Backend) exited(target, cause string) {
	b.exitMu.Lock()
	b.exits[ExitKey{Target: target, Cause: cause}]++
	b.exitMu.Unlock()
}

// Stats is a snapshot of a backend's sessions and children.
type Stats struct {
	// Sessions is the number of open sessions.
	Sessions int
	// ChildrenStarted counts every child process started since NewBackend,
	// pooled ones included.
	ChildrenStarted uint64
	// ChildrenRunning is the number of child processes not yet reaped.
	ChildrenRunning int64
	// Exits counts reaped children by target and cause.
	Exits map[ExitKey]uint64
	// PoolReady is the number of pooled children waiting, per target.
	PoolReady map[string]int
}

// Sessions is the number of open sessions; cheaper than Stats, for a
// check on every new session.
func (b *Backend) Sessions() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.sessions)
}

// Stats reports the backend's sessions and children.
func (b *Backend) Stats() Stats {
	b.mu.Lock()
	st := Stats{Sessions: len(b.sessions), ChildrenStarted: b.started.Load(), ChildrenRunning: b.running.Load()}
	b.mu.Unlock()
	b.exitMu.Lock()
	st.Exits = make(map[ExitKey]uint64, len(b.exits))
	for k, v := range b.exits {
		st.Exits[k] = v
	}
	b.exitMu.Unlock()
	st.PoolReady = make(map[string]int, len(b.pools))
	for name, p := range b.pools {
		st.PoolReady[name] = len(p.ready)
	}
	return st
}

// ErrClosed is returned by Open after Close.
var ErrClosed = errors.New("tailgate: backend closed")

// Close ends every session and waits for their children to be reaped. Open
// fails afterwards.
func (b *Backend) Close() error {
	b.mu.Lock()
	b.closed = true
	sessions := make([]*Session, 0, len(b.sessions))
	for s := range b.sessions {
		sessions = append(sessions, s)
	}
	b.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range sessions {
		wg.Go(func() { s.Close() })
	}
	for _, p := range b.pools {
		wg.Go(p.close)
	}
	wg.Wait()
	return nil
}

func (b *Backend) add(s *Session) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	b.sessions[s] = struct{}{}
	return nil
}

func (b *Backend) remove(s *Session) {
	b.mu.Lock()
	delete(b.sessions, s)
	b.mu.Unlock()
}

// targetHealth is how each target's latest start went: the error of the
// targets whose latest start failed.
type targetHealth struct {
	mu     sync.Mutex
	failed map[string]error
}

func (h *targetHealth) note(target string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		delete(h.failed, target)
		return
	}
	if h.failed == nil {
		h.failed = make(map[string]error)
	}
	h.failed[target] = err
}

// Health is, by target, why its latest start failed; targets that started
// (or have not been started yet) are not in it.
func (b *Backend) Health() map[string]error {
	b.health.mu.Lock()
	defer b.health.mu.Unlock()
	return maps.Clone(b.health.failed)
}

// Targets are the names of the backend's targets.
func (b *Backend) Targets() []string {
	names := make([]string, len(b.targets))
	for i := range b.targets {
		names[i] = b.targets[i].Name
	}
	return names
}
