package tsnode

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// proxyListener reads the PROXY protocol v1 header that tsnet puts before
// each connection of a Tailscale Service, so that the connection's
// RemoteAddr is the tailnet peer and not the loopback socket tsnet
// forwards through.
type proxyListener struct {
	net.Listener
}

// maxProxyHeader is the longest v1 header ("PROXY TCP6 <ip> <ip> <p> <p>\r\n").
const maxProxyHeader = 107

func (l proxyListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		pc, err := readProxyHeader(c)
		if err != nil {
			// Only tsnet connects here; anything else is refused.
			c.Close()
			continue
		}
		return pc, nil
	}
}

func readProxyHeader(c net.Conn) (net.Conn, error) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
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
