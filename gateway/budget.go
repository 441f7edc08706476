package gateway

import (
	"fmt"
	"sync"
)

// budget bounds what requests in flight may hold, per caller and in all:
// the number of requests, and the bytes of their bodies. A request past
// it is refused before its body is read, so that no peer (or all of them
// together) can make the gateway hold more than this.
type budget struct {
	mu sync.Mutex

	maxCalls, maxCallsPerPeer int
	maxBytes, maxBytesPerPeer int64

	calls int
	bytes int64
	peers map[peerKey]peerUse
}

type peerUse struct {
	calls int
	bytes int64
}

// Default budgets: a peer may have 128 requests and 64 MiB of bodies in
// flight, all peers together 1024 and 256 MiB.
func newBudget() *budget {
	return &budget{
		maxCalls: 1024, maxCallsPerPeer: 128,
		maxBytes: 256 << 20, maxBytesPerPeer: 64 << 20,
		peers: make(map[peerKey]peerUse),
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
	if p.calls <= 0 {
		delete(b.peers, peer)
	} else {
		b.peers[peer] = p
	}
}
