package relay_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay"
	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// stdinLogEnv names the file a teeEchoTarget's child copies its stdin to.
const stdinLogEnv = "TAILGATE_TEST_STDIN_LOG"

// teeEchoTarget is the echo child behind tee: every byte tailgate writes
// to the child's stdin is also appended to the returned file, which stays
// readable after the child is gone (the echo child's test/received cannot
// be asked once its session is closed).
func teeEchoTarget(t *testing.T, name string) (relay.Target, string) {
	t.Helper()
	target := echoTarget(t, name)
	log := filepath.Join(t.TempDir(), "stdin.log")
	target.Env[stdinLogEnv] = log
	target.Args = []string{"-c", `tee -a "$` + stdinLogEnv + `" | "$0"`, target.Command}
	target.Command = "sh"
	return target, log
}

// stdinMessages is what the child has read on its stdin so far, decoded.
func stdinMessages(t *testing.T, log string) []map[string]json.RawMessage {
	t.Helper()
	raw, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]json.RawMessage
	for _, line := range bytes.Split(bytes.TrimSpace(raw), []byte("\n")) {
		out = append(out, decoded(t, line))
	}
	return out
}

// Closing a session with a call in flight tells the child that nobody
// waits for the call any more: before its stdin closes, the child reads
// notifications/cancelled for the call, under the id it knows it by; the
// client gets a "request cancelled" error. Session.Close is what DELETE,
// the idle TTL, a reload and shutdown all end a session with (gateway's
// frontSession.close).
func TestCloseSendsCancelledToChild(t *testing.T) {
	target, log := teeEchoTarget(t, "echo")
	b := newBackendTargets(t, []relay.Target{target}, relay.Options{})
	s := open(t, b, nil)
	pid := s.PIDs()[0]
	c := start(t, s, request(`"long"`, "test/hang", `{"long":true}`))
	// The child answers in order: once it answers this, it has read the
	// hanging call.
	received(t, s)

	closeWithin(t, s, 5*time.Second)
	_, final := collect(t, c.r)
	if code, msg := errorOf(t, final); code != jsonrpc.CodeRequestCancelled || string(final.Bytes(final.ID)) != `"long"` {
		t.Errorf("the client got %s (%d %q), want a request-cancelled error for \"long\"", final.Raw, code, msg)
	}
	if !processGone(pid) {
		t.Errorf("child %d left after Close", pid)
	}

	var hangID json.RawMessage
	var cancelled []string
	for _, m := range stdinMessages(t, log) {
		switch string(m["method"]) {
		case `"test/hang"`:
			hangID = m["id"]
		case `"notifications/cancelled"`:
			var p struct {
				RequestID json.RawMessage
				Reason    string
			}
			json.Unmarshal(m["params"], &p)
			if hangID == nil {
				t.Errorf("a cancellation before the call: %s", m["params"])
			}
			cancelled = append(cancelled, string(p.RequestID))
			if p.Reason == "" {
				t.Errorf("a cancellation without a reason: %s", m["params"])
			}
		}
	}
	if hangID == nil {
		t.Fatal("the child never read the call")
	}
	if len(cancelled) != 1 || cancelled[0] != string(hangID) {
		t.Errorf("the child read cancellations of %q, want one of its call %s", cancelled, hangID)
	}
}
