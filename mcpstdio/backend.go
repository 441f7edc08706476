// Package mcpstdio owns tailgate's stdio MCP servers: it starts one child
// process per front session per target, initializes it, forwards MCP
// requests and notifications, supervises the child and reaps its whole
// process group. It knows nothing of tailnets or HTTP routing.
package mcpstdio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
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
	// IdentityEnv gives the child the session's OpenParams.Identity in its
	// environment.
	IdentityEnv bool
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
	// SDKLogger receives go-sdk's own client logs; default Logger.
	SDKLogger *slog.Logger
	// PrefixMode is how names are prefixed; default PrefixConditional.
	PrefixMode PrefixMode
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
	// StderrLinesPerSecond caps how many stderr lines per child are logged
	// each second; the rest are counted. Default 100.
	StderrLinesPerSecond int
	// StderrMaxLine is the longest stderr line logged; default 4096 bytes.
	StderrMaxLine int
}

// ClientVersion is the MCP protocol version tailgate speaks to children.
// Pinning it skips go-sdk's server/discover probe, which stdio servers of
// today answer with an error.
const ClientVersion = "2025-11-25"

// Backend is a set of targets served as one MCP server. Open starts a
// Session for each front session.
type Backend struct {
	name    string
	targets []Target
	opts    Options
	log     *slog.Logger

	mu       sync.Mutex
	sessions map[*Session]struct{}
	closed   bool

	started atomic.Uint64
}

// NewBackend returns a backend named name (for logs) serving targets.
func NewBackend(name string, targets []Target, opts Options) (*Backend, error) {
	if len(targets) == 0 {
		return nil, fmt.Errorf("backend %q: no targets", name)
	}
	if len(targets) > 1 {
		return nil, fmt.Errorf("backend %q: several targets in one backend are not supported yet", name)
	}
	for _, t := range targets {
		if t.Command == "" {
			return nil, fmt.Errorf("backend %q: target %q: no command", name, t.Name)
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.SDKLogger == nil {
		opts.SDKLogger = opts.Logger
	}
	if opts.PrefixMode == "" {
		opts.PrefixMode = PrefixConditional
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
		opts.StderrLinesPerSecond = 100
	}
	if opts.StderrMaxLine <= 0 {
		opts.StderrMaxLine = 4096
	}
	return &Backend{
		name:     name,
		targets:  slices.Clone(targets),
		opts:     opts,
		log:      opts.Logger.With("backend", name),
		sessions: make(map[*Session]struct{}),
	}, nil
}

// Stats is a snapshot of a backend's sessions and children.
type Stats struct {
	// Sessions is the number of open sessions.
	Sessions int
	// ChildrenStarted counts every child process started since NewBackend.
	ChildrenStarted uint64
}

// Stats reports the backend's sessions and children.
func (b *Backend) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Stats{Sessions: len(b.sessions), ChildrenStarted: b.started.Load()}
}

// ErrClosed is returned by Open after Close.
var ErrClosed = errors.New("mcpstdio: backend closed")

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

// childEnv is the environment of a child of t: the gateway's (unless
// ClearEnv) without DropEnv, plus t.Env, plus extra; then anything holding
// a secret is removed, wherever it came from.
func (b *Backend) childEnv(t *Target, extra map[string]string) []string {
	var env []string
	if !t.ClearEnv {
		for _, kv := range os.Environ() {
			name, _, _ := strings.Cut(kv, "=")
			if !slices.Contains(b.opts.DropEnv, name) {
				env = append(env, kv)
			}
		}
	}
	set := func(m map[string]string) {
		for _, k := range sortedKeys(m) {
			env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, k+"=") })
			env = append(env, k+"="+m[k])
		}
	}
	set(t.Env)
	set(extra)
	return slices.DeleteFunc(env, func(kv string) bool {
		name, value, _ := strings.Cut(kv, "=")
		if slices.Contains(b.opts.DropEnv, name) {
			return true
		}
		for _, s := range b.opts.Secrets {
			if s != "" && strings.Contains(value, s) {
				return true
			}
		}
		return false
	})
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Peer is the front side of a session: where the children's
// notifications go. *mcp.ServerSession implements it.
type Peer interface {
	NotifyProgress(ctx context.Context, params *mcp.ProgressNotificationParams) error
	Log(ctx context.Context, params *mcp.LoggingMessageParams) error
}

// OpenParams describe the front session a Session serves.
type OpenParams struct {
	// ID names the front session in logs.
	ID string
	// Peer receives the children's notifications.
	Peer Peer
	// ClientInfo is the front client's implementation, passed on to the
	// children.
	ClientInfo *mcp.Implementation
	// Identity describes the caller as environment variables; it reaches
	// the children of targets with IdentityEnv, and overrides their Env.
	Identity map[string]string
}
