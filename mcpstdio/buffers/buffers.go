// Package buffers bounds the memory tailgate holds of what its targets
// send: a gateway-wide bound (Bound), each link's share of it (Share), and
// what each message holds (Charge) until the client has taken it.
package buffers

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Buffers bounds the bytes tailgate holds of messages from its targets,
// in all (every backend of a gateway shares one) and per link (one
// caller's connection to one target): a remote target's message while it
// is read, and every target's answers until the client has taken them.
// Neither one target sending without end, nor many large answers at once,
// nor clients that do not read, can grow the gateway past it: an answer
// that does not fit is replaced by an error that says which bound it
// passed. Each message is bounded on its own by MaxMessageBytes.
type Bound struct {
	mu        sync.Mutex
	max, used int64
	// freed is closed, and replaced, each time bytes are given back: the
	// readers waiting for room look again.
	freed   chan struct{}
	waiters int
	// waiting, in tests, hears of each reader that starts to wait.
	waiting chan<- struct{}
	// lines are the stdio lines being read, by when they began (a
	// sequence number): the eldest may always grow (see TakeWaiting).
	lines   map[uint64]bool
	lineSeq uint64
}

// DefaultMax is what Buffers hold at most in all, unless
// New is told otherwise.
const DefaultMax = 256 << 20

// New returns Buffers holding at most max bytes in all (0:
// DefaultMax).
func New(max int64) *Bound {
	if max <= 0 {
		max = DefaultMax
	}
	return &Bound{max: max, freed: make(chan struct{}), lines: make(map[uint64]bool)}
}

// Held is the number of bytes held in all.
func (b *Bound) Held() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// Share is what one link may hold of Buffers: a quarter of the
// whole (or one message of the longest kind, if more), so that one
// caller's link cannot take it all.
type Share struct {
	all       *Bound
	mu        sync.Mutex
	max, used int64
}

// Share is a link's share, as large as one message of at most maxMsg
// bytes needs.
func (b *Bound) Share(maxMsg int) *Share {
	return &Share{all: b, max: min(max(b.max/4, int64(maxMsg)+1), b.max)}
}

// Take charges n more bytes, or says why it cannot.
func (s *Share) Take(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used+n > s.max {
		return &overBoundError{msg: fmt.Sprintf("the messages of this caller's link to its target, being read or not yet taken by the client, would exceed %d bytes", s.max)}
	}
	a := s.all
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.used+n > a.max {
		return &overBoundError{msg: fmt.Sprintf("the messages the gateway holds of its targets, being read or not yet taken by clients, would exceed %d bytes in all; retry later", a.max), all: true}
	}
	a.used += n
	s.used += n
	return nil
}

// Give gives back n bytes taken.
func (s *Share) Give(n int64) {
	if n == 0 {
		return
	}
	s.mu.Lock()
	s.used -= n
	s.mu.Unlock()
	a := s.all
	a.mu.Lock()
	a.used -= n
	a.wake()
	a.mu.Unlock()
}

// wake tells the readers waiting for room to look again; b.mu is held.
func (b *Bound) wake() {
	if b.waiters > 0 {
		close(b.freed)
		b.freed = make(chan struct{})
	}
}

// StartLine registers a stdio line being read, and returns its place.
func (b *Bound) StartLine() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lineSeq++
	b.lines[b.lineSeq] = true
	return b.lineSeq
}

// EndLine says line has been read (or given up).
func (b *Bound) EndLine(line uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.lines, line)
	b.wake() // the eldest line may be another now
}

// eldest reports whether line began before every other long line being
// read.
func (b *Bound) eldest(line uint64) bool {
	if line == 0 { // a short line, which waits for its share only
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for l := range b.lines {
		if l < line {
			return false
		}
	}
	return true
}

// LineRead is a stdio line being read, as takeWaiting knows it.
type LineRead struct {
	// Seq is the line's place among the long lines being read
	// (startLine); 0 for a line that fits the read buffer.
	Seq uint64
	// Until is when the line gives up waiting for room, set at its first
	// wait: patience counts the time the line waits, however many times.
	Until time.Time
}

// TakeWaiting charges n more bytes of line, waiting for room for up to
// patience: the child's reader holds the child back meanwhile (it blocks
// on its own output until the clients have taken enough of what was said
// before). stop ends the wait: the child is gone.
//
// A line that fits the read buffer (64 KiB) waits for its link's share
// only: clients that do not read, and hold the gateway's bound, do not
// hold back every other child's small messages with them. Long lines
// partly read, each waiting for room the others hold, could wait for each
// other for good; so the eldest long line may pass the gateway's bound
// (never its link's share) by up to a share (one message at least): it
// always ends, and gives its room to the next.
func (s *Share) TakeWaiting(n int64, line *LineRead, patience time.Duration, stop <-chan struct{}) error {
	take := s.Take
	if line.Seq == 0 {
		take = s.takeMine
	}
	err := take(n)
	if err == nil {
		return nil
	}
	a := s.all
	if line.Until.IsZero() {
		line.Until = time.Now().Add(patience)
	}
	timer := time.NewTimer(time.Until(line.Until))
	defer timer.Stop()
	for {
		if ob := (*overBoundError)(nil); errors.As(err, &ob) && ob.all && a.eldest(line.Seq) && s.forceWithin(n, s.max) {
			return nil
		}
		a.mu.Lock()
		a.waiters++
		freed, waiting := a.freed, a.waiting
		a.mu.Unlock()
		if waiting != nil {
			select {
			case waiting <- struct{}{}:
			default:
			}
		}
		// Room given back before the wait was registered is seen here.
		var stopped error
		if err = take(n); err == nil {
			freed = nil
		}
		if freed != nil {
			select {
			case <-freed:
			case <-stop:
				stopped = io.ErrClosedPipe
			case <-timer.C:
				stopped = fmt.Errorf("%w for %v", err, patience)
			}
		}
		a.mu.Lock()
		a.waiters--
		a.mu.Unlock()
		if stopped != nil || freed == nil {
			return stopped
		}
		if err = take(n); err == nil {
			return nil
		}
	}
}

// takeMine charges n more bytes if the link's share has room for them,
// and to the gateway's whole whether or not it has.
func (s *Share) takeMine(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used+n > s.max {
		return &overBoundError{msg: fmt.Sprintf("the messages of this caller's link to its target, being read or not yet taken by the client, would exceed %d bytes", s.max)}
	}
	s.used += n
	s.all.mu.Lock()
	s.all.used += n
	s.all.mu.Unlock()
	return nil
}

// forceWithin charges n bytes past the gateway's bound, if that leaves
// the whole no more than over past it.
func (s *Share) forceWithin(n, over int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used+n > s.max {
		return false
	}
	a := s.all
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.used+n > a.max+over {
		return false
	}
	a.used += n
	s.used += n
	return true
}

// Hold charges n bytes of an answer on its way to a client, or says why
// there is no room for it.
func (s *Share) Hold(n int) (Charge, error) {
	if err := s.Take(int64(n)); err != nil {
		return Charge{}, err
	}
	return Charge{share: s, n: int64(n)}, nil
}

// answer is the Charge for an answer of n bytes made of a message whose
// reader holds from: the answer takes over what from holds (the message's
// buffer is dropped, or is the answer's, once the answer is made of it),
// or, with nothing to take over, holds n bytes anew.
func (s *Share) Answer(from *Charge, n int) (Charge, error) {
	if from != nil && from.n > 0 && !from.taken {
		from.taken = true
		return Charge{share: from.share, n: from.n}, nil
	}
	return s.Hold(n)
}

// Charge is the bytes one message holds of a Share. Its reader, or
// the answer made of it, gives them back once done with it.
type Charge struct {
	share *Share
	n     int64
	// Owns says the message is in a buffer of its own, which the answer
	// made of it may be written into.
	Owns bool
	// taken says an answer took the Charge over from its reader.
	taken bool
}

// ReaderDone says the reader of a message is done with it: what it holds
// is given back, unless an answer made of it took it over.
func (h *Charge) ReaderDone() {
	if !h.taken {
		h.Release()
	}
}

// Release gives back what h holds.
func (h *Charge) Release() {
	if h.n > 0 {
		h.share.Give(h.n)
		h.n = 0
	}
}

// overBoundError is a message the buffers have no room for.
type overBoundError struct {
	msg string
	all bool // the gateway's bound, not the link's share
}

func (e *overBoundError) Error() string { return e.msg }

// OverBound reports whether err is a message past the gateway's bounds:
// too long, or more than the buffers have room for.
func OverBound(err error) bool {
	var tl *TooLargeError
	var ob *overBoundError
	return errors.As(err, &tl) || errors.As(err, &ob)
}

// TooLargeError is a message longer than the gateway takes.
type TooLargeError struct{ Limit int }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("a message longer than %d bytes (the gateway's maxMessageBytes)", e.Limit)
}

// Charge is the charge for n bytes the caller has already taken of s;
// owns says the message is in a buffer of its own (an answer made of it
// may be written into it).
func (s *Share) Charge(n int64, owns bool) Charge {
	return Charge{share: s, n: n, Owns: owns}
}

// Grow counts n more bytes, taken of h's share, as h's.
func (h *Charge) Grow(n int64) { h.n += n }

// StartLine and EndLine bracket a long stdio line being read on s's link
// (see TakeWaiting).
func (s *Share) StartLine() uint64 { return s.all.StartLine() }

// EndLine says the long line StartLine began is read.
func (s *Share) EndLine(line uint64) { s.all.EndLine(line) }

// HearWaits makes b tell ch of each reader that starts to wait for room:
// tests wait on that event instead of on time.
func (b *Bound) HearWaits(ch chan<- struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.waiting = ch
}

// Held is the number of bytes s holds.
func (s *Share) Held() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}
