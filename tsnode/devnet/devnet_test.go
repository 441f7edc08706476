package devnet

import (
	"context"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tailscale.com/ipn/store/mem"
	"tailscale.com/tsnet"
	"tailscale.com/types/logger"
)

func node(t *testing.T, tn *Tailnet, name string, tags ...string) *tsnet.Server {
	t.Helper()
	s := &tsnet.Server{
		Dir: filepath.Join(t.TempDir(), name), Hostname: name, ControlURL: tn.ControlURL,
		Store: new(mem.Store), Ephemeral: true, AdvertiseTags: tags, Logf: logger.Discard, UserLogf: logger.Discard,
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := s.Up(ctx); err != nil {
		t.Fatalf("node %s: %v", name, err)
	}
	return s
}

// loginOf is the login that server's WhoIs gives the peer at ip, once the
// netmap has settled on want (or the last one seen after 20s); want ""
// takes the first answer.
func loginOf(t *testing.T, server *tsnet.Server, ip netip.Addr, want string) string {
	t.Helper()
	lc, err := server.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := ""
	waitUntil(ctx, func() bool {
		w, err := lc.WhoIs(ctx, ip.String())
		if err == nil && w.UserProfile != nil {
			got = w.UserProfile.LoginName
		}
		return got != "" && (want == "" || got == want)
	})
	return got
}

// Tagged nodes belong to tagged-devices, a node given a login has it, and
// others keep testcontrol's own users; a bridge forwards local connections
// as its node.
func TestOwnersAndBridge(t *testing.T) {
	tn, err := New(Config{Tags: []string{"tag:ci"}, Logins: map[string]string{"alice-laptop": "alice@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })

	server := node(t, tn, "server")
	alice := node(t, tn, "alice-laptop")
	ci := node(t, tn, "ci-runner", "tag:ci")
	bob := node(t, tn, "bob-laptop")
	for _, tt := range []struct {
		n    *tsnet.Server
		want string
	}{
		{alice, "alice@example.com"},
		{ci, TaggedDevices},
	} {
		ip, _ := tt.n.TailscaleIPs()
		if got := loginOf(t, server, ip, tt.want); got != tt.want {
			t.Errorf("%s: login %q, want %q", tt.n.Hostname, got, tt.want)
		}
	}
	bobIP, _ := bob.TailscaleIPs()
	if got := loginOf(t, server, bobIP, ""); !strings.HasSuffix(got, "@fake-control.example.net") {
		t.Errorf("bob-laptop: login %q", got)
	}

	// The server echoes the caller's login over the tailnet.
	sln, err := server.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer sln.Close()
	lc, _ := server.LocalClient()
	go func() {
		for {
			c, err := sln.Accept()
			if err != nil {
				return
			}
			w, err := lc.WhoIs(context.Background(), c.RemoteAddr().String())
			if err == nil {
				io.WriteString(c, w.UserProfile.LoginName+" "+strings.Join(w.Node.Tags, ","))
			}
			c.Close()
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sip, _ := server.TailscaleIPs()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := tn.Bridge(ctx, BridgeConfig{Hostname: "dev-client", Tags: []string{"tag:ci"}, Listener: ln, Target: netip.AddrPortFrom(sip, 80)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got := loginOf(t, server, b.IPs()[0], TaggedDevices); got != TaggedDevices {
		t.Fatalf("bridge login %q", got)
	}
	c, err := net.Dial("tcp", b.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != TaggedDevices+" tag:ci" {
		t.Errorf("through the bridge the server saw %q", got)
	}
}

// Close returns at once even while nodes still hold connections to the
// control server and DERP.
func TestCloseIsQuick(t *testing.T) {
	tn, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	node(t, tn, "laptop")
	begin := time.Now()
	tn.Close()
	if d := time.Since(begin); d > time.Second {
		t.Errorf("Close took %v", d)
	}
}

// waitUntil polls cond every 20ms until it holds or ctx ends.
func waitUntil(ctx context.Context, cond func() bool) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}
