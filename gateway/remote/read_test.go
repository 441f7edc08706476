package remote

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/tailgate-dev/tailgate/mcpstdio/buffers"
)

// An event stream is read one event at a time, however its lines are cut;
// an event longer than the limit is refused once it passes it, without
// the rest being held, and what was held is given back.
func TestEventReader(t *testing.T) {
	long := strings.Repeat("x", 40<<10) // longer than the read buffer
	for _, tc := range []struct {
		name, stream string
		limit        int
		want         []string // data of each event
		tooLarge     bool
	}{
		{"events", "id: 1\ndata: {\"a\":1}\n\n: comment\nevent: message\ndata: {\"b\":\ndata: 2}\n\n", 1 << 20, []string{`{"a":1}`, `{"b":2}`}, false},
		{"crlf", "data: x\r\n\r\n", 1 << 20, []string{"x"}, false},
		{"an event the stream ends inside is dropped", "data: x\n\ndata: y\n", 1 << 20, []string{"x"}, false},
		{"a long data line", "data: " + long + "\n\n", 1 << 20, []string{long}, false},
		{"a long other line is skipped", "event: " + long + "\ndata: x\n\n", 1 << 20, []string{"x"}, false},
		{"one line past the limit", "data: " + long + "\n\n", 1 << 10, nil, true},
		{"many lines past the limit", strings.Repeat("data: "+strings.Repeat("y", 100)+"\n", 100) + "\n", 1 << 10, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			all := buffers.New(1 << 30)
			share := all.Share(tc.limit)
			er := newEventReader(strings.NewReader(tc.stream), tc.limit, share)
			var got []string
			var err error
			for {
				var ev sseEvent
				if ev, err = er.next(); err != nil {
					break
				}
				got = append(got, string(ev.data))
			}
			er.release()
			var tl *buffers.TooLargeError
			if tc.tooLarge != errors.As(err, &tl) || !tc.tooLarge && err != io.EOF {
				t.Errorf("stream ended with %v, want too large: %v", err, tc.tooLarge)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("events %q, want %q", got, tc.want)
			}
			if share.Held() != 0 || all.Held() != 0 {
				t.Errorf("%d bytes still held (%d in all)", share.Held(), all.Held())
			}
		})
	}
}

// boundedRead reads a body whole up to the limit, refuses one past it
// (announced or not) and charges what it holds.
func TestBoundedRead(t *testing.T) {
	for _, tc := range []struct {
		name     string
		body     string
		size     int64
		limit    int
		tooLarge bool
	}{
		{"announced", "hello", 5, 10, false},
		{"unannounced", strings.Repeat("z", 100<<10), -1, 1 << 20, false},
		{"announced past the limit", "hello", 50, 10, true},
		{"unannounced past the limit", strings.Repeat("z", 100<<10), -1, 1 << 10, true},
		{"at the limit", strings.Repeat("z", 1<<10), -1, 1 << 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			share := buffers.New(1 << 30).Share(tc.limit)
			body, held, err := boundedRead(strings.NewReader(tc.body), tc.size, tc.limit, share)
			var tl *buffers.TooLargeError
			if tc.tooLarge != errors.As(err, &tl) || !tc.tooLarge && (err != nil || string(body) != tc.body) {
				t.Fatalf("read %d bytes, %v", len(body), err)
			}
			if share.Held() != held {
				t.Errorf("%d bytes charged, %d held", share.Held(), held)
			}
			share.Give(held)
		})
	}
}
