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
	src, err := parseProxyV1(string(line))
	if err != nil {
		return nil, err
	}
	return &proxiedConn{Conn: c, r: br, remote: net.TCPAddrFromAddrPort(src)}, nil
}

// parseProxyV1 returns the source of a PROXY protocol v1 header line.
func parseProxyV1(line string) (netip.AddrPort, error) {
	f := strings.Fields(strings.TrimSuffix(line, "\r\n"))
	if len(f) != 6 || f[0] != "PROXY" || (f[1] != "TCP4" && f[1] != "TCP6") {
		return netip.AddrPort{}, errors.New("not a PROXY v1 TCP header")
	}
	src, err := netip.ParseAddrPort(net.JoinHostPort(f[2], f[4]))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("PROXY header source: %w", err)
	}
	return src, nil
}

type proxiedConn struct {
	net.Conn
	r      *bufio.Reader
	remote net.Addr
}

func (c *proxiedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *proxiedConn) RemoteAddr() net.Addr       { return c.remote }
