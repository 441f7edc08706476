package integration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"tailscale.com/ipn/store/mem"
	"tailscale.com/tsnet"
	"tailscale.com/types/logger"
)

// DevTailnet is the embedded tailnet of `tailgate dev`: the same control
// server and DERP/STUN as the tests, on 127.0.0.1, in a normal program.
// Nothing it runs leaves 127.0.0.1.
type DevTailnet struct {
	*Tailnet
	tb *devTB
}

// NewDevTailnet starts a control server and DERP/STUN on 127.0.0.1.
// tags may be advertised by nodes (they are owned by nobody, as in
// tests). Close stops it.
func NewDevTailnet(log *slog.Logger, tags []string) (dtn *DevTailnet, err error) {
	tb := &devTB{log: log}
	defer func() {
		// RunDERPAndSTUN reports failure through Fatal; here that is an
		// error, not an exit.
		if r := recover(); r != nil {
			if f, ok := r.(devFatal); ok {
				tb.cleanup()
				dtn, err = nil, fmt.Errorf("dev tailnet: %s", string(f))
				return
			}
			panic(r)
		}
	}()
	tn := NewTailnet(tb, AllowTags(tags...))
	return &DevTailnet{Tailnet: tn, tb: tb}, nil
}

// Close stops the control server and DERP/STUN.
func (d *DevTailnet) Close() { d.tb.cleanup() }

// Bridge is a tailnet node that listens on a local address and forwards
// every connection through WireGuard to a tailnet address, so that any
// local program reaches it as that node, with a real WhoIs identity. It
// forwards bytes, not HTTP: the gateway sees the Host header the local
// client sent (127.0.0.1:3001) and judges it itself.
type Bridge struct {
	srv  *tsnet.Server
	ln   net.Listener
	Addr string // the local address, host:port
	dir  string
}

// NewBridge starts a node named name (advertising tags) on d and forwards
// connections to listen to target.
func (d *DevTailnet) NewBridge(ctx context.Context, name string, tags []string, listen string, target netip.AddrPort) (*Bridge, error) {
	dir, err := os.MkdirTemp("", "tailgate-dev-bridge-")
	if err != nil {
		return nil, err
	}
	srv := &tsnet.Server{
		Dir: dir, Hostname: name, ControlURL: d.ControlURL, Store: new(mem.Store), Ephemeral: true,
		AdvertiseTags: tags, Logf: logger.Discard, UserLogf: logger.Discard,
	}
	b := &Bridge{srv: srv, dir: dir}
	if _, err := srv.Up(ctx); err != nil {
		b.Close()
		return nil, fmt.Errorf("bridge node: %w", err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("bridge: listen %s: %w", listen, err)
	}
	b.ln, b.Addr = ln, ln.Addr().String()
	go forward(ln, srv.Dial, target.String())
	return b, nil
}

// IPs are the bridge node's tailnet addresses: the gateway lets requests
// from them name it localhost (gateway.Server.AllowLocalhostFrom), since
// the bridge forwards its local clients' Host as they sent it.
func (b *Bridge) IPs() []netip.Addr {
	ip4, ip6 := b.srv.TailscaleIPs()
	return []netip.Addr{ip4, ip6}
}

// Close stops the bridge.
func (b *Bridge) Close() {
	if b.ln != nil {
		b.ln.Close()
	}
	b.srv.Close()
	os.RemoveAll(b.dir)
}

// forward accepts on ln until it is closed, and copies each connection to
// and from a connection dial makes to addr.
func forward(ln net.Listener, dial func(ctx context.Context, network, addr string) (net.Conn, error), addr string) {
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

// devTB is the testing.TB that tailscale's test servers need, in a
// program that is not a test: logs go to slog, cleanups run on Close and a
// fatal error becomes a panic that NewDevTailnet recovers. Methods the
// servers do not call are left to the embedded nil *testing.T and would
// panic.
type devTB struct {
	*testing.T
	log *slog.Logger

	mu       sync.Mutex
	cleanups []func()
}

type devFatal string

func (t *devTB) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

func (t *devTB) cleanup() {
	t.mu.Lock()
	fs := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

func (t *devTB) Helper()         {}
func (t *devTB) Name() string    { return "tailgate-dev" }
func (t *devTB) Failed() bool    { return false }
func (t *devTB) Log(args ...any) { t.log.Debug(strings.TrimSpace(fmt.Sprint(args...))) }
func (t *devTB) Logf(format string, args ...any) {
	t.log.Debug(strings.TrimSpace(fmt.Sprintf(format, args...)))
}
func (t *devTB) Error(args ...any) { panic(devFatal(fmt.Sprint(args...))) }
func (t *devTB) Errorf(format string, args ...any) {
	panic(devFatal(fmt.Sprintf(format, args...)))
}
func (t *devTB) Fatal(args ...any) { panic(devFatal(fmt.Sprint(args...))) }
func (t *devTB) Fatalf(format string, args ...any) {
	panic(devFatal(fmt.Sprintf(format, args...)))
}
func (t *devTB) Fail()    { panic(devFatal("failed")) }
func (t *devTB) FailNow() { panic(devFatal("failed")) }
