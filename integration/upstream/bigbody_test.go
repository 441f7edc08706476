// Package upstream holds minimal reproducers, with no tailgate code, of
// problems found in tailscale.com (tsnet, netstack, gVisor) while testing
// tailgate. They are skipped unless TAILGATE_UPSTREAM=1; see NOTES.md.
package upstream

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tailscale.com/client/local"
	"tailscale.com/derp/derpserver"
	_ "tailscale.com/feature/capture" // PCAP=dir
	"tailscale.com/ipn/store/mem"
	"tailscale.com/net/netns"
	"tailscale.com/net/stun"
	"tailscale.com/tailcfg"
	"tailscale.com/tsnet"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/key"
	"tailscale.com/types/logger"
	"tailscale.com/wgengine/netstack"
)

// envInt is the integer in the environment variable name, or def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// TestBigBodies serves N bodies of SIZE MB from a plain net/http server on
// one tsnet node to another, C at a time, and counts the bodies that do not
// arrive whole. Run with:
//
//	TAILGATE_UPSTREAM=1 TS_NO_LOGS_NO_SUPPORT=true go test -v -run TestBigBodies -timeout 900s ./integration/upstream/
//
// N (default 30), SIZE (16), C (4) and LOOPBACK=1 (the same server on
// 127.0.0.1, for comparison) tune it; PCAP=dir captures both nodes'
// traffic.
func TestBigBodies(t *testing.T) {
	if os.Getenv("TAILGATE_UPSTREAM") == "" {
		t.Skip("set TAILGATE_UPSTREAM=1 to run the upstream reproducers")
	}
	n, size, conc := envInt("N", 30), envInt("SIZE", 16)<<20, envInt("C", 4)
	body := make([]byte, size)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		start := time.Now()
		wrote, err := w.Write(body)
		if err != nil || wrote != len(body) {
			t.Logf("server: wrote %d of %d in %v: %v", wrote, len(body), time.Since(start).Round(time.Millisecond), err)
		}
	})

	var url string
	var client *http.Client
	var status func() string
	if os.Getenv("LOOPBACK") != "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: handler}
		go hs.Serve(ln)
		t.Cleanup(func() { hs.Close() })
		url, client, status = "http://"+ln.Addr().String()+"/", &http.Client{}, func() string { return "loopback" }
	} else {
		controlURL := startTailnet(t)
		srv := startNode(t, controlURL, "server")
		cli := startNode(t, controlURL, "client")
		ln, err := srv.Listen("tcp", ":80")
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: handler}
		go hs.Serve(ln)
		t.Cleanup(func() { hs.Close() })
		ip4, _ := srv.TailscaleIPs()
		url, client = "http://"+ip4.String()+"/", cli.HTTPClient()
		lc, err := cli.LocalClient()
		if err != nil {
			t.Fatal(err)
		}
		status = func() string { return peerPath(lc, ip4) }
		if dir := os.Getenv("PCAP"); dir != "" {
			for name, node := range map[string]*tsnet.Server{"server": srv, "client": cli} {
				if err := node.CapturePcap(t.Context(), filepath.Join(dir, name+".pcap")); err != nil {
					t.Fatal(err)
				}
			}
		}
		t.Cleanup(func() {
			t.Logf("server netstack: %s", counters(srv))
			t.Logf("client netstack: %s", counters(cli))
		})
		waitReachable(t, client, url)
	}
	t.Logf("path before: %s", status())

	type result struct {
		got  int64
		took time.Duration
		err  error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, conc)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			start := time.Now()
			r := result{}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := client.Do(req)
			if err == nil {
				r.got, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			r.took, r.err = time.Since(start), err
			results[i] = r
		}()
	}
	wg.Wait()
	t.Logf("path after: %s", status())
	lost := 0
	var worst time.Duration
	for i, r := range results {
		worst = max(worst, r.took)
		if r.err != nil || r.got != int64(size) {
			lost++
			t.Logf("body %d: %d of %d bytes in %v: %v", i, r.got, size, r.took.Round(time.Millisecond), r.err)
		}
	}
	t.Logf("%d of %d bodies of %d MB lost or short (concurrency %d); slowest %v", lost, n, size>>20, conc, worst.Round(time.Millisecond))
	if lost > 0 {
		t.Errorf("%d of %d bodies lost", lost, n)
	}
}

// counters are the non-zero netstack counters of node.
func counters(node *tsnet.Server) string {
	ns, ok := node.Sys().Netstack.Get().(*netstack.Impl)
	if !ok {
		return "no netstack"
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(ns.ExpVar().String()), &m); err != nil {
		return err.Error()
	}
	var out []string
	for k, v := range m {
		if f, ok := v.(float64); ok && f != 0 && !strings.HasPrefix(k, "gauge_tcp_forward") {
			out = append(out, fmt.Sprintf("%s=%v", strings.TrimPrefix(k, "counter_"), v))
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// peerPath says how the client reaches ip: a direct UDP address or DERP.
func peerPath(lc *local.Client, ip netip.Addr) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := lc.Status(ctx)
	if err != nil {
		return err.Error()
	}
	for _, p := range st.Peer {
		for _, a := range p.TailscaleIPs {
			if a == ip {
				if p.CurAddr != "" {
					return "direct " + p.CurAddr
				}
				return "DERP " + p.Relay
			}
		}
	}
	return "peer not found"
}

// waitReachable waits until url answers, for the netmap to reach the
// client.
func waitReachable(t *testing.T, client *http.Client, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
		resp, err := client.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not reachable: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startNode starts a tsnet node on the tailnet at controlURL.
func startNode(t *testing.T, controlURL, name string) *tsnet.Server {
	t.Helper()
	s := &tsnet.Server{
		Dir:        filepath.Join(t.TempDir(), name),
		Hostname:   name,
		ControlURL: controlURL,
		Store:      new(mem.Store),
		Ephemeral:  true,
		Logf:       logger.Discard,
		UserLogf:   logger.Discard,
	}
	if os.Getenv("VERBOSE") != "" {
		s.Logf = t.Logf
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := s.Up(ctx); err != nil {
		t.Fatalf("node %s: %v", name, err)
	}
	return s
}

// startTailnet runs testcontrol, a DERP relay and a STUN server on
// 127.0.0.1 and returns the control URL.
func startTailnet(t *testing.T) string {
	t.Helper()
	netns.SetEnabled(false) // no SO_MARK: 127.0.0.1 only, no privileges
	cert := selfSigned(t)
	dln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ds := derpserver.New(key.NewNode(), logger.Discard)
	dhs := &http.Server{
		Handler:      derpserver.Handler(ds),
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		TLSConfig:    &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	go dhs.ServeTLS(dln, "", "")
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go serveSTUN(pc)
	cln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	controlURL := "http://" + cln.Addr().String()
	ctl := &testcontrol.Server{
		DERPMap: &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{1: {
			RegionID: 1, RegionCode: "test", RegionName: "test",
			Nodes: []*tailcfg.DERPNode{{
				Name: "t1", RegionID: 1, HostName: "127.0.0.1", IPv4: "127.0.0.1", IPv6: "none",
				STUNPort: pc.LocalAddr().(*net.UDPAddr).Port, DERPPort: dln.Addr().(*net.TCPAddr).Port,
				InsecureForTests: true, STUNTestIP: "127.0.0.1",
			}},
		}}},
		DNSConfig:       &tailcfg.DNSConfig{Proxied: true},
		Logf:            logger.Discard,
		ExplicitBaseURL: controlURL,
	}
	chs := &http.Server{Handler: ctl}
	go chs.Serve(cln)
	t.Cleanup(func() {
		chs.Close()
		dhs.Close()
		ds.Close()
		pc.Close()
	})
	return controlURL
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
		txid, err := stun.ParseBindingRequest(buf[:n])
		if err != nil {
			continue
		}
		ua := addr.(*net.UDPAddr)
		ip, _ := netip.AddrFromSlice(ua.IP)
		pc.WriteTo(stun.Response(txid, netip.AddrPortFrom(ip.Unmap(), uint16(ua.Port))), addr)
	}
}

// selfSigned is a certificate for the DERP server on 127.0.0.1.
func selfSigned(t *testing.T) tls.Certificate {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "test DERP"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}
