package gateway

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// writeJSON answers with one JSON-RPC message. An error is a *writeError:
// the client did not take the whole message.
func writeJSON(w http.ResponseWriter, msg []byte) error { return answerJSON(w, msg, 0) }

// answerJSON is writeJSON with a write stall limit (writeBody).
func answerJSON(w http.ResponseWriter, msg []byte, stall time.Duration) error {
	return answerJSONStatus(w, http.StatusOK, msg, stall)
}

// answerJSONStatus answers with one JSON-RPC message and status. The
// length is set, so that writeBody's flush, which tells whether the client
// took the message, does not make the answer chunked.
func answerJSONStatus(w http.ResponseWriter, status int, msg []byte, stall time.Duration) error {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(msg))}
	w.WriteHeader(status)
	return writeBody(w, msg, stall)
}

// defaultWriteStall is how long a write to a client may go without
// progress before the answer is abandoned (unless the front's options say
// otherwise): a peer that stops reading, or a connection that stalls, must
// not hold a call, its handler and its budget place forever.
const defaultWriteStall = 30 * time.Second

// writeChunk is how much of a message is written under one write
// deadline: the deadline bounds a stall, not a whole large answer.
const writeChunk = 256 << 10

// writeError is an answer the client did not take whole: the access log
// says so, with how much of it was written.
type writeError struct {
	wrote, of int
	err       error
}

func (e *writeError) Error() string {
	return fmt.Sprintf("wrote %d of %d bytes: %v", e.wrote, e.of, e.err)
}

func (e *writeError) Unwrap() error { return e.err }

// writeBody writes msg to w in chunks, each under a write deadline of
// stall (defaultWriteStall if 0), then flushes it to the connection, so
// that a failed write is seen here rather than lost when the handler
// returns.
func writeBody(w http.ResponseWriter, msg []byte, stall time.Duration) error {
	rc := http.NewResponseController(w)
	if stall <= 0 {
		stall = defaultWriteStall
	}
	// A writer without deadlines (a test's recorder, a buffer) is
	// written as it is.
	deadlines := rc.SetWriteDeadline(time.Now().Add(stall)) == nil
	if deadlines {
		defer rc.SetWriteDeadline(time.Time{})
	}
	wrote := 0
	for wrote < len(msg) {
		end := min(wrote+writeChunk, len(msg))
		if deadlines && wrote > 0 {
			rc.SetWriteDeadline(time.Now().Add(stall))
		}
		n, err := w.Write(msg[wrote:end])
		wrote += n
		if err != nil {
			return &writeError{wrote: wrote, of: len(msg), err: err}
		}
	}
	if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return &writeError{wrote: wrote, of: len(msg), err: fmt.Errorf("flush: %w", err)}
	}
	return nil
}

// jsonContentType is shared by every answer; net/http copies it.
var jsonContentType = []string{"application/json"}

// sseWriter writes server-sent events, flushing each.
type sseWriter struct {
	w   http.ResponseWriter
	buf []byte
	// stall bounds a write without progress (writeBody).
	stall time.Duration
}

// startSSE answers 200 with an event stream.
func startSSE(w http.ResponseWriter) *sseWriter {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache, no-transform")
	w.WriteHeader(http.StatusOK)
	http.NewResponseController(w).Flush()
	return &sseWriter{w: w}
}

// event writes one JSON-RPC message as a "message" event.
func (s *sseWriter) event(msg []byte) error { return s.write("message", msg) }

func (s *sseWriter) write(event string, data []byte) error {
	b := append(s.buf[:0], "event: "...)
	b = append(b, event...)
	b = append(b, '\n')
	// A line break would end the data field; messages are single lines,
	// but a client's pretty-printed JSON need not be.
	for {
		line, rest, more := bytes.Cut(data, []byte("\n"))
		b = append(b, "data: "...)
		b = append(b, bytes.TrimSuffix(line, []byte("\r"))...)
		b = append(b, '\n')
		if !more {
			break
		}
		data = rest
	}
	b = append(b, '\n')
	if cap(b) <= 64<<10 {
		s.buf = b // reused for the next event; large ones are not kept
	}
	return writeBody(s.w, b, s.stall)
}

// httpSink streams a Streamable HTTP POST's answer: plain JSON when the
// response is the only message, an event stream as soon as the request
// causes anything before its response (progress, logs, server requests).
type httpSink struct {
	w        http.ResponseWriter
	done     <-chan struct{}
	sse      *sseWriter
	answered bool
	// sessionless answers a sessionless (2026-07-28) request, where an unknown
	// or removed method is also HTTP 404.
	sessionless bool
	// stall bounds a write without progress (writeBody).
	stall time.Duration
}

func (s *httpSink) send(msg []byte, final bool) error {
	if final {
		s.answered = true
		if s.sse == nil {
			if status := errorStatus(msg); s.sessionless && status != http.StatusOK {
				return answerJSONStatus(s.w, status, msg, s.stall)
			}
			return answerJSON(s.w, msg, s.stall)
		}
	}
	if s.sse == nil {
		s.sse = startSSE(s.w)
		s.sse.stall = s.stall
	}
	return s.sse.event(msg)
}

func (s *httpSink) gone() <-chan struct{} { return s.done }

func (s *httpSink) accepted() {
	s.answered = true
	s.w.WriteHeader(http.StatusAccepted)
}

// finish ends an answer that got no response (the client cancelled the
// request): an empty event stream.
func (s *httpSink) finish() {
	if !s.answered && s.sse == nil {
		startSSE(s.w)
	}
}

// sseSink puts a legacy SSE session's answers on its stream, in order.
type sseSink struct{ fs *frontSession }

func (fs *frontSession) sseSink() sseSink { return sseSink{fs} }

var errStreamClosed = errors.New("the session's stream is closed")

func (s sseSink) send(msg []byte, final bool) error {
	select {
	case s.fs.queue <- msg:
		return nil
	case <-s.fs.closed:
		return errStreamClosed
	}
}

func (s sseSink) gone() <-chan struct{} { return s.fs.closed }
func (s sseSink) accepted()             {}

// responseBuffer captures an answer meant for an HTTP response, for a
// legacy SSE session whose answers go on its stream instead.
type responseBuffer struct {
	header http.Header
	body   []byte
}

func (b *responseBuffer) Header() http.Header {
	if b.header == nil {
		b.header = make(http.Header)
	}
	return b.header
}

func (b *responseBuffer) Write(p []byte) (int, error) {
	b.body = append(b.body, p...)
	return len(p), nil
}

func (b *responseBuffer) WriteHeader(int) {}

// decodeBase64Header decodes a header value of the form "=?base64?…?="
// (SEP-2243).
func decodeBase64Header(v string) (string, bool) {
	inner, ok := strings.CutPrefix(v, "=?base64?")
	if !ok {
		return "", false
	}
	inner, ok = strings.CutSuffix(inner, "?=")
	if !ok {
		return "", false
	}
	b, err := base64.StdEncoding.DecodeString(inner)
	if err != nil {
		return "", false
	}
	return string(b), true
}
