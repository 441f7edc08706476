// Package devnet is an embedded tailnet on 127.0.0.1 — a control server
// (tailscale.com's testcontrol), a DERP relay and a STUN server — run as a
// normal part of a program: `tailgate dev` uses it so that a laptop needs
// no Tailscale account, and the integration tests use the same one. It
// imports no testing package and nothing it runs leaves 127.0.0.1.
//
// Unlike bare testcontrol, tagged nodes belong to "tagged-devices" as on
// Tailscale and headscale, and a node may be given a login of the caller's
// choosing (Config.Logins), so that identity policies can be tried as
// each person.
package devnet

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"tailscale.com/derp/derpserver"
	"tailscale.com/net/netns"
	"tailscale.com/net/stun"
	"tailscale.com/tailcfg"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/key"
	"tailscale.com/types/logger"
)

// MagicDNSDomain is the tailnet's MagicDNS suffix: nodes are named
// <hostname>.tail-scale.ts.net.
const MagicDNSDomain = "tail-scale.ts.net"

// TaggedDevices is the login of every tagged node, as on Tailscale.
const TaggedDevices = "tagged-devices"

// taggedDevicesID is the user ID Tailscale gives tagged-devices.
const taggedDevicesID tailcfg.UserID = 2147455555

// firstLoginID numbers the logins of Config.Logins, far above
// testcontrol's own users (1, 2, 3, ... one per node).
const firstLoginID tailcfg.UserID = 1 << 40

// Config describes the tailnet.
type Config struct {
	// Logger gets the servers' messages at debug level; nil discards them.
	Logger *slog.Logger
	// Tags may be advertised by nodes and are granted at once (owned by
	// nobody, as in testcontrol).
	Tags []string
	// AuthKey, if set, is the only auth key the control server accepts.
	AuthKey string
	// Logins gives the nodes named by the keys (hostnames) the login names
	// of the values (e.g. "alice@example.com") instead of testcontrol's
	// user-N@fake-control.example.net. A tagged node belongs to
	// tagged-devices whatever its entry says.
	Logins map[string]string
	// Configure, if set, adjusts the control server before it serves
	// (tests: auth, DNS, a DERP forwarder).
	Configure []func(*testcontrol.Server)
}

// Tailnet is a running embedded tailnet.
type Tailnet struct {
	// Control is the control server, for tests that change what it tells
	// nodes (grants, expiry).
	Control *testcontrol.Server
	// ControlURL is the control server's base URL, http://127.0.0.1:port.
	ControlURL string

	log       *slog.Logger
	controlHS *http.Server
	derpHS    *http.Server
	derp      *derpserver.Server
	stun      net.PacketConn
	owners    owners

	closeOnce sync.Once
}

// New starts a control server, DERP and STUN on 127.0.0.1. Close stops
// them.
func New(cfg Config) (_ *Tailnet, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The in-process nodes talk to 127.0.0.1 only and must not mark their
	// sockets for a routing table (SO_MARK needs privileges).
	netns.SetEnabled(false)

	t := &Tailnet{log: log}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	logf := logger.Logf(func(format string, args ...any) {
		log.Debug(strings.TrimSpace(fmt.Sprintf(format, args...)))
	})
	derpMap, err := t.startDERPAndSTUN(logf)
	if err != nil {
		return nil, fmt.Errorf("dev tailnet: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("dev tailnet: control server: %w", err)
	}
	t.ControlURL = "http://" + ln.Addr().String()
	ctl := &testcontrol.Server{
		DERPMap:         derpMap,
		DNSConfig:       &tailcfg.DNSConfig{Proxied: true},
		MagicDNSDomain:  MagicDNSDomain,
		Logf:            logf,
		ExplicitBaseURL: t.ControlURL,
		RequireAuthKey:  cfg.AuthKey,
	}
	if len(cfg.Tags) > 0 {
		ctl.TagOwners = make(map[string][]string)
		for _, tag := range cfg.Tags {
			ctl.TagOwners[tag] = nil
		}
	}
	for _, f := range cfg.Configure {
		f(ctl)
	}
	t.Control = ctl
	t.owners.init(ctl, cfg.Logins)
	t.controlHS = &http.Server{Handler: ctl, ErrorLog: logger.StdLogger(logf)}
	go t.controlHS.Serve(ln)
	log.Debug("dev tailnet up", "control", t.ControlURL)
	return t, nil
}

// startDERPAndSTUN runs a DERP relay (HTTPS with a throwaway certificate,
// which the DERP map tells nodes not to verify) and a STUN server, both on
// 127.0.0.1, and returns the DERP map naming them.
func (t *Tailnet) startDERPAndSTUN(logf logger.Logf) (*tailcfg.DERPMap, error) {
	cert, err := selfSignedCert("127.0.0.1")
	if err != nil {
		return nil, fmt.Errorf("DERP certificate: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("DERP: %w", err)
	}
	t.derp = derpserver.New(key.NewNode(), logf)
	t.derpHS = &http.Server{
		Handler:  derpserver.Handler(t.derp),
		ErrorLog: logger.StdLogger(logf),
		// DERP speaks HTTP/1.1 and upgrades; no HTTP/2.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		TLSConfig:    &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	go t.derpHS.ServeTLS(ln, "", "")

	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("STUN: %w", err)
	}
	t.stun = pc
	go serveSTUN(pc)

	return &tailcfg.DERPMap{
		Regions: map[int]*tailcfg.DERPRegion{
			1: {
				RegionID:   1,
				RegionCode: "dev",
				RegionName: "tailgate dev",
				Nodes: []*tailcfg.DERPNode{{
					Name:             "dev1",
					RegionID:         1,
					HostName:         "127.0.0.1",
					IPv4:             "127.0.0.1",
					IPv6:             "none",
					STUNPort:         pc.LocalAddr().(*net.UDPAddr).Port,
					DERPPort:         ln.Addr().(*net.TCPAddr).Port,
					InsecureForTests: true,
					STUNTestIP:       "127.0.0.1",
				}},
			},
		},
	}, nil
}

// serveSTUN answers STUN binding requests on pc until it is closed.
func serveSTUN(pc net.PacketConn) {
	buf := make([]byte, 64<<10)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		pkt := buf[:n]
		if !stun.Is(pkt) {
			continue
		}
		txid, err := stun.ParseBindingRequest(pkt)
		if err != nil {
			continue
		}
		ua, ok := addr.(*net.UDPAddr)
		if !ok {
			continue
		}
		ip, _ := netip.AddrFromSlice(ua.IP)
		pc.WriteTo(stun.Response(txid, netip.AddrPortFrom(ip.Unmap(), uint16(ua.Port))), addr)
	}
}

// selfSignedCert is a certificate for host, valid for a day.
func selfSignedCert(host string) (tls.Certificate, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "tailgate dev DERP"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		tmpl.IPAddresses = []net.IP{ip.AsSlice()}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}, nil
}

// StopControl stops the control server alone, with its connections, as a
// control plane that goes away while the tailnet runs on.
func (t *Tailnet) StopControl() error {
	if t.controlHS == nil {
		return nil
	}
	return t.controlHS.Close()
}

// Close stops the control server, DERP and STUN at once; it does not wait
// for nodes, which should be closed first.
func (t *Tailnet) Close() error {
	t.closeOnce.Do(func() {
		// http.Server.Close, not Shutdown: the control server's Noise
		// connections and DERP's are hijacked and long-lived, and an exit
		// must not wait for them (httptest.Server.Close would, for as long
		// as a node keeps its Noise connection).
		if t.controlHS != nil {
			t.controlHS.Close()
		}
		if t.derpHS != nil {
			t.derpHS.Close()
		}
		if t.derp != nil {
			t.derp.Close()
		}
		if t.stun != nil {
			t.stun.Close()
		}
	})
	return nil
}

// NodeName is the MagicDNS name of the node with hostname on this tailnet.
func NodeName(hostname string) string { return hostname + "." + MagicDNSDomain }
