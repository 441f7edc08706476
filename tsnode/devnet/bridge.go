package devnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

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
	go Forward(b.ln, b.srv.Dial, cfg.Target.String())
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

// Close stops the bridge and its node.
func (b *Bridge) Close() {
	b.ln.Close()
	b.srv.Close()
	os.RemoveAll(b.dir)
}

// Forward accepts on ln until it is closed, and copies each connection to
// and from a connection that dial makes to addr.
func Forward(ln net.Listener, dial func(ctx context.Context, network, addr string) (net.Conn, error), addr string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			up, err := dial(ctx, "tcp", addr)
			cancel()
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			go func() { io.Copy(up, c); done <- struct{}{} }()
			go func() { io.Copy(c, up); done <- struct{}{} }()
			<-done
		}()
	}
}
