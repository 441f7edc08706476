package gateway

import (
	"fmt"
	"sync"
)

// budget bounds what callers may hold of the gateway, per caller and in
// all, across every route and every reload (the Server has one): the MCP
// sessions open, the requests in flight and the bytes of their bodies. A
// request past it is refused before its body is read, a session before it
// is opened, so that no peer (or all of them together) can make the
// gateway hold more than this, and one peer cannot lock out the others.
type budget struct {
	mu sync.Mutex

	maxCalls, maxCallsPerPeer       int
	maxBytes, maxBytesPerPeer       int64
	maxSessions, maxSessionsPerPeer int

	calls, sessions int
	bytes           int64
	peers           map[peerKey]peerUse
}

type peerUse struct {
	calls, sessions int
	bytes           int64
}

// Default budgets: a peer may have 128 requests and 64 MiB of bodies in
// flight, all peers together 1024 and 256 MiB; sessions as
// defaultMaxSessions and defaultMaxSessionsPerPeer.
func newBudget() *budget {
	return &budget{
		maxCalls: 1024, maxCallsPerPeer: 128,
		maxBytes: 256 << 20, maxBytesPerPeer: 64 << 20,
		maxSessions: defaultMaxSessions, maxSessionsPerPeer: defaultMaxSessionsPerPeer,
		peers: make(map[peerKey]peerUse),
	}
}

// setSessionCaps sets the session caps (config.mcp.maxSessions and
// maxSessionsPerPeer; 0 is the default). Sessions open past new, lower
// caps stay; new ones wait until there is room.
func (b *budget) setSessionCaps(max, perPeer int) {
	if max <= 0 {
		max = defaultMaxSessions
	}
	if perPeer <= 0 {
		perPeer = defaultMaxSessionsPerPeer
	}
	b.mu.Lock()
	b.maxSessions, b.maxSessionsPerPeer = max, min(perPeer, max)
	b.mu.Unlock()
}

// sessionCap is the gateway's session cap.
func (b *budget) sessionCap() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.maxSessions
}

// openSession takes a session's place for peer, or says why it cannot.
// Checked and taken under one lock, so that concurrent opens cannot pass
// a cap together.
func (b *budget) openSession(peer peerKey) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.peers[peer]
	switch {
	case b.sessions >= b.maxSessions:
		return &overError{false, fmt.Sprintf("too many MCP sessions (%d); retry later", b.maxSessions)}
	case p.sessions >= b.maxSessionsPerPeer:
		return &overError{true, fmt.Sprintf("too many MCP sessions from this peer (%d); close some or retry later", b.maxSessionsPerPeer)}
	}
	p.sessions++
	b.peers[peer] = p
	b.sessions++
	return nil
}

// closeSession gives back what openSession took.
func (b *budget) closeSession(peer peerKey) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sessions--
	p := b.peers[peer]
	p.sessions--
	b.put(peer, p)
}

// put stores what peer holds, forgetting a peer that holds nothing.
func (b *budget) put(peer peerKey, p peerUse) {
	if p.calls <= 0 && p.sessions <= 0 && p.bytes <= 0 {
		delete(b.peers, peer)
	} else {
		b.peers[peer] = p
	}
}

// overError is a request refused by the budget; perPeer says whose.
type overError struct {
	perPeer bool
	msg     string
}

func (e *overError) Error() string { return e.msg }

// acquire takes one request of n bytes for peer, or says why it cannot.
func (b *budget) acquire(peer peerKey, n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.peers[peer]
	switch {
	case p.calls+1 > b.maxCallsPerPeer:
		return &overError{true, fmt.Sprintf("too many requests in flight from this peer (%d); retry later", b.maxCallsPerPeer)}
	case p.bytes+n > b.maxBytesPerPeer:
		return &overError{true, fmt.Sprintf("too many request bytes in flight from this peer (%d MiB); retry later", b.maxBytesPerPeer>>20)}
	case b.calls+1 > b.maxCalls:
		return &overError{false, fmt.Sprintf("too many requests in flight (%d); retry later", b.maxCalls)}
	case b.bytes+n > b.maxBytes:
		return &overError{false, fmt.Sprintf("too many request bytes in flight (%d MiB); retry later", b.maxBytes>>20)}
	}
	p.calls++
	p.bytes += n
	b.peers[peer] = p
	b.calls++
	b.bytes += n
	return nil
}

// release gives back what acquire took.
func (b *budget) release(peer peerKey, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls--
	b.bytes -= n
	p := b.peers[peer]
	p.calls--
	p.bytes -= n
	b.put(peer, p)
}
