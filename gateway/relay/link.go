package relay

import (
	"time"

	"github.com/tailgate-dev/tailgate/mcpstdio"
)

// Conn is a target as the relay reaches it: a stdio child's pipes
// (stdioConn: package mcpstdio), a remote Streamable HTTP or legacy SSE server
// (package gateway/remote, dialled through RemoteTarget.Dial). Each writes
// a message, reads what the target sends, and closes; what is particular
// to one kind (a process and its supervision, an HTTP session) lives
// below it. A Conn is made with the handler its messages go to.
type Conn interface {
	// Write delivers one message. headers are HTTP headers of the
	// client's request that a remote target must see (SEP-2243
	// Mcp-Param-*), and identity the request's own caller (nil: the
	// link's latest, SetIdentity); both are ignored on stdio.
	Write(msg []byte, headers map[string]string, identity Identity) error
	// Read hands what the target sends to the Conn's handler, each
	// message with what it holds of the link's buffers, until the target
	// is gone, and says why it stopped: nil when the target went in
	// order, else what broke (the target is then ended).
	Read() error
	// Close ends the target: within grace, then by force; Close(0) ends
	// it at once.
	Close(grace time.Duration)
	// Done is closed once the target is gone; Err then says how (nil
	// while it is there).
	Done() <-chan struct{}
	Err() error
}

// IdentitySetter is a Conn told its caller's identity as of the caller's
// latest request (a remote target that is sent its caller's identity with
// each HTTP request it gets, its own included).
type IdentitySetter interface {
	SetIdentity(identity Identity)
}

// Identity is a caller as the relay passes it on to its targets. Env
// describes it as environment variables, for a stdio child with
// IdentityEnv; the rest is the gateway's own: the dialer of a remote
// target (RemoteTarget.Dial) and a target's CallerEnv, which the gateway
// made too, read it.
type Identity interface {
	Env() map[string]string
}

// goneWithin waits up to d for cn's target to be gone.
func goneWithin(cn Conn, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-cn.Done():
		return true
	case <-t.C:
		return false
	}
}

// stdioConn is a stdio child (package mcpstdio) as a Conn: what a remote
// target is told besides the message (headers, the caller) means nothing
// on a pipe.
type stdioConn struct{ *mcpstdio.Child }

func (l stdioConn) Write(msg []byte, _ map[string]string, _ Identity) error {
	return l.Child.Write(msg)
}

// EnvIdentity is an Identity that is its environment alone (a caller
// known by environment variables, as in tests and tools).
type EnvIdentity map[string]string

// Env is e itself.
func (e EnvIdentity) Env() map[string]string { return e }
