package relay_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay"
	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
	"github.com/tailgate-dev/tailgate/mcpstdio/buffers"
)

// bigCalls starts n calls of the demo's big tool on each session, for
// size bytes each.
func bigCalls(t *testing.T, sessions []*relay.Session, n, size int) []*routed {
	t.Helper()
	var pending []*routed
	for _, s := range sessions {
		for j := range n {
			pending = append(pending, start(t, s, request(strconv.Itoa(100+j), "tools/call", `{"name":"big","arguments":{"bytes":`+strconv.Itoa(size)+`}}`)))
		}
	}
	return pending
}

// takeAll reads every call's answer at once, as clients on streams of
// their own do, and returns the final responses.
func takeAll(t *testing.T, pending []*routed) []*jsonrpc.Message {
	t.Helper()
	finals := make([][]byte, len(pending))
	var wg sync.WaitGroup
	for i, c := range pending {
		wg.Go(func() {
			for f := range c.r.C() {
				if f.Final {
					finals[i] = f.Data
				}
				f.Release()
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the answers did not all come within 20s of being read")
	}
	out := make([]*jsonrpc.Message, len(finals))
	for i, f := range finals {
		if f != nil {
			out[i] = parse(t, f)
		}
	}
	return out
}

// What a target says counts against the gateway's bound, per link and
// in all, from the moment it is read until the client has taken it: while
// clients do not read, the gateway stops reading their children (which
// wait on their own output) instead of holding every answer they write;
// once the clients read, every answer comes whole and nothing stays
// charged.
func TestUnreadAnswersHoldTheChildBack(t *testing.T) {
	const size = 2 << 20
	for _, tc := range []struct {
		name string
		// all is the gateway's bound; each link's share is one 3 MiB
		// message (more than a quarter of all).
		all               int64
		sessions, perCall int
	}{
		// One caller asks for 6 answers of 2 MiB and reads none: its link
		// holds one, and the child waits.
		{name: "per link", all: 12 << 20, sessions: 1, perCall: 6},
		// Three callers ask for one each: the gateway's 5 MiB and the
		// eldest line's allowance hold two.
		{name: "in all", all: 5 << 20, sessions: 3, perCall: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bound := buffers.New(tc.all)
			waits := make(chan struct{}, 1)
			bound.HearWaits(waits)
			b := newBackend(t, relay.Options{Buffers: bound, MaxMessageBytes: 3 << 20}, nil)
			var sessions []*relay.Session
			for i := range tc.sessions {
				sessions = append(sessions, openWith(t, b, relay.OpenParams{ID: fmt.Sprint(t.Name(), i)}))
			}
			pending := bigCalls(t, sessions, tc.perCall, size)
			select {
			case <-waits:
			case <-time.After(20 * time.Second):
				t.Fatalf("the gateway kept reading while %d answers of %d bytes were not taken (holding %d bytes)", len(pending), size, bound.Held())
			}
			// A link holds at most its share; the gateway at most its bound
			// and a share more (the eldest line may pass it).
			if held := bound.Held(); held > min(tc.all, 3<<20+1) && tc.sessions == 1 || held > tc.all+3<<20+1 {
				t.Errorf("held %d bytes while its clients do not read, over the bound", held)
			}
			for i, final := range takeAll(t, pending) {
				if got := len(text(t, final)); got != size {
					t.Errorf("call %d: %d bytes of text, want %d", i, got, size)
				}
			}
			eventually(t, "every answer's bytes given back", func() bool { return bound.Held() == 0 })
		})
	}
}

// A child held back longer than the link's patience is given up: the
// calls it had not answered get an error that names the target and the
// bound, and what it had answered still arrives whole.
func TestHeldBackPastPatience(t *testing.T) {
	const size = 2 << 20
	bound := buffers.New(12 << 20) // a link's share: 3 MiB
	b := newBackend(t, relay.Options{Buffers: bound, MaxMessageBytes: 3 << 20, HeldPatience: 200 * time.Millisecond}, nil)
	s := open(t, b, nil)
	pending := bigCalls(t, []*relay.Session{s}, 3, size)
	// The client takes nothing until the calls have ended one way or the
	// other: each call's final frame waits in its channel.
	eventually(t, "every call ended", func() bool {
		for _, c := range pending {
			if len(c.r.C()) == 0 {
				return false
			}
		}
		return true
	})
	whole, failed := 0, 0
	for i, final := range takeAll(t, pending) {
		if final.Error.Has() {
			failed++
			if _, msg := errorOf(t, final); !strings.Contains(msg, `"demo"`) || !strings.Contains(msg, "not yet taken") {
				t.Errorf("call %d: error %q names neither the target nor the bound", i, msg)
			}
			continue
		}
		if got := len(text(t, final)); got != size {
			t.Errorf("call %d: %d bytes of text, want %d", i, got, size)
		}
		whole++
	}
	if whole != 1 || failed != 2 {
		t.Errorf("%d answers whole and %d failed, want 1 and 2", whole, failed)
	}
	eventually(t, "every answer's bytes given back", func() bool { return bound.Held() == 0 })
}
