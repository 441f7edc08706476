package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// peerClient is an HTTP client whose connections come from local address
// from (127.0.0.x): a peer of its own to the gateway.
func peerClient(from string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// chunked makes req's body of unknown length (sent chunked), as a client
// that streams its body does.
func chunked(req *http.Request, body io.Reader) *http.Request {
	req.Body = io.NopCloser(body)
	req.ContentLength = -1
	req.GetBody = nil
	return req
}

// A handful of peers cannot lock out the rest, nor hold more than their
// share: 4 peers × 16 listens, or 4 peers × 16 trickled bodies, sent
// chunked, leave the gateway serving a fifth peer; a 17th listen of one
// peer is refused (429, its share), and a listen holds its body, not the
// 4 MiB a body of unknown length may be. Failed before: each such request
// held 4 MiB for its whole life, 64 of them the gateway's 256 MiB, and
// every other caller got 503.
func TestPeersCannotLockOut(t *testing.T) {
	for _, kind := range []string{"listens", "trickles"} {
		t.Run(kind, func(t *testing.T) {
			s, base := serveLoopback(t, demoConfig)
			f := frontOf(t, s, "mcp")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var wg sync.WaitGroup
			defer wg.Wait()
			defer cancel()
			const peers, each = 4, 16
			open := func(hc *http.Client) (*http.Response, error) {
				if kind == "listens" {
					req := modernRequest(t, base, "subscriptions/listen", "", `"notifications":{"toolsListChanged":true}`)
					body, _ := io.ReadAll(req.Body)
					return hc.Do(chunked(req.WithContext(ctx), strings.NewReader(string(body))))
				}
				// A body that starts, and never ends.
				pr, pw := io.Pipe()
				go func() {
					pw.Write([]byte(`{"jsonrpc":"2.0",`))
					<-ctx.Done()
					pw.CloseWithError(ctx.Err())
				}()
				req := sessionlessRequest(t, base, "tools/list")
				return hc.Do(chunked(req.WithContext(ctx), pr))
			}
			for p := range peers {
				hc := peerClient(fmt.Sprintf("127.0.0.%d", 2+p))
				for range each {
					if kind == "listens" {
						resp, err := open(hc)
						if err != nil {
							t.Skipf("cannot bind 127.0.0.x: %v", err)
						}
						ev := newEvents(resp.Body)
						if msg, _ := ev.next(t, 10*time.Second); !strings.Contains(string(msg), "notifications/subscriptions/acknowledged") {
							t.Fatalf("peer %d's listen: %d %s", p, resp.StatusCode, msg)
						}
						wg.Go(func() { defer resp.Body.Close(); <-ctx.Done() })
						continue
					}
					wg.Go(func() {
						if resp, err := open(hc); err == nil {
							resp.Body.Close()
						}
					})
				}
			}
			// Every one is in: held by the gateway.
			deadline := time.Now().Add(10 * time.Second)
			for {
				f.budget.mu.Lock()
				calls, bytes := f.budget.calls, f.budget.bytes
				f.budget.mu.Unlock()
				if calls >= peers*each {
					if kind == "listens" && bytes > 1<<20 {
						t.Errorf("%d listens hold %d bytes of body budget, want what their bodies are", calls, bytes)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d requests held after 10s", calls, peers*each)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if kind == "listens" {
				resp, err := open(peerClient("127.0.0.2"))
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "listens") {
					t.Errorf("a 17th listen of one peer: %d %s, want 429 naming listens", resp.StatusCode, body)
				}
			}
			resp, err := peerClient("127.0.0.9").Do(sessionlessRequest(t, base, "tools/list"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"echo"`) {
				t.Errorf("another peer, while %d peers hold %d %s each: %d %s", peers, each, kind, resp.StatusCode, body)
			}
		})
	}
}

// A stateless route's requests each open children: they count against
// maxSessions, so that 40 concurrent calls through a cap of 2 never run
// more than 2 children; the others get 503 naming the cap. Failed before:
// all 40 ran at once.
func TestStatelessModeHonoursMaxSessions(t *testing.T) {
	s, base := serveLoopback(t, "config:\n  mcp:\n    maxSessions: 2\n"+strings.Replace(demoConfig, "      - mcp:\n", "      - mcp:\n          statefulMode: stateless\n", 1))
	f := frontOf(t, s, "mcp")
	stop := make(chan struct{})
	most := make(chan int)
	go func() {
		n := 0
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			n = max(n, f.backend.Sessions())
			select {
			case <-stop:
				most <- n
				return
			case <-t.C:
			}
		}
	}()
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := range 40 {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"slow","arguments":{"steps":3,"delayMs":100}}}`, i)))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			resp, body := do(t, req)
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
			if resp.StatusCode == http.StatusServiceUnavailable && !strings.Contains(string(body), "too many MCP sessions") {
				t.Errorf("refused: %s, want the cap named", body)
			}
		})
	}
	wg.Wait()
	close(stop)
	if n := <-most; n > 2 {
		t.Errorf("%d sessions of children at once, want at most maxSessions 2", n)
	}
	if codes[http.StatusOK] == 0 || codes[http.StatusServiceUnavailable] == 0 {
		t.Errorf("answers %v, want some served and the rest refused", codes)
	}
	st := f.backend.Stats()
	t.Logf("answers %v; %d children started", codes, st.ChildrenStarted)
}

// Callers that only listen cannot hold every place of the sessionless
// callers' cap: past it, the one that has listened longest gives way (its
// listen ends; a client listens again) and a new caller is served.
// Failed before: every place held by a listen, new callers got 503.
func TestListeningCallersGiveWay(t *testing.T) {
	_, base := serveLoopback(t, "config:\n  mcp:\n    maxSessions: 2\n"+demoConfig)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var listens []*events
	for _, from := range []string{"127.0.0.2", "127.0.0.3"} {
		req := modernRequest(t, base, "subscriptions/listen", "", `"notifications":{"toolsListChanged":true}`)
		resp, err := peerClient(from).Do(req.WithContext(ctx))
		if err != nil {
			t.Skipf("cannot bind %s: %v", from, err)
		}
		defer resp.Body.Close()
		ev := newEvents(resp.Body)
		if msg, _ := ev.next(t, 10*time.Second); !strings.Contains(string(msg), "notifications/subscriptions/acknowledged") {
			t.Fatalf("%s's listen: %d %s", from, resp.StatusCode, msg)
		}
		listens = append(listens, ev)
	}
	resp, err := peerClient("127.0.0.4").Do(sessionlessRequest(t, base, "tools/list"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"echo"`) {
		t.Fatalf("a third caller while two listen: %d %s", resp.StatusCode, body)
	}
	// The first listener gave way: its stream ends.
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-listens[0].c:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("the first listener's stream still open 10s after it gave way")
		}
	}
}
