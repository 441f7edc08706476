package demoserver

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// rawClient speaks JSON-RPC to the tasks mode over go-sdk's in-memory
// transport, as a 2026-07-28 client whose requests carry their _meta, and
// as tailgate does to a child: no HTTP, no headers.
type rawClient struct {
	t    *testing.T
	conn mcp.Connection
	id   int64
	// others holds what arrived while waiting for an answer.
	others []*jsonrpc.Request
}

func startTasks(t *testing.T) *rawClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, ts := newTasks()
	ct, st := mcp.NewInMemoryTransports()
	ss, err := s.Connect(ctx, &tasksTransport{inner: st, ts: ts}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	conn, err := ct.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn}
}

func meta(ext bool) map[string]any {
	caps := map[string]any{}
	if ext {
		caps["extensions"] = map[string]any{TasksExtension: map[string]any{}}
	}
	return map[string]any{
		mcp.MetaKeyProtocolVersion:    "2026-07-28",
		mcp.MetaKeyClientCapabilities: caps,
	}
}

func (c *rawClient) send(method string, params map[string]any, ext bool) jsonrpc.ID {
	c.t.Helper()
	c.id++
	id, _ := jsonrpc.MakeID(float64(c.id))
	p := map[string]any{"_meta": meta(ext)}
	for k, v := range params {
		p[k] = v
	}
	data, _ := json.Marshal(p)
	if err := c.conn.Write(context.Background(), &jsonrpc.Request{ID: id, Method: method, Params: data}); err != nil {
		c.t.Fatal(err)
	}
	return id
}

func (c *rawClient) read() jsonrpc.Message {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg, err := c.conn.Read(ctx)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return msg
}

func (c *rawClient) answer(id jsonrpc.ID) *jsonrpc.Response {
	c.t.Helper()
	for {
		switch m := c.read().(type) {
		case *jsonrpc.Response:
			if m.ID == id {
				return m
			}
			c.t.Fatalf("answer to %v, want %v", m.ID, id)
		case *jsonrpc.Request:
			c.others = append(c.others, m)
		}
	}
}

// call returns the result of a request that must succeed, decoded.
func (c *rawClient) call(method string, params map[string]any, ext bool) map[string]any {
	c.t.Helper()
	resp := c.answer(c.send(method, params, ext))
	if resp.Error != nil {
		c.t.Fatalf("%s %v: %v", method, params, resp.Error)
	}
	var res map[string]any
	if err := json.Unmarshal(resp.Result, &res); err != nil {
		c.t.Fatal(err)
	}
	return res
}

// fails returns the error of a request that must fail.
func (c *rawClient) fails(method string, params map[string]any, ext bool) *jsonrpc.Error {
	c.t.Helper()
	resp := c.answer(c.send(method, params, ext))
	var werr *jsonrpc.Error
	if resp.Error == nil || !asWireError(resp.Error, &werr) {
		c.t.Fatalf("%s %v: answered %s, want a JSON-RPC error", method, params, resp.Result)
	}
	return werr
}

func asWireError(err error, target **jsonrpc.Error) bool {
	w, ok := err.(*jsonrpc.Error)
	*target = w
	return ok
}

func (c *rawClient) until(id string, statuses ...string) map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		task := c.call("tasks/get", map[string]any{"taskId": id}, true)
		for _, s := range statuses {
			if task["status"] == s {
				return task
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("task %s: %v, want status in %v", id, task, statuses)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func idJSON(id jsonrpc.ID) string {
	b, _ := json.Marshal(id.Raw())
	return string(b)
}

func text(task map[string]any) string {
	res, _ := task["result"].(map[string]any)
	content, _ := res["content"].([]any)
	if len(content) == 0 {
		return ""
	}
	first, _ := content[0].(map[string]any)
	s, _ := first["text"].(string)
	return s
}

func TestTasksDiscoverAndGating(t *testing.T) {
	c := startTasks(t)
	caps, _ := c.call("server/discover", nil, false)["capabilities"].(map[string]any)
	if ext, _ := caps["extensions"].(map[string]any); ext[TasksExtension] == nil || caps["tasks"] != nil {
		t.Errorf("capabilities %v: want extensions[%s] and no v1 tasks slot", caps, TasksExtension)
	}

	// Without the extension: optional task tools answer at once, required
	// ones and the tasks methods are refused with -32021.
	if res := c.call("tools/call", map[string]any{"name": "slow_compute", "arguments": map[string]any{"seconds": 0, "label": "x"}}, false); res["resultType"] != "complete" || res["taskId"] != nil {
		t.Errorf("slow_compute without the extension: %v, want a result at once", res)
	}
	for _, name := range []string{"failing_job", "confirm_delete", "multi_input", "test_tool_with_task"} {
		err := c.fails("tools/call", map[string]any{"name": name, "arguments": map[string]any{}}, false)
		if err.Code != CodeMissingRequiredClientCapability || !strings.Contains(string(err.Data), `"requiredCapabilities":{"extensions":{"`+TasksExtension+`":{}}}`) {
			t.Errorf("%s without the extension: %v %s, want -32021 naming the extension", name, err, err.Data)
		}
	}
	for _, m := range []string{"tasks/get", "tasks/update", "tasks/cancel"} {
		if err := c.fails(m, map[string]any{"taskId": "gate-test", "inputResponses": map[string]any{}}, false); err.Code != CodeMissingRequiredClientCapability {
			t.Errorf("%s without the extension: %v, want -32021", m, err)
		}
	}
	// A 2025-11-25 session's declaration means nothing (SEP-2663).
	if declaresTasks(map[string]any{mcp.MetaKeyProtocolVersion: "2025-11-25", mcp.MetaKeyClientCapabilities: meta(true)[mcp.MetaKeyClientCapabilities]}) {
		t.Error("a 2025-11-25 request declares the extension")
	}

	for _, m := range []string{"tasks/result", "tasks/list"} {
		if err := c.fails(m, map[string]any{"taskId": "x"}, true); err.Code != jsonrpc.CodeMethodNotFound {
			t.Errorf("%s: %v, want -32601", m, err)
		}
	}
	if err := c.fails("tasks/get", map[string]any{"taskId": "nonexistent"}, true); err.Code != jsonrpc.CodeInvalidParams {
		t.Errorf("tasks/get of an unknown task: %v, want -32602", err)
	}
	// A legacy `task` hint on a sync tool is ignored.
	if res := c.call("tools/call", map[string]any{"name": "greet", "arguments": map[string]any{"name": "World"}, "task": map[string]any{"ttl": 1000}}, true); res["resultType"] != "complete" || res["taskId"] != nil {
		t.Errorf("greet: %v, want a plain result", res)
	}
}

func TestTasksLifecycle(t *testing.T) {
	c := startTasks(t)
	created := c.call("tools/call", map[string]any{"name": "slow_compute", "arguments": map[string]any{"seconds": 0.2, "label": "life"}}, true)
	id, _ := created["taskId"].(string)
	for _, k := range []string{"result", "error", "inputRequests", "requestState", "task", "ttl", "pollInterval"} {
		if _, ok := created[k]; ok {
			t.Errorf("CreateTaskResult has %q: %v", k, created)
		}
	}
	if created["resultType"] != "task" || id == "" || created["status"] != "working" || created["ttlMs"] != float64(taskTTL.Milliseconds()) || created["createdAt"] == nil || created["lastUpdatedAt"] == nil {
		t.Fatalf("CreateTaskResult: %v", created)
	}
	if got := c.call("tasks/get", map[string]any{"taskId": id}, true); got["status"] != "working" || got["resultType"] != "complete" {
		t.Errorf("tasks/get at once: %v", got)
	}
	if done := c.until(id, "completed"); text(done) != `computed "life" after 0.2s` {
		t.Errorf("completed: %v", done)
	}

	failing := c.call("tools/call", map[string]any{"name": "failing_job", "arguments": map[string]any{}}, true)
	if done := c.until(failing["taskId"].(string), "completed", "failed"); done["status"] != "completed" || done["result"].(map[string]any)["isError"] != true {
		t.Errorf("failing_job: %v, want completed with isError", done)
	}
	broken := c.call("tools/call", map[string]any{"name": "protocol_error_job", "arguments": map[string]any{}}, true)
	done := c.until(broken["taskId"].(string), "completed", "failed")
	if e, _ := done["error"].(map[string]any); done["status"] != "failed" || e["code"] != float64(jsonrpc.CodeInternalError) || done["result"] != nil {
		t.Errorf("protocol_error_job: %v, want failed with the JSON-RPC error", done)
	}

	long := c.call("tools/call", map[string]any{"name": "slow_compute", "arguments": map[string]any{"seconds": 60}}, true)
	for range 2 { // the second on a terminal task: the same ack
		if ack := c.call("tasks/cancel", map[string]any{"taskId": long["taskId"]}, true); ack["resultType"] != "complete" || ack["taskId"] != nil || ack["status"] != nil {
			t.Errorf("tasks/cancel: %v, want an empty ack", ack)
		}
	}
	if got := c.call("tasks/get", map[string]any{"taskId": long["taskId"]}, true); got["status"] != "cancelled" {
		t.Errorf("after tasks/cancel: %v", got)
	}
}

func TestTasksInput(t *testing.T) {
	c := startTasks(t)
	created := c.call("tools/call", map[string]any{"name": "multi_input", "arguments": map[string]any{}}, true)
	id := created["taskId"].(string)
	deadline := time.Now().Add(5 * time.Second)
	var task map[string]any
	for {
		task = c.until(id, "input_required")
		if reqs, _ := task["inputRequests"].(map[string]any); len(reqs) == 2 || time.Now().After(deadline) {
			break
		}
	}
	if reqs, _ := task["inputRequests"].(map[string]any); reqs["first"] == nil || reqs["second"] == nil {
		t.Fatalf("multi_input: %v, want two input requests", task)
	}
	answer := func(key, name string) map[string]any {
		return map[string]any{key: map[string]any{"action": "accept", "content": map[string]any{"name": name}}}
	}
	c.call("tasks/update", map[string]any{"taskId": id, "inputResponses": answer("first", "a")}, true)
	task = c.call("tasks/get", map[string]any{"taskId": id}, true)
	if reqs, _ := task["inputRequests"].(map[string]any); task["status"] != "input_required" || len(reqs) != 1 || reqs["second"] == nil {
		t.Errorf("after answering one of two: %v, want input_required with second left", task)
	}
	// Keys not outstanding are ignored.
	c.call("tasks/update", map[string]any{"taskId": id, "inputResponses": answer("first", "again")}, true)
	c.call("tasks/update", map[string]any{"taskId": id, "inputResponses": answer("second", "b")}, true)
	if done := c.until(id, "completed"); text(done) != "first: a, second: b" {
		t.Errorf("multi_input: %v", done)
	}

	// MRTR on tools/call first, then a task (test_tool_with_task).
	round1 := c.call("tools/call", map[string]any{"name": "test_tool_with_task", "arguments": map[string]any{}}, true)
	if reqs, _ := round1["inputRequests"].(map[string]any); round1["resultType"] != "input_required" || reqs["user_name"] == nil || round1["taskId"] != nil {
		t.Fatalf("round 1: %v", round1)
	}
	round2 := c.call("tools/call", map[string]any{"name": "test_tool_with_task", "arguments": map[string]any{},
		"inputResponses": map[string]any{"user_name": map[string]any{"action": "accept", "content": map[string]any{"name": "Alice"}}}}, true)
	if round2["resultType"] != "task" || round2["requestState"] != nil {
		t.Fatalf("round 2: %v", round2)
	}
	if done := c.until(round2["taskId"].(string), "completed"); !strings.Contains(text(done), "Alice") {
		t.Errorf("test_tool_with_task: %v", done)
	}
}

func TestTaskNotifications(t *testing.T) {
	c := startTasks(t)
	if err := c.fails("subscriptions/listen", map[string]any{"notifications": map[string]any{"taskIds": []string{"x"}}}, false); err.Code != CodeMissingRequiredClientCapability {
		t.Errorf("listen for tasks without the extension: %v, want -32021", err)
	}

	id := c.call("tools/call", map[string]any{"name": "confirm_delete", "arguments": map[string]any{"filename": "f"}}, true)["taskId"].(string)
	c.until(id, "input_required")
	listen := c.send("subscriptions/listen", map[string]any{"notifications": map[string]any{"taskIds": []string{id, "unknown"}}}, true)
	next := func() *jsonrpc.Request {
		t.Helper()
		if len(c.others) > 0 {
			r := c.others[0]
			c.others = c.others[1:]
			return r
		}
		for {
			if r, ok := c.read().(*jsonrpc.Request); ok {
				return r
			}
		}
	}
	ack := next()
	if ack.Method != "notifications/subscriptions/acknowledged" || !strings.Contains(string(ack.Params), `"taskIds":["`+id+`"]`) || !strings.Contains(string(ack.Params), `"io.modelcontextprotocol/subscriptionId":`+idJSON(listen)) {
		t.Fatalf("first on the stream: %s %s", ack.Method, ack.Params)
	}
	status := func() map[string]any {
		t.Helper()
		n := next()
		var p map[string]any
		json.Unmarshal(n.Params, &p)
		if n.Method != "notifications/tasks" || p["taskId"] != id || p["resultType"] != nil {
			t.Fatalf("on the stream: %s %s", n.Method, n.Params)
		}
		return p
	}
	if p := status(); p["status"] != "input_required" {
		t.Errorf("present state: %v", p)
	}
	c.call("tasks/update", map[string]any{"taskId": id, "inputResponses": map[string]any{"confirm": map[string]any{"action": "accept", "content": map[string]any{"confirm": true}}}}, true)
	for p := status(); p["status"] != "completed"; p = status() {
		if p["status"] != "working" {
			t.Fatalf("notification %v", p)
		}
	}
	cancelled, _ := json.Marshal(map[string]any{"requestId": listen.Raw()})
	c.conn.Write(context.Background(), &jsonrpc.Request{Method: "notifications/cancelled", Params: cancelled})
	if end := c.answer(listen); end.Error != nil || !strings.Contains(string(end.Result), `"resultType":"complete"`) {
		t.Errorf("listen ended with %s %v", end.Result, end.Error)
	}
}
