// Package mcpstdio owns tailgate's stdio MCP servers as processes: it
// starts a server's command in a process group of its own (confined away
// from the gateway's state and from other children, as another user if
// asked, with the gateway's secrets kept out of its environment), frames
// its stdin and stdout as one JSON-RPC message a line, drains its stderr
// into the log, and stops and reaps the whole group. A started server is a
// Child: the connection the relay (package gateway/relay) reads and writes
// messages on. It knows nothing of MCP's methods, tailnets, HTTP or remote
// servers.
package mcpstdio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tailgate-dev/tailgate/mcpstdio/buffers"
)

// Command is a stdio MCP server to run: what, where, and as whom.
type Command struct {
	// Name names the server (its target) in logs and exit errors.
	Name string
	// Path is the program, looked up in PATH as exec.Command does, and
	// Args its arguments.
	Path string
	Args []string
	// Env is added to the child's environment.
	Env map[string]string
	// ClearEnv starts the child with only Env instead of the gateway's
	// environment plus Env.
	ClearEnv bool
	// Dir is the child's working directory; empty is the gateway's.
	Dir string
	// User, if set, is the account the child runs as, with its
	// supplementary groups; HOME, USER and LOGNAME are its own unless Env
	// sets them. Needs the gateway to run as root.
	User *User
}

// The defaults of StartOptions, which the relay's Options share.
const (
	DefaultStderrLinesPerSecond = 100
	DefaultStderrMaxLine        = 4096
	DefaultMaxMessageBytes      = 64 << 20
	DefaultHeldPatience         = time.Minute
)

// StartOptions are how a Child is started and read. The zero value is
// usable: the defaults are the relay's.
type StartOptions struct {
	// Logger receives the child's stderr, a line an event.
	Logger *slog.Logger
	// Env is what keeps the gateway's own out of the child's environment
	// and files.
	Env EnvPolicy
	// Redact are values (the caller's own secrets given to this child)
	// redacted from its stderr and exit error, besides Env.Secrets.
	Redact []string
	// StderrLinesPerSecond caps the stderr lines logged each second
	// (default 100); StderrMaxLine is the longest logged (default 4096).
	StderrLinesPerSecond int
	StderrMaxLine        int
	// MaxMessageBytes is the longest message the child may write; a
	// longer one ends reading (Read's error). Default 64 MiB.
	MaxMessageBytes int
	// Mem is the share of the gateway's buffers each message read is
	// charged to (default: a bound of its own), and HeldPatience how long
	// reading waits for room in it (default one minute).
	Mem          *buffers.Share
	HeldPatience time.Duration
	// Handle gets each message the child writes, with what it holds of
	// Mem, to release once the message is done with.
	Handle func(msg []byte, held *buffers.Charge)
}

// Child is a started stdio server: one JSON-RPC message a line on its
// stdin and stdout, its process group below.
type Child struct {
	p      *process
	lines  lineReader
	handle func(msg []byte, held *buffers.Charge)
	redact *redactor
}

// Start starts cmd as a child in a process group of its own, its
// environment made by opts.Env, its stderr logged (redacted) to
// opts.Logger. Nothing is read until Read.
func Start(cmd *Command, opts StartOptions) (*Child, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.StderrLinesPerSecond <= 0 {
		opts.StderrLinesPerSecond = DefaultStderrLinesPerSecond
	}
	if opts.StderrMaxLine <= 0 {
		opts.StderrMaxLine = DefaultStderrMaxLine
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opts.HeldPatience <= 0 {
		opts.HeldPatience = DefaultHeldPatience
	}
	if opts.Mem == nil {
		opts.Mem = buffers.New(0).Share(opts.MaxMessageBytes)
	}
	if opts.Handle == nil {
		opts.Handle = func(_ []byte, held *buffers.Charge) { held.Release() }
	}
	redact := slices.Concat(opts.Env.Secrets, opts.Redact)
	p, err := startProcess(cmd, opts.Env.environ(cmd), RedactLogger(opts.Logger, redact),
		stderrLimits{maxLine: opts.StderrMaxLine, perSecond: opts.StderrLinesPerSecond})
	if err != nil {
		return nil, fmt.Errorf("target %q: start %s: %w", cmd.Name, cmd.Path, err)
	}
	return &Child{
		p:      p,
		lines:  lineReader{mem: opts.Mem, patience: opts.HeldPatience, maxMsg: opts.MaxMessageBytes},
		handle: opts.Handle,
		redact: newRedactor(redact),
	}, nil
}

// Write delivers one message on the child's stdin.
func (c *Child) Write(msg []byte) error {
	// A message must be one line on stdio: JSON whitespace that is a line
	// break is removed (inside strings line breaks are always escaped).
	if bytes.IndexByte(msg, '\n') >= 0 || bytes.IndexByte(msg, '\r') >= 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, msg); err != nil {
			return err
		}
		msg = buf.Bytes()
	}
	c.p.wmu.Lock()
	defer c.p.wmu.Unlock()
	// One write of message and newline keeps a message whole in the pipe.
	_, err := c.p.stdin.Write(append(msg, '\n'))
	return err
}

// Read hands each line the child writes on stdout to the Handle until
// stdout closes: nil then, else why reading stopped (a line too long, or
// held back past HeldPatience).
func (c *Child) Read() error {
	return c.lines.readLines(c.p.stdout, c.p.exited, c.handle)
}

// Close stops the child: its stdin closed, then SIGTERM, then SIGKILL to
// its group, grace apart; it returns once the child is reaped. Close(0)
// kills it at once.
func (c *Child) Close(grace time.Duration) { c.p.stop(grace, grace) }

// Shutdown stops the child as Close does, but SIGTERMs its group once it
// has not exited inputGrace after its stdin closed: for a gateway going
// down, where a server that keeps running past the end of its input
// (timers of its own) would hold up the exit for a whole grace, and one
// that exits on end of input does so well within inputGrace.
func (c *Child) Shutdown(inputGrace, grace time.Duration) { c.p.stop(inputGrace, grace) }

// Kill ends the child's whole process group at once, as a protocol
// breaker: its exit is counted as signaled, not stopped.
func (c *Child) Kill() { c.p.signalGroup(syscall.SIGKILL) }

// Done is closed once the child is reaped.
func (c *Child) Done() <-chan struct{} { return c.p.exited }

// Err is how the child ended, quoting its last stderr lines (redacted);
// nil while it runs.
func (c *Child) Err() error {
	err := c.p.exitError()
	if err == nil || c.redact == nil {
		return err
	}
	if s := err.Error(); c.redact.string(s) != s {
		return errors.New(c.redact.string(s))
	}
	return err
}

// Pid is the child's process id.
func (c *Child) Pid() int { return c.p.Pid() }

// Started is when the child started.
func (c *Child) Started() time.Time { return c.p.started }

// ExitCause says how the child ended, once Done: "stopped" (tailgate
// ended it), "exited" (status 0 on its own), "failed" (non-zero status) or
// "signaled".
func (c *Child) ExitCause() string {
	switch {
	case c.p.stopped.Load():
		return "stopped"
	case c.p.waitErr != nil && strings.Contains(c.p.waitErr.Error(), "signal"):
		return "signaled"
	case c.p.waitErr != nil:
		return "failed"
	}
	return "exited"
}
