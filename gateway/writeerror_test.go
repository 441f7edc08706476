package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// accessWriteError is the access log's line for a result the client did
// not take whole.
var accessWriteError = regexp.MustCompile(`msg="mcp call" .*method=tools/call tool=big target=demo outcome=write_error duration=\S+ err="wrote (\d+) of (\d+) bytes: [^"]+"`)

// A result the client does not take whole is logged as such, with how much
// was written: before, a 16 MB result whose client went away after 64 KB
// (or stopped reading) was logged outcome=ok, since the write's error was
// dropped; and a client that stopped reading held the call, its handler
// and its budget place for as long as it kept the connection open.
func TestAccessLogTellsAFailedWrite(t *testing.T) {
	const size = 24 << 20 // more than loopback's socket buffers hold
	for _, tc := range []struct {
		name string
		// leave is what the client does after reading the start of the
		// result; it returns once the gateway should have given up.
		leave func(t *testing.T, body io.ReadCloser, logged func() bool)
	}{
		{"client closes its connection", func(t *testing.T, body io.ReadCloser, logged func() bool) {
			body.Close()
		}},
		{"client stops reading", func(t *testing.T, body io.ReadCloser, logged func() bool) {
			defer body.Close()
			waitFor(t, "the write stall limit to end the answer", logged)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncBuffer
			srv, base := serveLoopbackOpts(t, demoConfig, Options{
				Logger:            slog.New(slog.NewTextHandler(&logs, nil)),
				WriteStallTimeout: time.Second,
			})
			client := &http.Client{Transport: &http.Transport{}}
			t.Cleanup(client.CloseIdleConnections)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			post := func(session, body string) *http.Response {
				t.Helper()
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/mcp", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				if session != "" {
					req.Header.Set("Mcp-Session-Id", session)
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				return resp
			}
			resp := post("", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"reader","version":"1"}}}`)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			session := resp.Header.Get("Mcp-Session-Id")
			resp = post(session, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
			resp.Body.Close()

			resp = post(session, fmt.Sprintf(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"big","arguments":{"bytes":%d}}}`, size))
			if n, err := io.CopyN(io.Discard, resp.Body, 64<<10); err != nil {
				t.Fatalf("read %d bytes of the result: %v", n, err)
			}
			logged := func() bool { return accessWriteError.MatchString(logs.String()) }
			tc.leave(t, resp.Body, logged)
			waitFor(t, "the access log line of the call", func() bool {
				return strings.Contains(logs.String(), "tool=big")
			})
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("gateway log:\n%s", logs.String())
				}
			})
			waitFor(t, "outcome=write_error", logged)
			m := accessWriteError.FindStringSubmatch(logs.String())
			wrote, _ := strconv.Atoi(m[1])
			of, _ := strconv.Atoi(m[2])
			if of < size || wrote >= of {
				t.Errorf("the log says %d of %d bytes were written, of a result of more than %d", wrote, of, size)
			}
			if strings.Contains(logs.String(), "tool=big target=demo outcome=ok") {
				t.Errorf("the call is also logged ok:\n%s", logs.String())
			}
			// The answer the client did not take holds nothing any more.
			waitFor(t, "the answer's bytes given back", func() bool { return srv.buffers.Held() == 0 })
		})
	}
}
