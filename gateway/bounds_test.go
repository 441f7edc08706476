package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

// flood writes SSE data lines to w without ever ending the event, until
// the reader leaves or stop closes.
func flood(w io.Writer, flush func(), stop <-chan struct{}) {
	line := []byte("data: " + strings.Repeat("x", 64<<10) + "\n")
	for {
		select {
		case <-stop:
			return
		default:
		}
		if _, err := w.Write(line); err != nil {
			return
		}
		flush()
	}
}

// lockedWriter lets a test write into a stream the SDK also writes to,
// until its handler returns (end).
type lockedWriter struct {
	http.ResponseWriter
	mu    sync.Mutex
	ended bool
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return 0, io.ErrClosedPipe
	}
	return w.ResponseWriter.Write(p)
}

func (w *lockedWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.ended {
		w.ResponseWriter.(http.Flusher).Flush()
	}
}

func (w *lockedWriter) end() {
	w.mu.Lock()
	w.ended = true
	w.mu.Unlock()
}

// heapPeak samples the heap until stop is called, and says by how much
// its peak passed what it was at the start.
func heapPeak() (stop func() uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > base && ms.HeapAlloc-base > peak.Load() {
				peak.Store(ms.HeapAlloc - base)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		<-finished
		return peak.Load()
	}
}

// A remote target that answers a call with one event that never ends, or
// with an answer longer than config.mcp.maxMessageBytes, fails that call
// at once with an error naming the target and the limit, and the gateway
// holds no more of it than the limit: before, the event grew the gateway
// without bound (854 MB in 17 s) and the call was never answered.
func TestRemoteTargetMessageBound(t *testing.T) {
	const limit = 1 << 20
	big := `{"jsonrpc":"2.0","id":ID,"result":{"content":[{"type":"text","text":"` + strings.Repeat("y", 2*limit) + `"}]}}`
	for _, tc := range []struct {
		name, transport string
		reply           func(w http.ResponseWriter, r *http.Request, stop <-chan struct{})
	}{
		{"an endless event", "mcp", func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			flood(w, w.(http.Flusher).Flush, stop)
		}},
		{"an endless line", "mcp", func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, "data: ")
			chunk := []byte(strings.Repeat("z", 64<<10))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}},
		{"a JSON answer too long", "mcp", func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
			body, _ := io.ReadAll(r.Body)
			id := strings.SplitN(strings.SplitN(string(body), `"id":`, 2)[1], ",", 2)[0]
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, strings.Replace(big, "ID", id, 1))
		}},
		{"a JSON answer too long, its length unsaid", "mcp", func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
			body, _ := io.ReadAll(r.Body)
			id := strings.SplitN(strings.SplitN(string(body), `"id":`, 2)[1], ",", 2)[0]
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			io.WriteString(w, strings.Replace(big, "ID", id, 1))
		}},
		{"an endless event on the SSE stream", "sse", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stop := make(chan struct{})
			var handler http.Handler
			if tc.transport == "mcp" {
				sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil)
				handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.Header.Get("Mcp-Method") == "tools/call" {
						tc.reply(w, r, stop)
						return
					}
					sdk.ServeHTTP(w, r)
				})
			} else {
				// The legacy transport's one stream carries every answer:
				// the call is answered there, with an event that never ends.
				sdk := mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil)
				streams := make(chan *lockedWriter, 1)
				handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.Method == http.MethodGet {
						lw := &lockedWriter{ResponseWriter: w}
						defer lw.end()
						select {
						case streams <- lw:
						default:
						}
						sdk.ServeHTTP(lw, r)
						return
					}
					body, _ := io.ReadAll(r.Body)
					r.Body = io.NopCloser(strings.NewReader(string(body)))
					if strings.Contains(string(body), `"tools/call"`) {
						lw := <-streams
						w.WriteHeader(http.StatusAccepted)
						go flood(lw, lw.Flush, stop)
						return
					}
					sdk.ServeHTTP(w, r)
				})
			}
			upstream := httptest.NewServer(handler)
			t.Cleanup(upstream.Close)
			t.Cleanup(func() { close(stop) })
			cfg := strings.Replace(demoConfig, `            stdio: {cmd: DEMO}`, `            `+tc.transport+`: {host: "`+upstream.URL+`"}`, 1)
			_, base := serveLoopback(t, "config:\n  mcp:\n    maxMessageBytes: 1048576\n"+cfg)
			cs := connect(t, base+"/mcp")
			defer cs.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			peak := heapPeak()
			start := time.Now()
			_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}})
			took, grew := time.Since(start), peak()
			if err == nil || !strings.Contains(err.Error(), `target "demo"`) || !strings.Contains(err.Error(), "longer than 1048576 bytes") {
				t.Errorf("call: %v, want an error naming the target and the limit", err)
			}
			if took > 5*time.Second {
				t.Errorf("the call failed after %v, want at once", took.Round(time.Millisecond))
			}
			// The client's copy of the call, the server's of its answer
			// and the gateway's (at most the limit) are all in this heap.
			if grew > 48<<20 {
				t.Errorf("the heap grew by %d MiB during the call, want far less (the limit is 1 MiB)", grew>>20)
			}
			t.Logf("failed after %v; the heap grew by at most %.1f MiB", took.Round(time.Millisecond), float64(grew)/(1<<20))
		})
	}
}
