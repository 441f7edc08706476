// Package remote is tailgate's client of remote MCP servers: Streamable
// HTTP (streamable.go) and the legacy HTTP+SSE transport (sse.go). Each
// link is a connection the relay writes messages to and reads messages
// from as it does a stdio child's pipes (relay.Conn); what the server
// sends is read within the gateway's buffers (read.go), and each request
// carries the caller's identity where the target is told it
// (identity.go).
package remote

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/tailgate-dev/tailgate/tsnode"
)

// Options describe a remote target.
type Options struct {
	// Name is the target's name in config, logs and errors.
	Name string
	// URL is its endpoint ("http://tools.tail1234.ts.net:8080/mcp"), or
	// with SSE its event stream.
	URL string
	// SSE says the server speaks the legacy HTTP+SSE transport: URL is its
	// event stream, whose endpoint event names where to post.
	SSE bool
	// Tailnet says the host is on the tailnet: it is dialled through
	// TailnetDial, tailgate's own node, so the target sees the gateway as
	// a tailnet peer.
	Tailnet     bool
	TailnetDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Headers are sent with every request (API keys); their values are
	// never logged.
	Headers map[string]string
	// IdentityHeaders sends the caller's identity (from WhoIs only) as
	// X-Tailgate-User-Login, X-Tailgate-Node-Name, X-Tailgate-Node-Tags.
	IdentityHeaders bool
	// CallerHeaders, if set, are headers that say who calls, made for
	// each request from its caller (a signed identity token); an error
	// fails the request. Their values are never logged.
	CallerHeaders func(id *tsnode.Identity) (http.Header, error)
	// Authorizer, if set, gives each request its caller's own OAuth
	// token and begins a connect flow when the target refuses it.
	Authorizer Authorizer
	// CAFile adds PEM certificates to the system's roots.
	CAFile string
	// ConnectTimeout bounds each connection's dial and TLS handshake;
	// default 10s.
	ConnectTimeout time.Duration
	// MaxMessageBytes bounds each message read from the server; default
	// 64 MiB.
	MaxMessageBytes int
}

// Target is a remote MCP server: its HTTP client, whose connections its
// links share.
type Target struct {
	opts   Options
	client *http.Client
	// err is why there is no client (a CA file that cannot be read): each
	// link fails with it.
	err error
}

// New is the target opts describe. A target that cannot be reached as
// configured is still made: each of its links fails, saying why.
func New(opts Options) *Target {
	t := &Target{opts: opts}
	t.client, t.err = newClient(opts)
	return t
}

func (t *Target) maxMsg() int {
	if t.opts.MaxMessageBytes > 0 {
		return t.opts.MaxMessageBytes
	}
	return 64 << 20
}

// Conn is one link to the target, as the relay reaches a target
// (relay.Conn): it writes a message, reads what the server sends, and
// closes.
type Conn interface {
	// Write posts msg; headers are the client request's headers the
	// server must see (SEP-2243 Mcp-Param-*), identity the request's own
	// caller (nil: the link's latest).
	Write(msg []byte, headers map[string]string, identity *tsnode.Identity) error
	// Read waits until the link has ended and says why: the server's
	// messages go to the link's handler as they come.
	Read() error
	// Close ends the link (an HTTP session is deleted).
	Close(grace time.Duration)
	// Done is closed once the link has ended; Err then says why.
	Done() <-chan struct{}
	Err() error
	// SetIdentity makes identity the one the link's requests carry from
	// now on, where the target is told it.
	SetIdentity(identity *tsnode.Identity)
}

// Failed is a link that could not be made (its caller lacks a credential
// the target needs): it has ended, and Err says why.
func Failed(err error) Conn {
	done := make(chan struct{})
	close(done)
	return failedLink{err: err, done: done}
}

// failedLink is a link that ended before it began.
type failedLink struct {
	err  error
	done chan struct{}
}

func (f failedLink) Write([]byte, map[string]string, *tsnode.Identity) error { return f.err }
func (f failedLink) Read() error                                             { return nil }
func (f failedLink) Close(time.Duration)                                     {}
func (f failedLink) Done() <-chan struct{}                                   { return f.done }
func (f failedLink) Err() error                                              { return f.err }
func (f failedLink) SetIdentity(*tsnode.Identity)                            {}
