package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

// modernOnlyTasks is the demo server in tasks mode served over Streamable
// HTTP as a server of MCP 2026-07-28 only: it refuses initialize
// (-32601), so that a client of the session era reaches it only through
// tailgate speaking 2026-07-28 for it. It keeps every caller's tasks in
// one store, as a remote server does. It also answers tasks/list (the
// demo server has none) with every task in listed, whoever created it,
// and keeps the task ids each subscriptions/listen it is sent asks for.
type modernOnlyTasks struct {
	url string

	mu      sync.Mutex
	listed  []string   // the tasks tasks/list names
	listens [][]string // the taskIds of each listen, as sent
}

func modernOnlyTasksServer(t *testing.T) *modernOnlyTasks {
	t.Helper()
	up := &modernOnlyTasks{}
	wrap := func(sdk http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost {
				sdk.ServeHTTP(w, r)
				return
			}
			body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			r.Body = io.NopCloser(bytes.NewReader(body))
			var req struct {
				ID     json.RawMessage `json:"id"`
				Params struct {
					Notifications struct {
						TaskIDs []string `json:"taskIds"`
					} `json:"notifications"`
				} `json:"params"`
			}
			json.Unmarshal(body, &req)
			answer := func(msg string) {
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(`{"jsonrpc":"2.0","id":` + string(req.ID) + `,` + msg + `}`))
			}
			switch r.Header.Get("Mcp-Method") {
			case "initialize":
				answer(`"error":{"code":-32601,"message":"this server speaks MCP 2026-07-28 only"}`)
				return
			case "tasks/list":
				up.mu.Lock()
				tasks := []map[string]string{}
				for _, id := range up.listed {
					tasks = append(tasks, map[string]string{"taskId": id, "status": "working"})
				}
				up.mu.Unlock()
				b, _ := json.Marshal(tasks)
				answer(`"result":{"resultType":"complete","tasks":` + string(b) + `}`)
				return
			case "subscriptions/listen":
				up.mu.Lock()
				up.listens = append(up.listens, req.Params.Notifications.TaskIDs)
				up.mu.Unlock()
				answer(`"result":{"resultType":"complete"}`)
				return
			}
			sdk.ServeHTTP(w, r)
		})
	}
	up.url = gatewaytest.RemoteMCP(t, demoserver.NewTasks(), &mcp.StreamableHTTPOptions{Stateless: true}, wrap)
	return up
}

// sessionTaskClient is a client of the session era (MCP 2025-11-25) on
// node n: it initializes a session, and its requests then carry the
// session's id. Their _meta still declares the tasks extension: what a
// session client puts there reaches a server of 2026-07-28 only, which
// tailgate speaks to for it.
func sessionTaskClient(t *testing.T, n *gatewaytest.Node, gw *gatewaytest.Gateway) *taskClient {
	t.Helper()
	c := newTaskClient(t, n, gw)
	c.name = n.Name + " (session)"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	post := func(body string, session string) *http.Response {
		t.Helper()
		for {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			if session != "" {
				req.Header.Set("Mcp-Session-Id", session)
				req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
			}
			resp, err := c.hc.Do(req)
			if err != nil && ctx.Err() == nil && gatewaytest.Retryable(err) {
				time.Sleep(100 * time.Millisecond) // the netmap may not have reached the node yet
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			return resp
		}
	}
	resp := post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"`+c.name+`","version":"1.0.0"}}}`, "")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	session := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || session == "" || !bytes.Contains(body, []byte(`"result"`)) {
		t.Fatalf("%s: initialize: HTTP %d, session %q: %s", c.name, resp.StatusCode, session, body)
	}
	resp = post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`, session)
	resp.Body.Close()
	c.headers = map[string]string{"Mcp-Session-Id": session, "Mcp-Protocol-Version": "2025-11-25"}
	return c
}

// A task on a remote target (one server keeps every caller's tasks) is its
// creator's on every way in: another node, through a session of the
// session era or sessionless, cannot get, update, cancel or fetch the
// result of it (refused as a task that does not exist is); the node that
// created it reaches it both ways, whichever way it created it: the owner
// is the caller, not the session. Failed before: a session's tasks/* were
// not checked at all, so desk read and cancelled laptop's task through a
// session, and laptop's own session could not be told from anyone's.
func TestTasksBelongToTheirCreator(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	upstream := modernOnlyTasksServer(t)
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, routeConfig("", `
          - name: remote
            mcp: {host: `+upstream.url+`}`)))
	laptopNode, deskNode := tn.Node(t, "laptop"), tn.Node(t, "desk")
	laptop, desk := newTaskClient(t, laptopNode, gw), newTaskClient(t, deskNode, gw)
	laptopSession, deskSession := sessionTaskClient(t, laptopNode, gw), sessionTaskClient(t, deskNode, gw)

	for _, creator := range []*taskClient{laptop, laptopSession} {
		t.Run("created by "+creator.name, func(t *testing.T) {
			for _, c := range []*taskClient{laptop, desk, laptopSession, deskSession} {
				c.t = t
			}
			created := creator.task("tools/call", map[string]any{"name": "slow_compute", "arguments": map[string]any{"seconds": 60, "label": "private"}})
			if created.ResultType != "task" || created.TaskID == "" {
				t.Fatalf("tools/call: %+v, want a task", created)
			}
			unknown := desk.refused("tasks/get", map[string]any{"taskId": "0123456789abcdef0123456789abcdef"}, nil)
			for _, other := range []*taskClient{desk, deskSession} {
				methods := []string{"tasks/get", "tasks/update", "tasks/cancel"}
				if other == deskSession {
					methods = append(methods, "tasks/result") // the session era's
				}
				for _, method := range methods {
					params := map[string]any{"taskId": created.TaskID}
					if method == "tasks/update" {
						params["inputResponses"] = map[string]any{}
					}
					m, _ := other.call(method, params, nil)
					if m.Error == nil {
						t.Errorf("%s's %s of %s's task answered %s, want it refused", other.name, method, creator.name, m.Result)
						continue
					}
					if m.Error.Code != unknown.Code || strings.Contains(m.Error.Message, "private") {
						t.Errorf("%s's %s of %s's task: %v; want %d, as for a task that does not exist", other.name, method, creator.name, m.Error, unknown.Code)
					}
				}
			}
			for _, own := range []*taskClient{laptop, laptopSession} {
				if got := own.task("tasks/get", map[string]any{"taskId": created.TaskID}); got.TaskID != created.TaskID || got.Status != "working" {
					t.Errorf("%s's tasks/get of its node's task: %+v, want it still working", own.name, got)
				}
			}
			laptopSession.task("tasks/cancel", map[string]any{"taskId": created.TaskID})
			if got := laptop.task("tasks/get", map[string]any{"taskId": created.TaskID}); got.Status != "cancelled" {
				t.Errorf("after its owner's tasks/cancel: %q, want cancelled", got.Status)
			}
		})
	}

	// The server lists every caller's tasks, and is asked by a listen
	// for any task ids: each caller's tasks/list and listens name its own.
	t.Run("tasks/list and listens", func(t *testing.T) {
		for _, c := range []*taskClient{laptop, desk, laptopSession, deskSession} {
			c.t = t
		}
		start := func(c *taskClient) string {
			task := c.task("tools/call", map[string]any{"name": "slow_compute", "arguments": map[string]any{"seconds": 60, "label": "listed"}})
			t.Cleanup(func() { c.call("tasks/cancel", map[string]any{"taskId": task.TaskID}, nil) })
			return task.TaskID
		}
		mine, theirs := start(laptop), start(desk)
		upstream.mu.Lock()
		upstream.listed = []string{mine, theirs}
		upstream.mu.Unlock()
		m, _ := laptopSession.call("tasks/list", nil, nil)
		var list struct{ Tasks []wireTask }
		if m.Error != nil || json.Unmarshal(m.Result, &list) != nil {
			t.Fatalf("tasks/list: %s %v", m.Result, m.Error)
		}
		if len(list.Tasks) != 1 || list.Tasks[0].TaskID != mine {
			t.Errorf("laptop's tasks/list through a session: %s; want its own task %s alone", m.Result, mine)
		}

		for _, c := range []*taskClient{deskSession, desk, laptop} {
			upstream.mu.Lock()
			before := len(upstream.listens)
			upstream.mu.Unlock()
			m, _ := c.call("subscriptions/listen", map[string]any{"notifications": map[string]any{"taskIds": []string{mine, theirs}}}, nil)
			upstream.mu.Lock()
			sent := slices.Clone(upstream.listens[before:])
			upstream.mu.Unlock()
			want := []string{theirs}
			if c == laptop {
				want = []string{mine}
			}
			if len(sent) != 1 || !slices.Equal(sent[0], want) {
				t.Errorf("%s's listen for both tasks reached the server naming %q (answered %s %v); want its own %q", c.name, sent, m.Result, m.Error, want)
			}
		}
	})
}
