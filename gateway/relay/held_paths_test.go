package relay_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay"
	"github.com/tailgate-dev/tailgate/mcpstdio/buffers"
)

// A notification a child sends while a sessionless caller's call is parked
// (waiting for the caller's input) goes to the caller's standalone
// channel, not to the parked call's placeholder, which nobody reads: it
// held its bytes for good, and a second one blocked the child's reader.
func TestNothingHeldByAParkedCall(t *testing.T) {
	bound := buffers.New(0)
	b := newBackendTargets(t, []relay.Target{echoTarget(t, "echo")}, relay.Options{Buffers: bound})
	notified := make(chan []byte, 4)
	s := openWith(t, b, relay.OpenParams{ID: t.Name(), Sessionless: true, Notify: func(msg []byte) { notified <- msg }})
	note := `{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"while parked"}}`
	// The child writes the notification 300 ms from now, twice.
	for i := range 2 {
		if _, final := call(t, s, 10+i, "test/later", `{"ms":300,"line":`+note+`}`); final == nil || !final.Result.Has() {
			t.Fatalf("test/later: %s", rawOf(final))
		}
	}
	_, final := call(t, s, 2, "test/ask", "")
	var res struct {
		ResultType    string                     `json:"resultType"`
		RequestState  string                     `json:"requestState"`
		InputRequests map[string]json.RawMessage `json:"inputRequests"`
	}
	decodeResult(t, final, &res)
	if res.ResultType != "input_required" {
		t.Fatalf("test/ask: %s, want input_required", final.Raw)
	}
	for range 2 {
		select {
		case <-notified:
		case <-time.After(10 * time.Second):
			t.Fatal("the notifications sent while the call was parked never reached the caller")
		}
	}
	var key string
	for k := range res.InputRequests {
		key = k
	}
	_, final = call(t, s, 3, "test/ask", `{"requestState":"`+res.RequestState+`","inputResponses":{"`+key+`":{"roots":[]}}}`)
	if final == nil || !final.Result.Has() {
		t.Fatalf("retry: %s", rawOf(final))
	}
	eventually(t, "nothing held once every call ended", func() bool { return bound.Held() == 0 })
}

// A long message on a call's stream (progress, a server request) is
// charged once: the copy handed on takes over what its read held. Charged
// twice, one over half the link's share was dropped though nothing else
// was held.
func TestLongMessageOnACallsStream(t *testing.T) {
	bound := buffers.New(4 << 20)
	b := newBackendTargets(t, []relay.Target{echoTarget(t, "echo")},
		relay.Options{Buffers: bound, MaxMessageBytes: 1 << 20})
	s := open(t, b, nil)
	progress := `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"tok","progress":1,"message":"` + strings.Repeat("p", 600<<10) + `"}}`
	frames, final := call(t, s, 1, "test/emit", `{"_meta":{"progressToken":"tok"},"lines":[`+progress+`]}`)
	if final == nil || !final.Result.Has() {
		t.Fatalf("final: %s", rawOf(final))
	}
	if len(frames) != 1 || len(frames[0]) < 600<<10 {
		t.Errorf("%d progress frames, want 1 of %d bytes (MaxMessageBytes 1 MiB, nothing else held)", len(frames), len(progress))
	}
	eventually(t, "nothing held", func() bool { return bound.Held() == 0 })
}

// Clients that do not read, holding the gateway's whole bound, do not
// hold back the small messages of every other child: a client that reads
// at once keeps its target.
func TestUnreadAnswersDoNotStopOtherChildren(t *testing.T) {
	bound := buffers.New(4 << 20) // a link's share: 1 MiB
	opts := relay.Options{Buffers: bound, MaxMessageBytes: 1 << 20, HeldPatience: time.Second}
	slow := newBackend(t, opts, nil)
	var sessions []*relay.Session
	for i := range 4 {
		sessions = append(sessions, openWith(t, slow, relay.OpenParams{ID: fmt.Sprint(t.Name(), i)}))
	}
	bigCalls(t, sessions, 1, 900<<10) // never read
	eventually(t, "the slow clients' answers held", func() bool { return bound.Held() >= 3<<20 })

	other := newBackendTargets(t, []relay.Target{echoTarget(t, "echo")}, opts)
	s := open(t, other, nil)
	for i := range 3 {
		// Beyond HeldPatience: a child held back would be given up.
		if _, final := call(t, s, i+1, "test/delay", `{"ms":500}`); final == nil || final.Error.Has() {
			t.Fatalf("call %d of a client that reads at once: %s", i+1, rawOf(final))
		}
	}
}

// A client that leaves gives back what its call holds, and does not wait
// for the child to take the cancellation: a child held back (by this
// caller's other answers, not taken), whose stdin is full meanwhile,
// reads nothing until its reader goes on.
func TestCloseFreesAHeldBackChild(t *testing.T) {
	bound := buffers.New(4 << 20)
	waits := make(chan struct{}, 1)
	bound.HearWaits(waits)
	b := newBackendTargets(t, []relay.Target{echoTarget(t, "echo")},
		relay.Options{Buffers: bound, MaxMessageBytes: 1 << 20, HeldPatience: 4 * time.Second})
	s := open(t, b, nil)
	pad := func(n int) string { return strings.Repeat("a", n) }
	x := `{"jsonrpc":"2.0","id":"x1","method":"roots/list","params":{"pad":"` + pad(900<<10) + `"}}`
	y := `{"jsonrpc":"2.0","id":"y1","method":"roots/list","params":{"pad":"` + pad(60<<10) + `"}}`
	a := start(t, s, request("1", "test/emit", `{"lines":[`+x+`,`+y+`]}`))
	select {
	case <-waits:
	case <-time.After(10 * time.Second):
		t.Fatal("the reader never waited")
	}
	// Another call fills the child's stdin: the child, blocked on its
	// stdout, reads nothing, and the write blocks.
	go start(t, s, request("2", "echo/big", `{"pad":"`+pad(512<<10)+`"}`))
	time.Sleep(300 * time.Millisecond) // no event says a write is blocked
	t0 := time.Now()
	a.r.Close()
	if took := time.Since(t0); took > time.Second {
		t.Errorf("Reply.Close took %v (HeldPatience 4s): it waited for the held-back child", took)
	}
}
