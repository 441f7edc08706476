package tsnode

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// proxyListener accepts the connections that tsnet (Tailscale Services)
// or the host's tailscaled (host mode under userspace networking) forwards
// to a loopback socket, each preceded by a PROXY protocol v1 header naming
// the tailnet peer, so that the connection's RemoteAddr is that peer.
//
// The socket is on the host's loopback, where any local process can
// connect and claim any tailnet address in its own header. So a connection
// is taken only from the process that should forward it (owner: tsnet runs
// in tailgate's own process; tailscaled is known by its uid), and the
// header is read on a goroutine of its own with a short deadline, so that
// silent connections cannot hold up the peers behind them.
type proxyListener struct {
	net.Listener
	owner func(net.Conn) error
	log   *slog.Logger

	conns     chan net.Conn
	errc      chan error
	done      chan struct{}
	closeOnce sync.Once
	refused   atomic.Uint64
}

// maxProxyHeader is the longest v1 header ("PROXY TCP6 <ip> <ip> <p> <p>\r\n").
const maxProxyHeader = 107

// proxyHeaderTimeout bounds reading the header: the forwarder writes it as
// soon as it connects.
const proxyHeaderTimeout = 2 * time.Second

// newProxyListener serves the PROXY socket ln, taking connections whose
// owner check passes.
func newProxyListener(ln net.Listener, owner func(net.Conn) error, log *slog.Logger) *proxyListener {
	l := &proxyListener{
		Listener: ln,
		owner:    owner,
		log:      log,
		conns:    make(chan net.Conn),
		errc:     make(chan error, 1),
		done:     make(chan struct{}),
	}
	go l.acceptLoop()
	return l
}

func (l *proxyListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			l.errc <- err
			return
		}
		go l.handshake(c)
	}
}

// handshake checks who connected and reads the header, then hands the
// connection to Accept.
func (l *proxyListener) handshake(c net.Conn) {
	if err := l.owner(c); err != nil {
		// Logged once per 100, so that a local process cannot flood the log.
		if l.refused.Add(1)%100 == 1 {
			l.log.Warn("PROXY socket: connection refused", "from", c.RemoteAddr().String(), "reason", err.Error(), "refused_so_far", l.refused.Load())
		}
		c.Close()
		return
	}
	pc, err := readProxyHeader(c, proxyHeaderTimeout)
	if err != nil {
		l.log.Warn("PROXY socket: connection without a valid header", "from", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	select {
	case l.conns <- pc:
	case <-l.done:
		c.Close()
	}
}

func (l *proxyListener) Accept() (net.Conn, error) {
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

func (l *proxyListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.Listener.Close()
	})
	return err
}

func readProxyHeader(c net.Conn, timeout time.Duration) (net.Conn, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	br := bufio.NewReaderSize(c, maxProxyHeader)
	line, err := br.ReadSlice('\n')
	c.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, err
	}
	src, dst, err := parseProxyV1(string(line))
	if err != nil {
		return nil, err
	}
	if dst.Addr().IsLoopback() {
		// tailscaled names loopback when it does not know its own
		// address; the connection did not come to a loopback address.
		dst = netip.AddrPortFrom(netip.IPv4Unspecified(), dst.Port())
	}
	return &proxiedConn{Conn: c, r: br, remote: net.TCPAddrFromAddrPort(src), local: net.TCPAddrFromAddrPort(dst)}, nil
}

// parseProxyV1 returns the source and destination of a PROXY protocol v1
// header line.
func parseProxyV1(line string) (src, dst netip.AddrPort, err error) {
	f := strings.Fields(strings.TrimSuffix(line, "\r\n"))
	if len(f) != 6 || f[0] != "PROXY" || (f[1] != "TCP4" && f[1] != "TCP6") {
		return src, dst, errors.New("not a PROXY v1 TCP header")
	}
	src, err = netip.ParseAddrPort(net.JoinHostPort(f[2], f[4]))
	if err != nil {
		return src, dst, fmt.Errorf("PROXY header source: %w", err)
	}
	dst, err = netip.ParseAddrPort(net.JoinHostPort(f[3], f[5]))
	if err != nil {
		return src, dst, fmt.Errorf("PROXY header destination: %w", err)
	}
	return src, dst, nil
}

// proxiedConn is a forwarded connection as its peer made it: RemoteAddr
// is the tailnet peer, LocalAddr the tailnet address it dialed (a
// Service's virtual IP, or the host's address), not the loopback socket.
type proxiedConn struct {
	net.Conn
	r             *bufio.Reader
	remote, local net.Addr
}

func (c *proxiedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *proxiedConn) RemoteAddr() net.Addr       { return c.remote }
func (c *proxiedConn) LocalAddr() net.Addr        { return c.local }
