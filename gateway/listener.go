package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tailgate-dev/tailgate/policy"
)

// IdentifyFunc resolves a connection's peer into the CEL source: its
// address and, on a tailnet, who it is. An error fails the connection
// closed. The tailnet node provides one (WhoIs); tests inject their own.
type IdentifyFunc func(ctx context.Context, remote netip.AddrPort) (*policy.Source, error)

// addressOnly is the IdentifyFunc without a tailnet: source.address and
// source.port only.
func addressOnly(_ context.Context, remote netip.AddrPort) (*policy.Source, error) {
	return &policy.Source{Address: remote.Addr().Unmap().String(), Port: int(remote.Port())}, nil
}

// authListener runs frontendPolicies.networkAuthorization on each
// accepted connection before any byte of HTTP is read, and hands on only
// the connections it allows, each with its source.
type authListener struct {
	net.Listener
	// rules returns the current networkAuthorization (it changes on
	// reload).
	rules func() *policy.RuleSet
	// reply reports whether a denied connection is answered 403 rather
	// than just closed (frontendPolicies.networkAuthorization.denied).
	reply    func() bool
	identify IdentifyFunc
	log      *slog.Logger
	// decided is told every decision, about whom (nil: the peer could
	// not be identified) and how long identifying the peer took.
	decided func(src *policy.Source, remote netip.AddrPort, d policy.Decision, identify time.Duration)

	conns     chan net.Conn
	errc      chan error
	done      chan struct{}
	closeOnce sync.Once
}

// identifyTimeout bounds resolving a peer; a peer that cannot be resolved
// in time is refused.
const identifyTimeout = 5 * time.Second

func newAuthListener(ln net.Listener, rules func() *policy.RuleSet, reply func() bool, identify IdentifyFunc, log *slog.Logger, decided func(*policy.Source, netip.AddrPort, policy.Decision, time.Duration)) *authListener {
	l := &authListener{
		Listener: ln,
		rules:    rules,
		reply:    reply,
		identify: identify,
		log:      log,
		decided:  decided,
		conns:    make(chan net.Conn),
		errc:     make(chan error, 1),
		done:     make(chan struct{}),
	}
	go l.acceptLoop()
	return l
}

func (l *authListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			l.errc <- err
			return
		}
		// Each connection is judged on its own goroutine, so that a slow
		// identity lookup for one peer does not hold up the others.
		go l.admit(c)
	}
}

func (l *authListener) admit(c net.Conn) {
	remote, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		l.log.Error("connection refused: unparsable remote address", "addr", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), identifyTimeout)
	start := time.Now()
	src, err := l.identify(ctx, remote)
	took := time.Since(start)
	cancel()
	if err != nil {
		l.log.Warn("connection denied", "addr", remote.String(), "reason", "identity lookup failed", "err", err)
		l.decided(nil, remote, policy.Decision{Rule: "identity", Err: err}, took)
		l.refuse(c, "tailgate cannot tell who this peer is (identity lookup failed); try again")
		return
	}
	d := l.rules().Evaluate(policy.Input{Source: src})
	l.decided(src, remote, d, took)
	if !d.Allow {
		args := append(sourceAttrs(src), "rule", d.Rule, "reason", d.Reason())
		l.log.Warn("connection denied", args...)
		l.refuse(c, deniedReason(d, src))
		return
	}
	select {
	case l.conns <- &peerConn{Conn: c, src: src}:
	case <-l.done:
		c.Close()
	}
}

// Bounds on answering a denied connection: how long its request's head
// may take to arrive, how big it may be, and how long the rest is drained
// after the answer (so that unread bytes do not reset the connection
// before the client has read the 403).
const (
	deniedHeadTimeout  = 5 * time.Second
	deniedHeadMax      = 16 << 10
	deniedDrainTimeout = time.Second
	deniedDrainMax     = 4 << 20
)

// refuse ends a denied connection. By default it reads the request's head
// and answers 403 with reason, so that the caller can tell "denied" from
// "down"; with denied: close, or when what arrives is not HTTP/1.x, it
// closes the connection without a word.
func (l *authListener) refuse(c net.Conn, reason string) {
	defer c.Close()
	if !l.reply() {
		return
	}
	c.SetDeadline(time.Now().Add(deniedHeadTimeout))
	br := bufio.NewReaderSize(io.LimitReader(c, deniedHeadMax), 4096)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasSuffix(strings.TrimRight(line, "\r\n"), " HTTP/1.1") && !strings.HasSuffix(strings.TrimRight(line, "\r\n"), " HTTP/1.0") {
		return
	}
	for {
		h, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if h == "\r\n" || h == "\n" {
			break
		}
	}
	body := reason + "\n"
	fmt.Fprintf(c, "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.SetDeadline(time.Now().Add(deniedDrainTimeout))
	io.Copy(io.Discard, io.LimitReader(c, deniedDrainMax))
}

// deniedReason is the one line a denied caller reads: who it was taken
// for and which rule said no.
func deniedReason(d policy.Decision, src *policy.Source) string {
	who := src.Address
	if ts := src.Tailscale; ts != nil {
		who = ts.Node.Name
		if ts.User.Login != "" {
			who += " (" + ts.User.Login + ")"
		}
	}
	return fmt.Sprintf("tailgate: connection from %s denied by %s: %s", who, d.Rule, d.Reason())
}

// sourceAttrs are the log attributes that say who a source is.
func sourceAttrs(src *policy.Source) []any {
	attrs := []any{"addr", net.JoinHostPort(src.Address, strconv.Itoa(src.Port))}
	if ts := src.Tailscale; ts != nil {
		attrs = append(attrs, "peer", ts.Node.Name, "user", ts.User.Login)
		if len(ts.Node.Tags) > 0 {
			attrs = append(attrs, "tags", ts.Node.Tags)
		}
	}
	return attrs
}

func (l *authListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errc:
		l.errc <- err // for later Accept calls
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *authListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.Listener.Close()
	})
	return err
}

// peerConn is an admitted connection and the source it was admitted as.
type peerConn struct {
	net.Conn
	src *policy.Source
	// served is set once a request came whole on it (Server.connState).
	served atomic.Bool
}

type sourceKey struct{}

type peerConnKey struct{}

func withPeerConn(ctx context.Context, pc *peerConn) context.Context {
	return context.WithValue(ctx, peerConnKey{}, pc)
}

// reidentify judges each request as who its peer is now, not when its
// connection was admitted: a keep-alive connection (and an MCP client
// keeps one for hours) outlives a netmap change that removed a tag, took
// a grant or removed the node. The tailnet resolver caches per peer and
// forgets on every netmap change, so this is a map lookup unless
// something changed. A peer networkAuthorization now refuses, or that can
// no longer be identified, is answered and its connection closed. It
// returns the request carrying the current source.
func (s *Server) reidentify(st *state, w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	pc, ok := r.Context().Value(peerConnKey{}).(*peerConn)
	if !ok {
		return r, true
	}
	pc.served.Store(true) // a request came whole on it (Server.connState)
	remote, err := netip.ParseAddrPort(pc.RemoteAddr().String())
	if err != nil {
		return r, true // admit refused such a connection already
	}
	ctx, cancel := context.WithTimeout(r.Context(), identifyTimeout)
	src, err := s.opts.Identify(ctx, remote)
	cancel()
	if err != nil {
		s.log.Warn("request denied", "addr", remote.String(), "reason", "identity lookup failed", "err", err)
		w.Header().Set("Connection", "close")
		http.Error(w, "tailgate cannot tell who this peer is (identity lookup failed); try again", http.StatusServiceUnavailable)
		return r, false
	}
	if d := st.cfg.networkAuthz.Evaluate(policy.Input{Source: src}); !d.Allow {
		s.log.Warn("request denied", append(sourceAttrs(src), "rule", d.Rule, "reason", d.Reason(), "method", r.Method, "path", r.URL.Path)...)
		w.Header().Set("Connection", "close")
		http.Error(w, deniedReason(d, src), http.StatusForbidden)
		return r, false
	}
	return r.WithContext(withSource(r.Context(), src)), true
}

func withSource(ctx context.Context, src *policy.Source) context.Context {
	return context.WithValue(ctx, sourceKey{}, src)
}

// sourceFrom is the source of the connection a request came on.
func sourceFrom(ctx context.Context) *policy.Source {
	if src, ok := ctx.Value(sourceKey{}).(*policy.Source); ok {
		return src
	}
	// Only reachable for handlers served without ConnContext (never in
	// tailgate's servers); an empty source matches no address rule.
	return &policy.Source{}
}
