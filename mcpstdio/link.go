package mcpstdio

import (
	"bytes"
	"context"
	"encoding/json"
	"syscall"
	"time"
)

// link is how tailgate reaches one target: it carries messages to it and
// hands what it sends to the child's handle, and knows when it is gone.
type link interface {
	// write delivers one message; headers are HTTP headers of the
	// client's request that a remote target must see (SEP-2243
	// Mcp-Param-*), ignored on stdio.
	write(msg []byte, headers map[string]string) error
	// read hands the target's messages to c until the target is gone,
	// then fails c's pending requests (c.closed).
	read(c *child)
	exited() <-chan struct{}
	// exitError says how the target went; nil while it runs.
	exitError() error
	// waitExited waits up to d for the target to be gone.
	waitExited(d time.Duration) bool
	// stop ends the target (within grace, then by force) and waits.
	stop(grace time.Duration)
	// kill ends it at once (it broke the protocol).
	kill()
	// pid is the process id, 0 for a remote target.
	pid() int
}

// stdioLink is a child process spoken to over its stdin and stdout, one
// JSON-RPC message a line.
type stdioLink struct{ *process }

func (l stdioLink) write(msg []byte, _ map[string]string) error {
	// A message must be one line on stdio: JSON whitespace that is a line
	// break is removed (inside strings line breaks are always escaped).
	if bytes.IndexByte(msg, '\n') >= 0 || bytes.IndexByte(msg, '\r') >= 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, msg); err != nil {
			return err
		}
		msg = buf.Bytes()
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	// One write of message and newline keeps a message whole in the pipe.
	_, err := l.stdin.Write(append(msg, '\n'))
	return err
}

func (l stdioLink) read(c *child)           { c.readLoop(l.stdout, l.process.exited) }
func (l stdioLink) exited() <-chan struct{} { return l.process.exited }
func (l stdioLink) waitExited(d time.Duration) bool {
	return l.process.waitExited(context.Background(), d)
}
func (l stdioLink) kill()    { l.signalGroup(syscall.SIGKILL) }
func (l stdioLink) pid() int { return l.Pid() }
