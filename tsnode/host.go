package tsnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"tailscale.com/client/local"
	"tailscale.com/ipn"
	"tailscale.com/paths"
)

// Host is tailscale.mode: host: the host's tailscaled is the node, reached
// through its LocalAPI socket. tailgate then listens on the host's tailnet
// addresses only; when tailscaled uses userspace networking (no tailnet
// address on any host interface) it asks tailscaled to forward the port to
// a loopback socket with a PROXY header that says who the peer is.
type Host struct {
	lc  *local.Client
	log *slog.Logger

	self
	mu       sync.Mutex
	resolver *Resolver
	served   []uint16 // ports forwarded through tailscaled's serve config
	cancel   context.CancelFunc
}

// HostConfig describes the host's tailscaled.
type HostConfig struct {
	// Socket is tailscaled's LocalAPI socket; empty is the platform default
	// (/run/tailscale/tailscaled.sock on Linux).
	Socket string
	Logger *slog.Logger
}

// NewHost prepares the use of the host's tailscaled.
func NewHost(cfg HostConfig) *Host {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	lc := &local.Client{}
	if cfg.Socket != "" {
		lc.Socket, lc.UseSocketOnly = cfg.Socket, true
	}
	return &Host{lc: lc, log: cfg.Logger.With("mode", "host")}
}

// Start checks that tailscaled is Running and learns the node's addresses.
func (h *Host) Start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := h.lc.Status(ctx)
	if err != nil {
		return fmt.Errorf("tailnet: host tailscaled: %w", err)
	}
	if st.BackendState != ipn.Running.String() {
		return fmt.Errorf("tailnet: host tailscaled is %s, not Running: run `tailscale up`", st.BackendState)
	}
	var dnsName string
	if st.Self != nil {
		dnsName = st.Self.DNSName
	}
	h.set(st.TailscaleIPs, dnsName)
	h.mu.Lock()
	h.resolver = NewResolver(h.lc.WhoIs)
	wctx, wcancel := context.WithCancel(context.Background())
	h.cancel = wcancel
	h.mu.Unlock()
	go watchNetmap(wctx, h.lc, h.resolver)
	h.log.Info("using the host's tailscaled", "ips", st.TailscaleIPs, "name", h.DNSName())
	return nil
}

// watchNetmap clears r whenever the netmap changes, until ctx ends.
func watchNetmap(ctx context.Context, lc *local.Client, r *Resolver) {
	for ctx.Err() == nil {
		w, err := lc.WatchIPNBus(ctx, ipn.NotifyPeerChanges)
		if err != nil {
			r.Forget()
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		for {
			note, err := w.Next()
			if err != nil {
				break
			}
			if netmapChanged(&note) {
				r.Forget()
			}
		}
		w.Close()
		r.Forget()
	}
}

// Listen listens on port (addr is ":port") on each of the host's tailnet
// addresses; with userspace networking, behind tailscaled's forwarding.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, err
	}
	ips := h.IPs()
	var lns []net.Listener
	for _, ip := range ips {
		ln, err := net.Listen(network, netip.AddrPortFrom(ip, uint16(port)).String())
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			for _, l := range lns {
				l.Close()
			}
			return h.listenForwarded(port)
		}
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("tailnet: listen on %s port %d: %w", ip, port, err)
		}
		lns = append(lns, ln)
	}
	if len(lns) == 0 {
		return nil, errors.New("tailnet: the host node has no tailnet address")
	}
	return newMultiListener(lns), nil
}

// listenForwarded listens on loopback and has tailscaled forward the
// tailnet port there, with a PROXY header naming the peer.
func (h *Host) listenForwarded(port int) (net.Listener, error) {
	// Only tailscaled may connect: its uid, from its LocalAPI socket.
	socket := h.lc.Socket
	if socket == "" {
		socket = paths.DefaultTailscaledSocket()
	}
	uid, err := socketPeerUID(socket)
	if err != nil {
		return nil, fmt.Errorf("tailnet: forward port %d: cannot tell tailscaled's uid from %s: %w", port, socket, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sc, err := h.lc.GetServeConfig(ctx)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("tailnet: read the host's serve config: %w", err)
	}
	if sc == nil {
		sc = new(ipn.ServeConfig)
	}
	if _, taken := sc.TCP[uint16(port)]; taken {
		ln.Close()
		return nil, fmt.Errorf("tailnet: port %d is already served by the host's `tailscale serve` config", port)
	}
	sc.SetTCPForwarding(uint16(port), ln.Addr().String(), false, 1, "")
	if err := h.lc.SetServeConfig(ctx, sc); err != nil {
		ln.Close()
		return nil, fmt.Errorf("tailnet: forward port %d through the host's tailscaled: %w", port, err)
	}
	h.mu.Lock()
	h.served = append(h.served, uint16(port))
	h.mu.Unlock()
	h.log.Info("host tailscaled uses userspace networking: it forwards the tailnet port to a loopback socket", "port", port, "loopback", ln.Addr().String())
	return newProxyListener(ln, ownedByUID(uid), h.log.With("port", port)), nil
}

// Identify returns the identity of the tailnet peer at addr, from the
// host's WhoIs, cached until the netmap changes.
func (h *Host) Identify(ctx context.Context, addr netip.AddrPort) (*Identity, error) {
	h.mu.Lock()
	r := h.resolver
	h.mu.Unlock()
	if r == nil {
		return nil, errors.New("tailnet: host mode not started")
	}
	return r.Identify(ctx, addr)
}

// Close removes the forwarding tailgate added to the host's serve config.
// The host's node stays up: it is not tailgate's.
func (h *Host) Close() error {
	h.mu.Lock()
	served := h.served
	h.served = nil
	if h.cancel != nil {
		h.cancel()
	}
	h.mu.Unlock()
	if len(served) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sc, err := h.lc.GetServeConfig(ctx)
	if err != nil || sc == nil {
		return err
	}
	for _, p := range served {
		delete(sc.TCP, p)
	}
	return h.lc.SetServeConfig(ctx, sc)
}

// multiListener accepts on several listeners (the IPv4 and IPv6 tailnet
// addresses) as one.
type multiListener struct {
	lns   []net.Listener
	conns chan net.Conn
	errc  chan error
	once  sync.Once
	done  chan struct{}
}

func newMultiListener(lns []net.Listener) *multiListener {
	m := &multiListener{lns: lns, conns: make(chan net.Conn), errc: make(chan error, len(lns)), done: make(chan struct{})}
	for _, ln := range lns {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					m.errc <- err
					return
				}
				select {
				case m.conns <- c:
				case <-m.done:
					c.Close()
					return
				}
			}
		}()
	}
	return m
}

func (m *multiListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case err := <-m.errc:
		return nil, err
	case <-m.done:
		return nil, net.ErrClosed
	}
}

func (m *multiListener) Close() error {
	m.once.Do(func() {
		close(m.done)
		for _, ln := range m.lns {
			ln.Close()
		}
	})
	return nil
}

func (m *multiListener) Addr() net.Addr { return m.lns[0].Addr() }
