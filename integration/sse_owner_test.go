package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// sseStream is a legacy SSE session opened with GET /sse: the endpoint it
// names and its messages as they arrive.
type sseStream struct {
	endpoint string
	messages chan string
	cancel   context.CancelFunc
}

// openSSE opens a legacy SSE stream from n to url and waits for its
// endpoint event.
func openSSE(t *testing.T, n *gatewaytest.Node, url string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var resp *http.Response
	deadline := time.Now().Add(15 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Header.Set("Accept", "text/event-stream")
		var err error
		resp, err = n.Client().Do(req)
		if err == nil {
			break
		}
		if !gatewaytest.Retryable(err) || time.Now().After(deadline) {
			t.Fatalf("%s: GET %s: %v", n.Name, url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: GET %s: %s", n.Name, url, resp.Status)
	}
	s := &sseStream{messages: make(chan string, 100), cancel: cancel}
	endpoint := make(chan string, 1)
	go func() {
		defer resp.Body.Close()
		defer close(s.messages)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var event string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data := strings.TrimPrefix(line, "data: ")
				if event == "endpoint" {
					endpoint <- data
				} else {
					s.messages <- data
				}
			}
		}
	}()
	select {
	case s.endpoint = <-endpoint:
	case <-time.After(10 * time.Second):
		t.Fatal("no endpoint event on the SSE stream")
	}
	return s
}

// post sends a JSON-RPC message from n to path on the gateway's port 3000
// and returns the status.
func postSSE(t *testing.T, n *gatewaytest.Node, gw *gatewaytest.Gateway, path, body string, header map[string]string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, gw.URL(3000, path), strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := n.Client().Do(req)
	if err != nil {
		t.Fatalf("%s: POST %s: %v", n.Name, path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// next waits for the message with JSON-RPC id on the stream, failing if a
// message with any of the forbidden ids comes first.
func (s *sseStream) next(t *testing.T, id int, forbidden ...int) map[string]any {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case data, ok := <-s.messages:
			if !ok {
				t.Fatalf("the SSE stream ended before the answer to %d", id)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(data), &m); err != nil {
				t.Fatalf("message %q: %v", data, err)
			}
			got, _ := m["id"].(float64)
			for _, f := range forbidden {
				if _, isID := m["id"]; isID && int(got) == f {
					t.Fatalf("the victim's stream carries the answer to another node's call %d: %s", f, data)
				}
			}
			if _, isID := m["id"]; isID && int(got) == id {
				return m
			}
		case <-timeout:
			t.Fatalf("no answer to %d on the SSE stream", id)
		}
	}
}

// A legacy SSE session belongs to the node that opened it. Another node
// that learns its id cannot post into it — by /sse?sessionId=, by
// go-sdk's /sse?sessionid= spelling, or by Mcp-Session-Id on /sse or the
// Streamable HTTP path — and so cannot run calls under the victim's
// identity and policy: each attempt gets 403, nothing of it reaches the
// victim's stream or child, and the victim's session goes on.
func TestLegacySSESessionIsOwned(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	logs := &gatewaytest.Logs{}
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, routeConfig("", demoTarget("identityEnv: true"))), gatewaytest.CaptureLogs(logs))
	victim := tn.Node(t, "victim")
	mallory := tn.Node(t, "mallory")

	s := openSSE(t, victim, gw.URL(3000, "/sse"))
	ep, err := url.Parse(s.endpoint)
	if err != nil {
		t.Fatal(err)
	}
	id := ep.Query().Get("sessionId") + ep.Query().Get("sessionid")
	if id == "" {
		t.Fatalf("endpoint %q names no session", s.endpoint)
	}
	if code := postSSE(t, victim, gw, s.endpoint, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"victim","version":"1"}}}`, nil); code != http.StatusAccepted {
		t.Fatalf("victim's initialize: %d", code)
	}
	s.next(t, 1)
	if code := postSSE(t, victim, gw, s.endpoint, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, nil); code != http.StatusAccepted {
		t.Fatalf("victim's initialized: %d", code)
	}

	// Mallory knows the session id (a log, a shared screen, a proxy).
	call := func(rpcID int) string {
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"env","arguments":{"names":["TAILGATE_NODE_NAME"]}}}`, rpcID)
	}
	attempts := []struct {
		path   string
		header map[string]string
	}{
		{"/sse?sessionId=" + id, nil},
		{"/sse?sessionid=" + id, nil},
		{"/sse?sessionId=&sessionid=" + id, nil},
		{"/sse", map[string]string{"Mcp-Session-Id": id}},
		{"/mcp", map[string]string{"Mcp-Session-Id": id}},
	}
	var forbidden []int
	for i, a := range attempts {
		rpcID := 600 + i
		forbidden = append(forbidden, rpcID)
		code := postSSE(t, mallory, gw, a.path, call(rpcID), a.header)
		// On the Streamable HTTP path the session may also be unknown.
		if code != http.StatusForbidden && !(a.path == "/mcp" && code == http.StatusNotFound) {
			t.Errorf("mallory POST %s %v into the victim's session: %d, want 403", a.path, a.header, code)
		}
	}

	// Nor can mallory take the session's messages or end it.
	for _, method := range []string{http.MethodGet, http.MethodDelete} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, method, gw.URL(3000, "/mcp"), nil)
		req.Header.Set("Mcp-Session-Id", id)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := mallory.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		cancel()
		if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusNotFound {
			t.Errorf("mallory %s /mcp with the victim's session: %d, want 403 (or 404)", method, resp.StatusCode)
		}
	}

	// The victim's own call answers with the victim's identity, and no
	// answer to mallory's calls came first.
	if code := postSSE(t, victim, gw, s.endpoint, call(2), nil); code != http.StatusAccepted {
		t.Fatalf("victim's call: %d", code)
	}
	m := s.next(t, 2, forbidden...)
	raw, _ := json.Marshal(m)
	if !strings.Contains(string(raw), "victim.") {
		t.Errorf("the victim's call ran as someone else: %s", raw)
	}
	// Calls are dispatched after the 202; give a wrongly accepted one
	// time to show, on the stream or in the access log.
	time.Sleep(300 * time.Millisecond)
	for {
		select {
		case data := <-s.messages:
			t.Errorf("unexpected message on the victim's stream: %s", data)
			continue
		default:
		}
		break
	}
	if logs.Contains("mallory.") && logs.Contains(`msg="mcp call"`) && strings.Contains(mcpCallLines(logs), "peer=mallory.") {
		t.Errorf("a call by mallory was relayed:\n%s", mcpCallLines(logs))
	}
	if !logs.Contains("session used by another peer") {
		t.Errorf("the refusals were not logged")
	}
}

// mcpCallLines are the access-log lines of the captured log.
func mcpCallLines(l *gatewaytest.Logs) string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, `msg="mcp call"`) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
