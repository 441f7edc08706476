package tsnode

import (
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

const header = "PROXY TCP4 100.64.0.2 100.64.0.1 51234 3000\r\n"

// testSocket is a PROXY socket whose accepted connections arrive on conns.
type testSocket struct {
	*proxyListener
	conns chan net.Conn
}

func proxySocket(t *testing.T, owner func(net.Conn) error) *testSocket {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testSocket{newProxyListener(ln, owner, slog.New(slog.DiscardHandler)), make(chan net.Conn, 10)}
	t.Cleanup(func() { s.Close() })
	go func() {
		for {
			c, err := s.Accept()
			if err != nil {
				return
			}
			s.conns <- c
		}
	}()
	return s
}

// dialWithHeader connects to the socket and sends a PROXY header, as tsnet
// does. The connection is closed when the test ends.
func dialWithHeader(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, header); err != nil {
		t.Fatal(err)
	}
	return c
}

// accept waits up to d for a connection from the socket.
func accept(s *testSocket, d time.Duration) (net.Conn, bool) {
	select {
	case c := <-s.conns:
		return c, true
	case <-time.After(d):
		return nil, false
	}
}

// TestMain lets the test binary stand in for another local process that
// connects to a PROXY socket.
func TestMain(m *testing.M) {
	if addr := os.Getenv("TAILGATE_TEST_PROXY_DIAL"); addr != "" {
		os.Exit(dialFromOtherProcess(addr))
	}
	os.Exit(m.Run())
}

// dialFromOtherProcess sends a forged header to addr and waits for the
// socket to close the connection: exit 0 if it did, 1 if it kept it.
func dialFromOtherProcess(addr string) int {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 2
	}
	defer c.Close()
	io.WriteString(c, header)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	// Closed unread, the socket may answer with a reset rather than EOF.
	_, err = c.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); err == nil || ok && ne.Timeout() {
		return 1
	}
	return 0
}

// The PROXY socket of a Service takes connections from tailgate's own
// process (where tsnet forwards from) and refuses another local process's,
// which could otherwise claim any tailnet address in its header. Before,
// any local connection with a header was accepted as that peer.
func TestProxySocketRefusesOtherProcesses(t *testing.T) {
	pl := proxySocket(t, ownedBySelf)
	addr := pl.Addr().String()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TAILGATE_TEST_PROXY_DIAL="+addr)
	out := make(chan error, 1)
	go func() { out <- cmd.Run() }()
	if c, ok := accept(pl, 2*time.Second); ok {
		t.Fatalf("a connection from another process was accepted as %v", c.RemoteAddr())
	}
	if err := <-out; err != nil {
		t.Errorf("the other process's connection was not closed: %v", err)
	}

	dialWithHeader(t, addr)
	c, ok := accept(pl, 2*time.Second)
	if !ok {
		t.Fatal("a connection from this process was not accepted")
	}
	if got := c.RemoteAddr().String(); got != "100.64.0.2:51234" {
		t.Errorf("RemoteAddr %s, want the header's source", got)
	}
	if got := c.LocalAddr().String(); got != "100.64.0.1:3000" {
		t.Errorf("LocalAddr %s, want the header's destination", got)
	}
}

// In host mode the forwarder is tailscaled, known by its uid: a connection
// from a socket of another uid is refused.
func TestProxySocketChecksForwarderUID(t *testing.T) {
	others := proxySocket(t, ownedByUID(uint32(os.Getuid())+1))
	dialWithHeader(t, others.Addr().String())
	if c, ok := accept(others, time.Second); ok {
		t.Errorf("a connection of uid %d was accepted for uid %d: %v", os.Getuid(), os.Getuid()+1, c.RemoteAddr())
	}
	ours := proxySocket(t, ownedByUID(uint32(os.Getuid())))
	dialWithHeader(t, ours.Addr().String())
	if _, ok := accept(ours, 2*time.Second); !ok {
		t.Errorf("a connection of the forwarder's uid was refused")
	}
}

// Silent local connections cost their own time only: the header is read
// off the accept path, so a real peer behind four of them is accepted at
// once (before: 5 s each, one after the other, 20 s).
func TestProxySocketSilentConnectionsDoNotDelayOthers(t *testing.T) {
	pl := proxySocket(t, ownedBySelf)
	for range 4 {
		c, err := net.Dial("tcp", pl.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	time.Sleep(50 * time.Millisecond) // they are accepted first
	begin := time.Now()
	dialWithHeader(t, pl.Addr().String())
	if _, ok := accept(pl, time.Second); !ok {
		t.Fatal("a peer behind four silent connections was not accepted within 1s")
	}
	t.Logf("accepted in %v", time.Since(begin).Round(time.Millisecond))

	// The silent ones are dropped after the header deadline.
	if c, ok := accept(pl, proxyHeaderTimeout+time.Second); ok {
		t.Errorf("a silent connection was accepted: %v", c.RemoteAddr())
	}
}
