package devnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/tailgate-dev/tailgate/tsnode"
	"tailscale.com/ipn/store/mem"
	"tailscale.com/tsnet"
	"tailscale.com/types/logger"
)

// BridgeConfig describes a Bridge.
type BridgeConfig struct {
	// Hostname is the bridge node's name on the tailnet.
	Hostname string
	// Tags are advertised by the bridge node (see Config.Tags); a tagged
	// bridge belongs to tagged-devices.
	Tags []string
	// Listener is where local clients connect; the caller opens it (so
	// that a busy port is reported before anything starts) and the bridge
	// closes it.
	Listener net.Listener
	// Target is the tailnet address every connection is forwarded to.
	Target netip.AddrPort
}

// Bridge is a tailnet node that accepts connections on a local address
// and forwards each through WireGuard to a tailnet address, so that any
// local program reaches that address as the bridge node, with a real WhoIs
// identity. It forwards bytes, not HTTP: the far end sees the Host header
// the local client sent (127.0.0.1:3001) and judges it itself.
type Bridge struct {
	srv *tsnet.Server
	ln  net.Listener
	dir string
	fw  *forwarder
	// Addr is the local address, host:port.
	Addr string
}

// Bridge starts a bridge node on t. It closes cfg.Listener if it fails.
func (t *Tailnet) Bridge(ctx context.Context, cfg BridgeConfig) (*Bridge, error) {
	if cfg.Listener == nil {
		return nil, errors.New("bridge: no listener")
	}
	dir, err := os.MkdirTemp("", "tailgate-dev-bridge-")
	if err != nil {
		cfg.Listener.Close()
		return nil, err
	}
	b := &Bridge{ln: cfg.Listener, dir: dir, Addr: cfg.Listener.Addr().String()}
	b.srv = &tsnet.Server{
		Dir: dir, Hostname: cfg.Hostname, ControlURL: t.ControlURL, Store: new(mem.Store), Ephemeral: true,
		AdvertiseTags: cfg.Tags, Logf: logger.Discard, UserLogf: logger.Discard,
	}
	if _, err := b.srv.Up(ctx); err != nil {
		b.Close()
		return nil, fmt.Errorf("bridge node %s: %w", cfg.Hostname, err)
	}
	b.fw = &forwarder{conns: make(map[net.Conn]struct{})}
	go b.fw.forward(b.ln, b.srv.Dial, cfg.Target.String())
	return b, nil
}

// IPs are the bridge node's tailnet addresses.
func (b *Bridge) IPs() []netip.Addr {
	ip4, ip6 := b.srv.TailscaleIPs()
	return []netip.Addr{ip4, ip6}
}

// Login is the login the bridge node has on the tailnet: what a policy
// sees as the caller's user.login.
func (b *Bridge) Login(ctx context.Context) (string, error) {
	lc, err := b.srv.LocalClient()
	if err != nil {
		return "", err
	}
	st, err := lc.Status(ctx)
	if err != nil {
		return "", err
	}
	if st.Self == nil {
		return "", errors.New("bridge: no status of its own")
	}
	return st.User[st.Self.UserID].LoginName, nil
}

// Close stops the bridge and its node: the local listener and every
// forwarded connection first, then the node, which it waits for at most
// tsnode.CloseTimeout (tsnet's Close can block for good: see
// tsnode.CloseTimeout).
func (b *Bridge) Close() error {
	b.ln.Close()
	if b.fw != nil {
		b.fw.closeAll()
	}
	err := tsnode.CloseWithin(b.srv.Close, tsnode.CloseTimeout)
	os.RemoveAll(b.dir)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Forward accepts on ln until it is closed, and copies each connection to
// and from a connection that dial makes to addr.
func Forward(ln net.Listener, dial func(ctx context.Context, network, addr string) (net.Conn, error), addr string) {
	(&forwarder{conns: make(map[net.Conn]struct{})}).forward(ln, dial, addr)
}

// forwarder is Forward's state: the connections it has open, so that
// closing the bridge closes them.
type forwarder struct {
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

// track adds c to the open connections; false if the forwarder is
// closed.
func (f *forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

func (f *forwarder) closeAll() {
	f.mu.Lock()
	f.closed = true
	conns := f.conns
	f.conns = nil
	f.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

func (f *forwarder) forward(ln net.Listener, dial func(ctx context.Context, network, addr string) (net.Conn, error), addr string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if !f.track(c) {
			c.Close()
			return
		}
		go func() {
			defer f.untrack(c)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			up, err := dial(ctx, "tcp", addr)
			cancel()
			if err != nil {
				return
			}
			if !f.track(up) {
				up.Close()
				return
			}
			defer f.untrack(up)
			done := make(chan struct{}, 2)
			go func() { io.Copy(up, c); done <- struct{}{} }()
			go func() { io.Copy(c, up); done <- struct{}{} }()
			<-done
		}()
	}
}
