package mcpstdio

import (
	"github.com/tailgate-dev/tailgate/mcpstdio/buffers"

	"bytes"
	"encoding/json"
	"time"
)

// conn is a target as the relay reaches it: a stdio child's pipes
// (stdioConn), a remote Streamable HTTP server (httpLink), a remote legacy
// SSE server (sseLink). Each writes a message, reads what the target
// sends, and closes; what is particular to one kind (a process and its
// supervision, an HTTP session) lives below it. A conn is made with the
// handler its messages go to.
type conn interface {
	// write delivers one message; headers are HTTP headers of the
	// client's request that a remote target must see (SEP-2243
	// Mcp-Param-*), ignored on stdio.
	write(msg []byte, headers map[string]string) error
	// read hands what the target sends to the conn's handler, each
	// message with what it holds of the link's buffers, until the target
	// is gone, and says why it stopped: nil when the target went in
	// order, else what broke (the target is then ended).
	read() error
	// close ends the target: within grace, then by force; close(0) ends
	// it at once.
	close(grace time.Duration)
	// done is closed once the target is gone; exitError then says how
	// (nil while it is there).
	done() <-chan struct{}
	exitError() error
}

// goneWithin waits up to d for cn's target to be gone.
func goneWithin(cn conn, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-cn.done():
		return true
	case <-t.C:
		return false
	}
}

// stdioConn is a child process spoken to over its stdin and stdout, one
// JSON-RPC message a line; the process, and its supervision (process.go),
// are below it.
type stdioConn struct {
	*process
	lines  lineReader
	handle func(msg []byte, held *buffers.Charge)
}

func (l stdioConn) write(msg []byte, _ map[string]string) error {
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

// read reads the child's stdout until it closes (readLines).
func (l stdioConn) read() error {
	return l.lines.readLines(l.stdout, l.process.exited, l.handle)
}

func (l stdioConn) done() <-chan struct{}     { return l.process.exited }
func (l stdioConn) close(grace time.Duration) { l.stop(grace) }
