package mcpstdio

import (
	"errors"
	"io"
	"strings"
	"testing"
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
			share := NewBuffers(1 << 30).share(tc.limit)
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
			var tl *tooLargeError
			if tc.tooLarge != errors.As(err, &tl) || !tc.tooLarge && err != io.EOF {
				t.Errorf("stream ended with %v, want too large: %v", err, tc.tooLarge)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("events %q, want %q", got, tc.want)
			}
			if share.used != 0 || share.all.used != 0 {
				t.Errorf("%d bytes still held (%d in all)", share.used, share.all.used)
			}
		})
	}
}

// Buffers are bounded per link and in all: a link holding its share, or
// links holding the whole, refuse more, and give it back when done.
func TestBuffers(t *testing.T) {
	all := NewBuffers(1000)
	a, b := all.share(100), all.share(100)
	if a.max != 250 {
		t.Fatalf("a link's share is %d, want a quarter of 1000", a.max)
	}
	if err := a.take(250); err != nil {
		t.Fatal(err)
	}
	if err := a.take(1); err == nil || !overBound(err) {
		t.Errorf("past a link's share: %v", err)
	}
	c, d := all.share(100), all.share(100)
	for _, s := range []*bufferShare{b, c, d} {
		if err := s.take(250); err != nil {
			t.Fatal(err)
		}
	}
	e := all.share(100)
	if err := e.take(1); err == nil || !strings.Contains(err.Error(), "in all") {
		t.Errorf("past the whole: %v", err)
	}
	a.give(250)
	if err := e.take(1); err != nil {
		t.Errorf("after a link gave back: %v", err)
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
			share := NewBuffers(1 << 30).share(tc.limit)
			body, held, err := boundedRead(strings.NewReader(tc.body), tc.size, tc.limit, share)
			var tl *tooLargeError
			if tc.tooLarge != errors.As(err, &tl) || !tc.tooLarge && (err != nil || string(body) != tc.body) {
				t.Fatalf("read %d bytes, %v", len(body), err)
			}
			if share.used != held {
				t.Errorf("%d bytes charged, %d held", share.used, held)
			}
			share.give(held)
		})
	}
}
