package remote

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/tailgate-dev/tailgate/mcpstdio/buffers"
)

// boundedRead reads r whole, holding at most limit bytes and charging
// share for what it holds; the caller gives back held once done with the
// bytes. size is the length announced, or -1.
func boundedRead(r io.Reader, size int64, limit int, share *buffers.Share) (body []byte, held int64, err error) {
	if size > int64(limit) {
		return nil, 0, &buffers.TooLargeError{Limit: limit}
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
			if err := share.Take(grow); err != nil {
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
			return nil, held, &buffers.TooLargeError{Limit: limit}
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
	share *buffers.Share
	held  int64
	data  []byte
}

func newEventReader(r io.Reader, limit int, share *buffers.Share) *eventReader {
	return &eventReader{br: bufio.NewReaderSize(r, 16<<10), limit: limit, share: share}
}

// handOver is the buffers.Charge for what the last event holds, for its answer to
// take over; the event's buffer is not used again.
func (er *eventReader) handOver() buffers.Charge {
	h := er.share.Charge(er.held, true)
	er.held, er.data = 0, nil
	return h
}

// release gives back what the last event held.
func (er *eventReader) release() {
	er.share.Give(er.held)
	er.held = 0
	er.data = nil
}

// appendData adds p to the event's data, charging for the room it takes.
func (er *eventReader) appendData(p []byte) error {
	n := len(er.data) + len(p)
	if n > er.limit {
		return &buffers.TooLargeError{Limit: er.limit}
	}
	if n > cap(er.data) {
		c := min(max(n, 2*cap(er.data), 4<<10), er.limit)
		if err := er.share.Take(int64(c - cap(er.data))); err != nil {
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
// a *buffers.TooLargeError or *overBoundError among them. The event's data is
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
