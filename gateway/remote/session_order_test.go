package remote

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tailgate-dev/tailgate/mcpstdio/buffers"
)

// sessionServer is a Streamable HTTP server of the session era that
// records what it is sent, one line a request: the HTTP method, the
// JSON-RPC method, the Mcp-Protocol-Version and Mcp-Session-Id headers.
// Its GET stream stays open until the client leaves.
type sessionServer struct {
	mu   sync.Mutex
	seen []string
}

func (s *sessionServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	json.Unmarshal(body, &m)
	s.mu.Lock()
	s.seen = append(s.seen, r.Method+" "+m.Method+" version="+r.Header.Get("Mcp-Protocol-Version")+" session="+r.Header.Get("Mcp-Session-Id"))
	s.mu.Unlock()
	switch {
	case r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	case r.Method == http.MethodDelete:
		w.WriteHeader(http.StatusOK)
	case m.Method == "initialize":
		w.Header().Set("Mcp-Session-Id", "s1")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(m.ID)+`,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"s","version":"1"}}}`)
	default:
		w.WriteHeader(http.StatusAccepted)
	}
}

func (s *sessionServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// A session's messages reach the server in the protocol's order:
// initialize, notifications/initialized, the GET stream, and the DELETE
// last; every request after initialize carries the version it agreed, and
// the session. A session closed as soon as it is initialized (a caller
// that leaves at once) still says notifications/initialized before its
// DELETE, and opens no GET stream after it. Failed before: the GET was
// opened on initialize's answer, ahead of notifications/initialized, and
// Close sent the DELETE at once, ahead of both (which were then lost).
func TestSessionMessageOrder(t *testing.T) {
	const (
		initialize  = "POST initialize version= session="
		initialized = "POST notifications/initialized version=2025-06-18 session=s1"
		get         = "GET  version=2025-06-18 session=s1"
		del         = "DELETE  version=2025-06-18 session=s1"
	)
	for _, tc := range []struct {
		name string
		// listening: Close once the server has the GET stream.
		listening bool
		want      [][]string // one of these
	}{
		{"closed at once", false, [][]string{{initialize, initialized, del}, {initialize, initialized, get, del}}},
		{"closed while listening", true, [][]string{{initialize, initialized, get, del}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 5 {
				server := &sessionServer{}
				upstream := httptest.NewServer(server)
				answers := make(chan []byte, 4)
				link := New(Options{Name: "order", URL: upstream.URL}).Dial(nil, nil, func(msg []byte, _ *buffers.Charge) {
					answers <- bytes.Clone(msg)
				}, buffers.New(1<<30).Share(1<<20), slog.New(slog.DiscardHandler))
				if err := link.Write([]byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"tailgate","version":"dev"}}}`), nil, nil); err != nil {
					t.Fatal(err)
				}
				select {
				case <-answers:
				case <-time.After(10 * time.Second):
					t.Fatal("no answer to initialize")
				}
				if err := link.Write([]byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`), nil, nil); err != nil {
					t.Fatal(err)
				}
				for deadline := time.Now().Add(10 * time.Second); tc.listening && !slices.Contains(server.requests(), get); time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("no GET stream 10s after notifications/initialized: %q", server.requests())
					}
				}
				link.Close(5 * time.Second)
				upstream.Close() // waits for the GET stream's end
				if got := server.requests(); !slices.ContainsFunc(tc.want, func(w []string) bool { return slices.Equal(got, w) }) {
					t.Fatalf("the server was sent, in order:\n%q\nwant one of\n%q", got, tc.want)
				}
			}
		})
	}
}
