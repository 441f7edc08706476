package gateway

import (
	"fmt"
	"io"
	"net/http"
	"sync"
)

// budget bounds what callers may hold of the gateway, per caller and in
// all, across every route and every reload (the Server has one): the MCP
// sessions open, the requests in flight, the bytes of their bodies and the
// long-lived streams (subscriptions/listen). A request past it is refused
// before its body is read, a session before it is opened, so that no peer
// (or all of them together) can make the gateway hold more than this.
//
// A peer's share of each is a sixteenth of the whole (peerShare): it
// takes sixteen peers, each at its share, to fill the gateway, so a
// handful cannot lock out the rest. A request holds the bytes of its body
// as they arrive (not what it announces), and a listen, once read, only
// its body: a trickled body or a stream held for hours costs what it
// holds.
type budget struct {
	mu sync.Mutex

	maxCalls, maxCallsPerPeer       int
	maxBytes, maxBytesPerPeer       int64
	maxSessions, maxSessionsPerPeer int
	maxStreams, maxStreamsPerPeer   int

	calls, sessions, streams int
	bytes                    int64
	peers                    map[peerKey]peerUse
}

type peerUse struct {
	calls, sessions, streams int
	bytes                    int64
}

// peerShare is how many peers at their share it takes to fill the
// gateway's budget.
const peerShare = 16

// Default budgets: 2048 requests, 256 MiB of bodies and 256 listens in
// flight in all, a sixteenth of each per peer (128 requests: a client
// with 64 calls in flight on one session has room to spare); sessions as
// defaultMaxSessions and defaultMaxSessionsPerPeer.
func newBudget() *budget {
	return &budget{
		maxCalls: 2048, maxCallsPerPeer: 2048 / peerShare,
		maxBytes: 256 << 20, maxBytesPerPeer: (256 << 20) / peerShare,
		maxStreams: 256, maxStreamsPerPeer: 256 / peerShare,
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
	if p.calls <= 0 && p.sessions <= 0 && p.bytes <= 0 && p.streams <= 0 {
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

// charge is what one request holds of the budget: its place, the bytes of
// its body read so far, and a stream's place once it is one.
type charge struct {
	b      *budget
	peer   peerKey
	n      int64
	stream bool
}

// acquire takes one request of n bytes for peer, or says why it cannot.
func (b *budget) acquire(peer peerKey, n int64) (charge, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.peers[peer]
	if p.calls+1 > b.maxCallsPerPeer {
		return charge{}, &overError{true, fmt.Sprintf("too many requests in flight from this peer (%d); retry later", b.maxCallsPerPeer)}
	}
	if b.calls+1 > b.maxCalls {
		return charge{}, &overError{false, fmt.Sprintf("too many requests in flight (%d); retry later", b.maxCalls)}
	}
	if err := b.fitsLocked(p, n); err != nil {
		return charge{}, err
	}
	p.calls++
	p.bytes += n
	b.peers[peer] = p
	b.calls++
	b.bytes += n
	return charge{b: b, peer: peer, n: n}, nil
}

// fitsLocked says why n more bytes would not fit, if they would not.
func (b *budget) fitsLocked(p peerUse, n int64) error {
	switch {
	case p.bytes+n > b.maxBytesPerPeer:
		return &overError{true, fmt.Sprintf("too many request bytes in flight from this peer (%d MiB); retry later", b.maxBytesPerPeer>>20)}
	case b.bytes+n > b.maxBytes:
		return &overError{false, fmt.Sprintf("too many request bytes in flight (%d MiB); retry later", b.maxBytes>>20)}
	}
	return nil
}

// resize makes the request hold n bytes of body: more as its body
// arrives, or less once it is read. Growing past the budget is refused.
func (c *charge) resize(n int64) error {
	if n == c.n {
		return nil
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.peers[c.peer]
	if n > c.n {
		if err := b.fitsLocked(p, n-c.n); err != nil {
			return err
		}
	}
	p.bytes += n - c.n
	b.bytes += n - c.n
	c.n = n
	b.put(c.peer, p)
	return nil
}

// holdStream makes the request a long-lived stream (a listen), which
// takes a stream's place, per peer and in all, for as long as it lasts.
func (c *charge) holdStream() error {
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.peers[c.peer]
	switch {
	case p.streams+1 > b.maxStreamsPerPeer:
		return &overError{true, fmt.Sprintf("too many listens open from this peer (%d); close some or retry later", b.maxStreamsPerPeer)}
	case b.streams+1 > b.maxStreams:
		return &overError{false, fmt.Sprintf("too many listens open (%d); retry later", b.maxStreams)}
	}
	p.streams++
	b.streams++
	b.peers[c.peer] = p
	c.stream = true
	return nil
}

// release gives back what the request holds.
func (c *charge) release() {
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls--
	b.bytes -= c.n
	p := b.peers[c.peer]
	p.calls--
	p.bytes -= c.n
	if c.stream {
		b.streams--
		p.streams--
	}
	b.put(c.peer, p)
}

// readBody reads r's body, at most limit bytes, charging c for the room
// it takes as it arrives, so that a body trickled in holds only what came;
// once read, c holds what the body is.
func readBody(w http.ResponseWriter, req *http.Request, limit int64, c *charge) ([]byte, error) {
	size := req.ContentLength
	var r io.Reader = req.Body
	if size > limit || size < 0 {
		r, size = http.MaxBytesReader(w, req.Body, limit), -1
	}
	if size >= 0 && size <= c.n {
		// Charged at admit; net/http reads no more than Content-Length:
		// the buffer is sized at once.
		body := make([]byte, size)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, err
		}
		return body, c.resize(size)
	}
	body := make([]byte, 0, c.n)
	for {
		if len(body) == cap(body) {
			next := max(2*int64(cap(body)), firstBodyBytes)
			if size >= 0 {
				next = min(next, size)
			}
			if err := c.resize(next); err != nil {
				return nil, err
			}
			grown := make([]byte, len(body), next)
			copy(grown, body)
			body = grown
		}
		n, err := r.Read(body[len(body):cap(body)])
		body = body[:len(body)+n]
		if err == io.EOF || size >= 0 && int64(len(body)) == size {
			return body, c.resize(int64(len(body)))
		}
		if err != nil {
			return nil, err
		}
	}
}
