package gateway

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkUnreadResults measures what clients that ask for large results
// and do not read them at once cost the gateway: 30 callers, each on a
// session (and child) of its own, ask for a 16 MB result at once and read
// none of it for 5 s, then read it all. It reports the gateway's peak heap
// above idle, and how many of the results came whole.
//
//	go test -run '^$' -bench UnreadResults -benchtime=1x -timeout 10m ./gateway/
func BenchmarkUnreadResults(b *testing.B) {
	const callers, size = 30, 16 << 20
	_, base := serveLoopbackOpts(b, demoConfig, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	post := func(client *http.Client, session, body string) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if session != "" {
			req.Header.Set("Mcp-Session-Id", session)
		}
		return client.Do(req)
	}
	var whole, peakSum float64
	for b.Loop() {
		clients := make([]*http.Client, callers)
		sessions := make([]string, callers)
		for i := range callers {
			clients[i] = &http.Client{Transport: &http.Transport{}}
			resp, err := post(clients[i], "", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"unread","version":"1"}}}`)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			sessions[i] = resp.Header.Get("Mcp-Session-Id")
			if resp, err := post(clients[i], sessions[i], `{"jsonrpc":"2.0","method":"notifications/initialized"}`); err == nil {
				resp.Body.Close()
			}
		}
		peakOf := heapPeak()
		read := make(chan struct{})
		var wg sync.WaitGroup
		var got atomic.Int64
		for i := range callers {
			wg.Go(func() {
				resp, err := post(clients[i], sessions[i], fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"big","arguments":{"bytes":%d}}}`, size))
				if err != nil {
					b.Error(err)
					return
				}
				defer resp.Body.Close()
				<-read
				body, _ := io.ReadAll(resp.Body)
				if bytes.Count(body, []byte("x")) >= size {
					got.Add(1)
				}
			})
		}
		time.Sleep(5 * time.Second) // the callers do not read
		close(read)
		wg.Wait()
		for _, c := range clients {
			c.CloseIdleConnections()
		}
		peakSum += float64(peakOf()) / (1 << 20)
		whole += float64(got.Load())
	}
	b.ReportMetric(peakSum/float64(b.N), "peak-heap-MB")
	b.ReportMetric(whole/float64(b.N), "whole-results")
}
