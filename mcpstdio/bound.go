package mcpstdio

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
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
type Buffers struct {
	mu        sync.Mutex
	max, used int64
	// freed is closed, and replaced, each time bytes are given back: the
	// readers waiting for room look again.
	freed   chan struct{}
	waiters int
	// waiting, in tests, hears of each reader that starts to wait.
	waiting chan<- struct{}
	// lines are the stdio lines being read, by when they began (a
	// sequence number): the eldest may always grow (see takeWaiting).
	lines   map[uint64]bool
	lineSeq uint64
}

// DefaultMaxBufferedBytes is what Buffers hold at most in all, unless
// NewBuffers is told otherwise.
const DefaultMaxBufferedBytes = 256 << 20

// NewBuffers returns Buffers holding at most max bytes in all (0:
// DefaultMaxBufferedBytes).
func NewBuffers(max int64) *Buffers {
	if max <= 0 {
		max = DefaultMaxBufferedBytes
	}
	return &Buffers{max: max, freed: make(chan struct{}), lines: make(map[uint64]bool)}
}

// Held is the number of bytes held in all.
func (b *Buffers) Held() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// bufferShare is what one link may hold of Buffers: a quarter of the
// whole (or one message of the longest kind, if more), so that one
// caller's link cannot take it all.
type bufferShare struct {
	all       *Buffers
	mu        sync.Mutex
	max, used int64
}

// share is a link's share, as large as one message of at most maxMsg
// bytes needs.
func (b *Buffers) share(maxMsg int) *bufferShare {
	return &bufferShare{all: b, max: min(max(b.max/4, int64(maxMsg)+1), b.max)}
}

// take charges n more bytes, or says why it cannot.
func (s *bufferShare) take(n int64) error {
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

// give gives back n bytes taken.
func (s *bufferShare) give(n int64) {
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
func (b *Buffers) wake() {
	if b.waiters > 0 {
		close(b.freed)
		b.freed = make(chan struct{})
	}
}

// startLine registers a stdio line being read, and returns its place.
func (b *Buffers) startLine() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lineSeq++
	b.lines[b.lineSeq] = true
	return b.lineSeq
}

// endLine says line has been read (or given up).
func (b *Buffers) endLine(line uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.lines, line)
	b.wake() // the eldest line may be another now
}

// eldest reports whether line began before every other long line being
// read.
func (b *Buffers) eldest(line uint64) bool {
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

// lineRead is a stdio line being read, as takeWaiting knows it.
type lineRead struct {
	// seq is the line's place among the long lines being read
	// (startLine); 0 for a line that fits the read buffer.
	seq uint64
	// until is when the line gives up waiting for room, set at its first
	// wait: patience counts the time the line waits, however many times.
	until time.Time
}

// takeWaiting charges n more bytes of line, waiting for room for up to
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
func (s *bufferShare) takeWaiting(n int64, line *lineRead, patience time.Duration, stop <-chan struct{}) error {
	take := s.take
	if line.seq == 0 {
		take = s.takeMine
	}
	err := take(n)
	if err == nil {
		return nil
	}
	a := s.all
	if line.until.IsZero() {
		line.until = time.Now().Add(patience)
	}
	timer := time.NewTimer(time.Until(line.until))
	defer timer.Stop()
	for {
		if ob := (*overBoundError)(nil); errors.As(err, &ob) && ob.all && a.eldest(line.seq) && s.forceWithin(n, s.max) {
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
func (s *bufferShare) takeMine(n int64) error {
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
func (s *bufferShare) forceWithin(n, over int64) bool {
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

// hold charges n bytes of an answer on its way to a client, or says why
// there is no room for it.
func (s *bufferShare) hold(n int) (charge, error) {
	if err := s.take(int64(n)); err != nil {
		return charge{}, err
	}
	return charge{share: s, n: int64(n)}, nil
}

// answer is the charge for an answer of n bytes made of a message whose
// reader holds from: the answer takes over what from holds (the message's
// buffer is dropped, or is the answer's, once the answer is made of it),
// or, with nothing to take over, holds n bytes anew.
func (s *bufferShare) answer(from *charge, n int) (charge, error) {
	if from != nil && from.n > 0 && !from.taken {
		from.taken = true
		return charge{share: from.share, n: from.n}, nil
	}
	return s.hold(n)
}

// charge is the bytes one message holds of a bufferShare. Its reader, or
// the answer made of it, gives them back once done with it.
type charge struct {
	share *bufferShare
	n     int64
	// owns says the message is in a buffer of its own, which the answer
	// made of it may be written into.
	owns bool
	// taken says an answer took the charge over from its reader.
	taken bool
}

// readerDone says the reader of a message is done with it: what it holds
// is given back, unless an answer made of it took it over.
func (h *charge) readerDone() {
	if !h.taken {
		h.release()
	}
}

// release gives back what h holds.
func (h *charge) release() {
	if h.n > 0 {
		h.share.give(h.n)
		h.n = 0
	}
}

// overBoundError is a message the buffers have no room for.
type overBoundError struct {
	msg string
	all bool // the gateway's bound, not the link's share
}

func (e *overBoundError) Error() string { return e.msg }

// overBound reports whether err is a message past the gateway's bounds:
// too long, or more than the buffers have room for.
func overBound(err error) bool {
	var tl *tooLargeError
	var ob *overBoundError
	return errors.As(err, &tl) || errors.As(err, &ob)
}

// tooLargeError is a message longer than the gateway takes.
type tooLargeError struct{ limit int }

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("a message longer than %d bytes (the gateway's maxMessageBytes)", e.limit)
}

// boundedRead reads r whole, holding at most limit bytes and charging
// share for what it holds; the caller gives back held once done with the
// bytes. size is the length announced, or -1.
func boundedRead(r io.Reader, size int64, limit int, share *bufferShare) (body []byte, held int64, err error) {
	if size > int64(limit) {
		return nil, 0, &tooLargeError{limit}
	}
	const chunk = 32 << 10
	for {
		if len(body) == cap(body) {
			grow := max(int64(chunk), int64(cap(body))) // doubling, as append
			if size > 0 && held == 0 {
				grow = size + 1 // the announced size, and room to see EOF
			}
			if int64(cap(body))+grow > int64(limit)+1 {
				grow = int64(limit) + 1 - int64(cap(body))
			}
			if err := share.take(grow); err != nil {
				return nil, held, err
			}
			held += grow
			nb := make([]byte, len(body), int64(cap(body))+grow)
			copy(nb, body)
			body = nb
		}
		n, rerr := r.Read(body[len(body):cap(body)])
		body = body[:len(body)+n]
		if len(body) > limit {
			return nil, held, &tooLargeError{limit}
		}
		if rerr == io.EOF {
			return body, held, nil
		}
		if rerr != nil {
			return nil, held, rerr
		}
	}
}

// sseEvent is one event of a text/event-stream.
type sseEvent struct {
	name  string
	id    string
	hasID bool
	data  []byte
	// retry is the reconnection delay the event set, or -1.
	retry time.Duration
}

// eventReader reads a text/event-stream one event at a time, holding no
// more than limit bytes of an event's data, and charging share for what it
// holds until the next event is asked for. Lines are read in pieces: only
// a data line's value is kept whole (other fields longer than the read
// buffer are skipped), so nothing else grows.
type eventReader struct {
	br    *bufio.Reader
	limit int
	share *bufferShare
	held  int64
	data  []byte
}

func newEventReader(r io.Reader, limit int, share *bufferShare) *eventReader {
	return &eventReader{br: bufio.NewReaderSize(r, 16<<10), limit: limit, share: share}
}

// handOver is the charge for what the last event holds, for its answer to
// take over; the event's buffer is not used again.
func (er *eventReader) handOver() charge {
	h := charge{share: er.share, n: er.held, owns: true}
	er.held, er.data = 0, nil
	return h
}

// release gives back what the last event held.
func (er *eventReader) release() {
	er.share.give(er.held)
	er.held = 0
	er.data = nil
}

// appendData adds p to the event's data, charging for the room it takes.
func (er *eventReader) appendData(p []byte) error {
	n := len(er.data) + len(p)
	if n > er.limit {
		return &tooLargeError{er.limit}
	}
	if n > cap(er.data) {
		c := min(max(n, 2*cap(er.data), 4<<10), er.limit)
		if err := er.share.take(int64(c - cap(er.data))); err != nil {
			return err
		}
		er.held += int64(c - cap(er.data))
		nb := make([]byte, len(er.data), c)
		copy(nb, er.data)
		er.data = nb
	}
	er.data = append(er.data, p...)
	return nil
}

// piece reads the next piece of a line, without its end of line; more
// reports that the line goes on past the reader's buffer.
func (er *eventReader) piece() (piece []byte, more bool, err error) {
	piece, err = er.br.ReadSlice('\n')
	switch {
	case err == bufio.ErrBufferFull:
		return piece, true, nil
	case err == io.ErrUnexpectedEOF:
		return nil, false, io.EOF
	case err != nil:
		return nil, false, err
	}
	return trimEOL(piece), false, nil
}

// next is the next event, or io.EOF at the stream's end (an event it ends
// inside is dropped, as EventSource does), or the error that stopped it,
// a *tooLargeError or *overBoundError among them. The event's data is
// valid until next is called again.
func (er *eventReader) next() (sseEvent, error) {
	er.release()
	ev := sseEvent{retry: -1}
	for {
		piece, more, err := er.piece()
		if err != nil {
			return sseEvent{retry: -1}, err
		}
		if !more {
			if len(piece) == 0 {
				if len(er.data) > 0 || ev.name != "" || ev.hasID || ev.retry >= 0 {
					ev.data = er.data
					return ev, nil
				}
				continue
			}
		}
		field, value, _ := bytes.Cut(piece, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		data := string(field) == "data"
		switch {
		case data:
			if err := er.appendData(value); err != nil {
				return sseEvent{retry: -1}, err
			}
		case more: // a field other than data this long is not one to keep
		case string(field) == "event":
			ev.name = strings.TrimSpace(string(value))
		case string(field) == "id":
			ev.id, ev.hasID = strings.TrimSpace(string(value)), true
		case string(field) == "retry":
			if ms, err := strconv.Atoi(strings.TrimSpace(string(value))); err == nil && ms >= 0 {
				ev.retry = time.Duration(ms) * time.Millisecond
			}
		}
		for more {
			if piece, more, err = er.piece(); err != nil {
				return sseEvent{retry: -1}, err
			}
			if data {
				if err := er.appendData(piece); err != nil {
					return sseEvent{retry: -1}, err
				}
			}
		}
	}
}

// trimEOL is a line without its end (\n or \r\n).
func trimEOL(line []byte) []byte {
	return bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
}
