package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// wireLog records the JSON-RPC messages an http.Client reads from the
// gateway, in the order it reads them, on every stream at once. The order
// a client's handlers see is no proof of the order on the wire: go-sdk
// runs notification handlers on a goroutine of their own, while the
// response to a call is taken by the reader, so a call can return before
// the handler of a notification that came before it has run.
type wireLog struct {
	mu   sync.Mutex
	msgs []wireMessage
	rt   http.RoundTripper
}

// wireMessage is what the order checks need of one message.
type wireMessage struct {
	Method string          `json:"method"`
	ID     json.RawMessage `json:"id"`
	Result *struct {
		Content []struct{ Text string } `json:"content"`
	} `json:"result"`
	Error  json.RawMessage `json:"error"`
	Params struct {
		ProgressToken any     `json:"progressToken"`
		Progress      float64 `json:"progress"`
	} `json:"params"`
}

func newWireLog(t *testing.T) *wireLog {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return &wireLog{rt: tr}
}

func (l *wireLog) client() *http.Client { return &http.Client{Transport: l} }

func (l *wireLog) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	resp.Body = &wireBody{ReadCloser: resp.Body, log: l, events: ct == "text/event-stream"}
	return resp, nil
}

func (l *wireLog) add(raw []byte) {
	var m wireMessage
	if json.Unmarshal(raw, &m) != nil {
		return // the legacy stream's endpoint event
	}
	l.mu.Lock()
	l.msgs = append(l.msgs, m)
	l.mu.Unlock()
}

func (l *wireLog) snapshot() []wireMessage {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]wireMessage(nil), l.msgs...)
}

// wireBody records each message as the client reads past its end: an
// event stream's data lines, or a JSON body whole.
type wireBody struct {
	io.ReadCloser
	log    *wireLog
	events bool
	buf    []byte
}

func (b *wireBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.buf = append(b.buf, p[:n]...)
	if b.events {
		for {
			i := bytes.IndexByte(b.buf, '\n')
			if i < 0 {
				break
			}
			if data, ok := bytes.CutPrefix(bytes.TrimRight(b.buf[:i], "\r"), []byte("data:")); ok {
				b.log.add(bytes.TrimSpace(data))
			}
			b.buf = b.buf[i+1:]
		}
	} else if err == io.EOF && len(bytes.TrimSpace(b.buf)) > 0 {
		b.log.add(b.buf)
		b.buf = nil
	}
	return n, err
}

// handledProgress is client options whose progress handler hands each
// notification to the returned channel.
func handledProgress() (*mcp.ClientOptions, <-chan float64) {
	ch := make(chan float64, 1000)
	return &mcp.ClientOptions{ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
		ch <- req.Params.Progress
	}}, ch
}

// checkProgressBeforeResult calls the demo's slow tool with a progress
// token on cs, which reads through wire, and checks what a user watching a
// progress bar notices: by the time the call returns, every one of its
// progress notifications has reached the client, in order, and none comes
// after the result; and the client's handler gets them all, in order.
func checkProgressBeforeResult(t *testing.T, cs *mcp.ClientSession, wire *wireLog, handled <-chan float64) {
	t.Helper()
	const steps = 20
	params := &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"steps": steps, "delayMs": 5}}
	params.SetProgressToken("order")
	res, err := cs.CallTool(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	// Taken at once: whatever the client read after the result is not in
	// it, and the result cannot be in it without what preceded it.
	seen := wire.snapshot()
	want := fmt.Sprintf("done after %d steps", steps)
	if len(res.Content) == 0 || res.Content[0].(*mcp.TextContent).Text != want {
		t.Fatalf("slow answered %+v", res.Content)
	}
	var before []float64
	result := -1
	for i, m := range seen {
		switch {
		case m.Result != nil && len(m.Result.Content) > 0 && m.Result.Content[0].Text == want:
			result = i
		case m.Method == "notifications/progress" && m.Params.ProgressToken == "order" && result < 0:
			before = append(before, m.Params.Progress)
		case m.Method == "notifications/progress" && m.Params.ProgressToken == "order":
			t.Errorf("progress %v came after the result", m.Params.Progress)
		}
	}
	if result < 0 {
		t.Fatalf("the call returned, but its result is not among the %d messages the client read", len(seen))
	}
	if len(before) != steps {
		t.Errorf("%d of %d progress notifications reached the client before the result: %v", len(before), steps, before)
	}
	for i, p := range before {
		if p != float64(i+1) {
			t.Errorf("progress arrived as %v, want 1..%d in order", before, steps)
			break
		}
	}
	// The handler sees them all, in the order they came.
	deadline := time.After(10 * time.Second)
	for i := range steps {
		select {
		case p := <-handled:
			if p != float64(i+1) {
				t.Fatalf("the handler got progress %v as notification %d", p, i+1)
			}
		case <-deadline:
			t.Fatalf("the handler got %d of %d progress notifications within 10s", i, steps)
		}
	}
}

// A call's progress notifications reach the client in order, all of them
// before its result, on every transport: Streamable HTTP (the call's own
// stream), legacy SSE (one stream for every message of the session), and
// a 2026-07-28 client without a session. checkProgressBeforeResult reads
// the order off the wire: go-sdk's handlers run on a goroutine of their
// own and cannot tell.
func TestProgressPrecedesResult(t *testing.T) {
	for _, tc := range []struct {
		name      string
		transport func(base string, hc *http.Client) mcp.Transport
		session   *mcp.ClientSessionOptions
	}{
		{"Streamable HTTP", func(base string, hc *http.Client) mcp.Transport {
			return &mcp.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: hc, DisableStandaloneSSE: true}
		}, legacySession},
		{"legacy SSE", func(base string, hc *http.Client) mcp.Transport {
			return &mcp.SSEClientTransport{Endpoint: base + "/sse", HTTPClient: hc}
		}, legacySession},
		{"sessionless", func(base string, hc *http.Client) mcp.Transport {
			return &mcp.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: hc}
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, base := serveLoopback(t, demoConfig)
			wire := newWireLog(t)
			opts, handled := handledProgress()
			cs, err := mcp.NewClient(&mcp.Implementation{Name: "test-client"}, opts).Connect(context.Background(), tc.transport(base, wire.client()), tc.session)
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			checkProgressBeforeResult(t, cs, wire, handled)
		})
	}
}
