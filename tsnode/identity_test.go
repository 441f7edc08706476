package tsnode

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"

	"tailscale.com/client/local"
	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/tailcfg"
)

func fakeWhoIs(calls *atomic.Int32, login string) WhoIsFunc {
	return func(ctx context.Context, addr string) (*apitype.WhoIsResponse, error) {
		calls.Add(1)
		if addr == "100.64.0.99:1" {
			return nil, local.ErrPeerNotFound
		}
		hi := (&tailcfg.Hostinfo{Hostname: "laptop", OS: "linux"}).View()
		return &apitype.WhoIsResponse{
			Node:        &tailcfg.Node{Name: "laptop.tail1234.ts.net.", StableID: "nStable1", Tags: []string{"tag:ci"}, Hostinfo: hi},
			UserProfile: &tailcfg.UserProfile{LoginName: login, DisplayName: "Alice"},
			CapMap:      tailcfg.PeerCapMap{"example.com/cap/tailgate": {`{"tools":["echo"]}`}},
		}, nil
	}
}

func TestResolverCachesUntilForget(t *testing.T) {
	var calls atomic.Int32
	r := NewResolver(fakeWhoIs(&calls, "alice@example.com"))
	ctx := context.Background()
	a := netip.MustParseAddrPort("100.64.0.7:4000")
	id, err := r.Identify(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	want := Identity{NodeName: "laptop.tail1234.ts.net", NodeHostname: "laptop", NodeID: "nStable1", NodeOS: "linux", Tags: []string{"tag:ci"}, UserLogin: "alice@example.com", UserDisplayName: "Alice"}
	if id.NodeName != want.NodeName || id.NodeHostname != want.NodeHostname || id.NodeID != want.NodeID || id.NodeOS != want.NodeOS ||
		id.UserLogin != want.UserLogin || id.UserDisplayName != want.UserDisplayName || len(id.Tags) != 1 ||
		string(id.Caps["example.com/cap/tailgate"][0]) != `{"tools":["echo"]}` {
		t.Errorf("identity %+v", id)
	}
	// Another connection from the same peer (other port) uses the cache.
	r.Identify(ctx, netip.MustParseAddrPort("100.64.0.7:4001"))
	if calls.Load() != 1 {
		t.Errorf("whois calls %d, want 1", calls.Load())
	}
	r.Forget()
	r.Identify(ctx, a)
	if calls.Load() != 2 {
		t.Errorf("after Forget: whois calls %d, want 2", calls.Load())
	}
	if _, err := r.Identify(ctx, netip.MustParseAddrPort("100.64.0.99:1")); !errors.Is(err, ErrUnknownPeer) {
		t.Errorf("unknown peer: %v", err)
	}
}

func TestParseProxyV1(t *testing.T) {
	tests := []struct {
		line     string
		src, dst string
		ok       bool
	}{
		{"PROXY TCP4 100.64.0.2 100.11.22.33 51234 3000\r\n", "100.64.0.2:51234", "100.11.22.33:3000", true},
		{"PROXY TCP6 fd7a::2 fd7a::3 51234 3000\r\n", "[fd7a::2]:51234", "[fd7a::3]:3000", true},
		{"PROXY UNKNOWN\r\n", "", "", false},
		{"GET / HTTP/1.1\r\n", "", "", false},
		{"PROXY TCP4 not-an-ip 100.11.22.33 1 2\r\n", "", "", false},
		{"PROXY TCP4 100.64.0.2 not-an-ip 1 2\r\n", "", "", false},
	}
	for _, tt := range tests {
		src, dst, err := parseProxyV1(tt.line)
		if (err == nil) != tt.ok || (tt.ok && (src.String() != tt.src || dst.String() != tt.dst)) {
			t.Errorf("%q: got %v %v, %v", tt.line, src, dst, err)
		}
	}
}
