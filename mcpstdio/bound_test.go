package mcpstdio

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/synctest"
	"time"
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

// A stdio line that finds no room waits, without a deadline of its own
// past the link's patience, for the room its link or the whole gets back;
// the time it waits counts once however many times it waits; the eldest
// long line may pass the gateway's bound (never its share) so that lines
// partly read cannot wait for each other for good; a short line waits for
// its link's share only. (In a synctest bubble: the times are exact.)
func TestTakeWaiting(t *testing.T) {
	const patience = 30 * time.Second
	t.Run("room given back", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			never := make(chan struct{}) // made in the bubble, as all it waits on
			all := NewBuffers(1000)
			s := all.share(100)
			s.take(250)
			go func() {
				time.Sleep(5 * time.Second)
				s.give(100)
			}()
			start := time.Now()
			if err := s.takeWaiting(100, &lineRead{}, patience, never); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took != 5*time.Second {
				t.Errorf("waited %v, want until the room came back (5s)", took)
			}
		})
	})
	t.Run("patience", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			never := make(chan struct{}) // made in the bubble, as all it waits on
			all := NewBuffers(1000)
			s := all.share(100)
			s.take(250)
			var lr lineRead
			start := time.Now()
			err := s.takeWaiting(1, &lr, patience, never)
			if !overBound(err) || !strings.Contains(err.Error(), "for 30s") {
				t.Errorf("after patience: %v", err)
			}
			if took := time.Since(start); took != patience {
				t.Errorf("gave up after %v, want %v", took, patience)
			}
			// The same line waits no longer a second time.
			start = time.Now()
			s.takeWaiting(1, &lr, patience, never)
			if took := time.Since(start); took != 0 {
				t.Errorf("the same line waited %v more", took)
			}
		})
	})
	t.Run("link gone", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			all := NewBuffers(1000)
			s := all.share(100)
			s.take(250)
			stop := make(chan struct{})
			go func() {
				time.Sleep(time.Second)
				close(stop)
			}()
			if err := s.takeWaiting(1, &lineRead{}, patience, stop); err != io.ErrClosedPipe {
				t.Errorf("link gone: %v", err)
			}
		})
	})
	t.Run("eldest long line passes the bound", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			never := make(chan struct{}) // made in the bubble, as all it waits on
			all := NewBuffers(1000)
			older, younger := all.share(100), all.share(100)
			// Four links hold the whole: two lines partly read, two
			// answers nobody takes.
			all.share(100).take(250)
			all.share(100).take(250)
			first, second := all.startLine(), all.startLine()
			older.take(250)
			younger.take(250)
			if err := younger.takeWaiting(1, &lineRead{seq: second}, patience, never); !overBound(err) {
				t.Errorf("the younger line did not wait: %v", err)
			}
			if err := older.takeWaiting(200, &lineRead{seq: first}, patience, never); err == nil {
				t.Errorf("the eldest line passed its link's share")
			}
			older.give(200)          // an answer of its link went to a client
			all.share(100).take(200) // and another link took the room
			if err := younger.takeWaiting(1, &lineRead{seq: second}, patience, never); !overBound(err) {
				t.Errorf("the younger line did not wait: %v", err)
			}
			if err := older.takeWaiting(200, &lineRead{seq: first}, patience, never); err != nil {
				t.Errorf("the eldest line, within its share, waited: %v", err)
			}
			if held := all.Held(); held != 1200 {
				t.Errorf("held %d, want the bound (1000) and the eldest line's 200", held)
			}
			all.endLine(first)
			all.endLine(second)
		})
	})
	t.Run("short line waits for its share only", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			never := make(chan struct{}) // made in the bubble, as all it waits on
			all := NewBuffers(1000)
			for range 4 {
				all.share(100).take(250)
			}
			mine := all.share(100)
			start := time.Now()
			if err := mine.takeWaiting(100, &lineRead{}, patience, never); err != nil {
				t.Errorf("a short line on a link with room: %v", err)
			}
			if took := time.Since(start); took != 0 {
				t.Errorf("it waited %v", took)
			}
		})
	})
}
