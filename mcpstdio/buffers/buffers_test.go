package buffers

import (
	"io"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// Buffers are bounded per link and in all: a link holding its share, or
// links holding the whole, refuse more, and give it back when done.
func TestBuffers(t *testing.T) {
	all := New(1000)
	a, b := all.Share(100), all.Share(100)
	if a.max != 250 {
		t.Fatalf("a link's share is %d, want a quarter of 1000", a.max)
	}
	if err := a.Take(250); err != nil {
		t.Fatal(err)
	}
	if err := a.Take(1); err == nil || !OverBound(err) {
		t.Errorf("past a link's share: %v", err)
	}
	c, d := all.Share(100), all.Share(100)
	for _, s := range []*Share{b, c, d} {
		if err := s.Take(250); err != nil {
			t.Fatal(err)
		}
	}
	e := all.Share(100)
	if err := e.Take(1); err == nil || !strings.Contains(err.Error(), "in all") {
		t.Errorf("past the whole: %v", err)
	}
	a.Give(250)
	if err := e.Take(1); err != nil {
		t.Errorf("after a link gave back: %v", err)
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
			all := New(1000)
			s := all.Share(100)
			s.Take(250)
			go func() {
				time.Sleep(5 * time.Second)
				s.Give(100)
			}()
			start := time.Now()
			if err := s.TakeWaiting(100, &LineRead{}, patience, never); err != nil {
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
			all := New(1000)
			s := all.Share(100)
			s.Take(250)
			var lr LineRead
			start := time.Now()
			err := s.TakeWaiting(1, &lr, patience, never)
			if !OverBound(err) || !strings.Contains(err.Error(), "for 30s") {
				t.Errorf("after patience: %v", err)
			}
			if took := time.Since(start); took != patience {
				t.Errorf("gave up after %v, want %v", took, patience)
			}
			// The same line waits no longer a second time.
			start = time.Now()
			s.TakeWaiting(1, &lr, patience, never)
			if took := time.Since(start); took != 0 {
				t.Errorf("the same line waited %v more", took)
			}
		})
	})
	t.Run("link gone", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			all := New(1000)
			s := all.Share(100)
			s.Take(250)
			stop := make(chan struct{})
			go func() {
				time.Sleep(time.Second)
				close(stop)
			}()
			if err := s.TakeWaiting(1, &LineRead{}, patience, stop); err != io.ErrClosedPipe {
				t.Errorf("link gone: %v", err)
			}
		})
	})
	t.Run("eldest long line passes the bound", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			never := make(chan struct{}) // made in the bubble, as all it waits on
			all := New(1000)
			older, younger := all.Share(100), all.Share(100)
			// Four links hold the whole: two lines partly read, two
			// answers nobody takes.
			all.Share(100).Take(250)
			all.Share(100).Take(250)
			first, second := all.StartLine(), all.StartLine()
			older.Take(250)
			younger.Take(250)
			if err := younger.TakeWaiting(1, &LineRead{Seq: second}, patience, never); !OverBound(err) {
				t.Errorf("the younger line did not wait: %v", err)
			}
			if err := older.TakeWaiting(200, &LineRead{Seq: first}, patience, never); err == nil {
				t.Errorf("the eldest line passed its link's share")
			}
			older.Give(200)          // an answer of its link went to a client
			all.Share(100).Take(200) // and another link took the room
			if err := younger.TakeWaiting(1, &LineRead{Seq: second}, patience, never); !OverBound(err) {
				t.Errorf("the younger line did not wait: %v", err)
			}
			if err := older.TakeWaiting(200, &LineRead{Seq: first}, patience, never); err != nil {
				t.Errorf("the eldest line, within its share, waited: %v", err)
			}
			if held := all.Held(); held != 1200 {
				t.Errorf("held %d, want the bound (1000) and the eldest line's 200", held)
			}
			all.EndLine(first)
			all.EndLine(second)
		})
	})
	t.Run("short line waits for its share only", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			never := make(chan struct{}) // made in the bubble, as all it waits on
			all := New(1000)
			for range 4 {
				all.Share(100).Take(250)
			}
			mine := all.Share(100)
			start := time.Now()
			if err := mine.TakeWaiting(100, &LineRead{}, patience, never); err != nil {
				t.Errorf("a short line on a link with room: %v", err)
			}
			if took := time.Since(start); took != 0 {
				t.Errorf("it waited %v", took)
			}
		})
	})
}
