package tsnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"tailscale.com/client/local"
	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/ipn"
)

// Identity is who a tailnet peer is, as the control server says: its node
// and the user that owns it, and the app capabilities that grants give it
// towards this node. It is plain data; the gateway turns it into CEL
// values.
type Identity struct {
	// NodeName is the peer's MagicDNS name without the trailing dot.
	NodeName     string
	NodeHostname string
	// NodeID is the stable node ID.
	NodeID string
	NodeOS string
	Tags   []string
	// UserLogin is the owner's login name; "tagged-devices" for tagged
	// nodes on Tailscale and headscale.
	UserLogin       string
	UserDisplayName string
	// Caps maps each app capability to the raw JSON values of the grants
	// that give it.
	Caps map[string][]json.RawMessage
}

// WhoIsFunc asks who owns a tailnet address ("ip" or "ip:port"). It is
// local.Client.WhoIs on a node; tests inject their own, as setec does.
type WhoIsFunc func(ctx context.Context, remoteAddr string) (*apitype.WhoIsResponse, error)

// IdentityFromWhoIs converts a WhoIs answer.
func IdentityFromWhoIs(w *apitype.WhoIsResponse) *Identity {
	id := &Identity{}
	if n := w.Node; n != nil {
		id.NodeName = strings.TrimSuffix(n.Name, ".")
		id.NodeID = string(n.StableID)
		id.Tags = append([]string(nil), n.Tags...)
		if n.Hostinfo.Valid() {
			id.NodeHostname = n.Hostinfo.Hostname()
			id.NodeOS = n.Hostinfo.OS()
		}
		if id.NodeHostname == "" {
			id.NodeHostname = n.ComputedName
		}
	}
	if u := w.UserProfile; u != nil {
		id.UserLogin = u.LoginName
		id.UserDisplayName = u.DisplayName
	}
	if len(w.CapMap) > 0 {
		id.Caps = make(map[string][]json.RawMessage, len(w.CapMap))
		for name, vals := range w.CapMap {
			raw := make([]json.RawMessage, len(vals))
			for i, v := range vals {
				raw[i] = json.RawMessage(v)
			}
			id.Caps[string(name)] = raw
		}
	}
	return id
}

// Resolver turns peer addresses into Identities. Answers are cached per
// peer address until Forget, which the node calls whenever its netmap
// changes, so that a retagged, re-granted or removed peer is judged afresh
// on its next connection.
type Resolver struct {
	whois WhoIsFunc

	mu    sync.Mutex
	gen   uint64
	cache map[netip.Addr]*Identity
}

// NewResolver returns a resolver asking whois.
func NewResolver(whois WhoIsFunc) *Resolver {
	return &Resolver{whois: whois, cache: make(map[netip.Addr]*Identity)}
}

// ErrUnknownPeer is returned for an address that is no tailnet peer.
var ErrUnknownPeer = errors.New("not a known tailnet peer")

// Identify returns the identity of the peer at addr. An error means the
// peer must be refused.
func (r *Resolver) Identify(ctx context.Context, addr netip.AddrPort) (*Identity, error) {
	ip := addr.Addr().Unmap()
	r.mu.Lock()
	id, ok := r.cache[ip]
	gen := r.gen
	r.mu.Unlock()
	if ok {
		return id, nil
	}
	w, err := r.whois(ctx, addr.String())
	if err != nil {
		if errors.Is(err, local.ErrPeerNotFound) {
			return nil, fmt.Errorf("whois %s: %w", ip, ErrUnknownPeer)
		}
		return nil, fmt.Errorf("whois %s: %w", ip, err)
	}
	if w == nil || w.Node == nil {
		return nil, fmt.Errorf("whois %s: %w", ip, ErrUnknownPeer)
	}
	id = IdentityFromWhoIs(w)
	r.mu.Lock()
	// An answer that raced with a netmap change may be stale: use it for
	// this connection, but do not keep it.
	if r.gen == gen {
		r.cache[ip] = id
	}
	r.mu.Unlock()
	return id, nil
}

// Forget drops every cached identity.
func (r *Resolver) Forget() {
	r.mu.Lock()
	r.gen++
	clear(r.cache)
	r.mu.Unlock()
}

// netmapChanged reports whether a bus notification means the peers or
// the grants toward this node may have changed. The client sends a
// SelfChange on every netmap it builds, including packet filter (grant)
// changes, and peer deltas to watchers that ask for them.
func netmapChanged(n *ipn.Notify) bool {
	return n.SelfChange != nil || len(n.PeersChanged) > 0 || len(n.PeersRemoved) > 0
}

// self is what a node knows of itself once running: its tailnet addresses
// and MagicDNS name.
type self struct {
	mu      sync.Mutex
	ips     []netip.Addr
	dnsName string
}

func (s *self) set(ips []netip.Addr, dnsName string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ips = append([]netip.Addr(nil), ips...)
	s.dnsName = strings.TrimSuffix(dnsName, ".")
}

// IPs are the node's tailnet addresses, known once Start returns.
func (s *self) IPs() []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]netip.Addr(nil), s.ips...)
}

// DNSName is the node's MagicDNS name without the trailing dot.
func (s *self) DNSName() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dnsName
}
