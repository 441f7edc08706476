package demoserver

import (
	"context"
	"encoding/json"
	"slices"
	"sort"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// notifications/tasks on subscriptions/listen: the listens that follow
// tasks, the notifications a change makes, and the stdio connection that
// serves listens for task ids (go-sdk v1.8.0 knows none).

// listen is a subscriptions/listen stream that asked for task ids.
type listen struct {
	id      jsonrpc.ID
	taskIDs []string
}

type notification struct {
	streams []jsonrpc.ID
	task    *taskResult
}

// noteLocked prepares notifications/tasks for the listens that follow t
// when changed; ts.mu is held.
func (ts *taskStore) noteLocked(t *task, changed bool) *notification {
	if !changed || len(ts.listens) == 0 {
		return nil
	}
	n := &notification{task: t.view("")}
	for _, l := range ts.listens {
		if slices.Contains(l.taskIDs, t.id) {
			n.streams = append(n.streams, l.id)
		}
	}
	return n
}

func (ts *taskStore) send(n *notification) {
	if n == nil {
		return
	}
	ts.mu.Lock()
	conn := ts.conn
	ts.mu.Unlock()
	if conn == nil {
		return
	}
	for _, id := range n.streams {
		params := *n.task
		params.Meta = mcp.Meta{mcp.MetaKeySubscriptionID: id.Raw()}
		data, err := json.Marshal(&params)
		if err != nil {
			continue
		}
		conn.Write(context.Background(), &jsonrpc.Request{Method: "notifications/tasks", Params: data})
	}
}

// tasksTransport wraps the stdio transport so that the server can answer
// subscriptions/listen requests that ask for task ids (go-sdk v1.8.0 knows
// only list_changed and resource subscriptions) and send notifications/tasks
// on them.
type tasksTransport struct {
	inner mcp.Transport
	ts    *taskStore
}

func (t *tasksTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	c, err := t.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	t.ts.mu.Lock()
	t.ts.conn = c
	t.ts.mu.Unlock()
	return &tasksConn{Connection: c, ts: t.ts}, nil
}

type tasksConn struct {
	mcp.Connection
	ts *taskStore
}

type listenParams struct {
	Meta          map[string]any             `json:"_meta"`
	Notifications map[string]json.RawMessage `json:"notifications"`
}

// Read takes the subscriptions/listen requests that name task ids, and the
// cancellations that end them, before go-sdk sees them.
func (c *tasksConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	for {
		msg, err := c.Connection.Read(ctx)
		if err != nil {
			return msg, err
		}
		req, ok := msg.(*jsonrpc.Request)
		if !ok {
			return msg, nil
		}
		switch {
		case req.Method == "subscriptions/listen" && req.IsCall():
			if c.listen(ctx, req) {
				continue
			}
		case req.Method == "notifications/cancelled":
			if c.endListen(ctx, req) {
				continue
			}
		}
		return msg, nil
	}
}

// listen serves a subscriptions/listen that names task ids; other
// notification kinds requested with them are not agreed to. It reports
// whether it took the request.
func (c *tasksConn) listen(ctx context.Context, req *jsonrpc.Request) bool {
	var p listenParams
	if json.Unmarshal(req.Params, &p) != nil || p.Notifications == nil {
		return false
	}
	raw, ok := p.Notifications["taskIds"]
	if !ok {
		return false
	}
	if !declaresTasks(p.Meta) {
		// SEP-2663: task notifications for a client that did not declare
		// the extension are refused with -32021.
		c.Connection.Write(ctx, &jsonrpc.Response{ID: req.ID, Error: missingTasksCapability("task status notifications")})
		return true
	}
	var want []string
	if err := json.Unmarshal(raw, &want); err != nil {
		c.Connection.Write(ctx, &jsonrpc.Response{ID: req.ID, Error: &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "notifications.taskIds: " + err.Error()}})
		return true
	}
	ts := c.ts
	ts.mu.Lock()
	agreed := []string{}
	for _, id := range want {
		if _, ok := ts.tasks[id]; ok && !slices.Contains(agreed, id) {
			agreed = append(agreed, id)
		}
	}
	sort.Strings(agreed)
	ts.listens[idKey(req.ID)] = &listen{id: req.ID, taskIDs: agreed}
	ack, _ := json.Marshal(map[string]any{
		"_meta":         map[string]any{mcp.MetaKeySubscriptionID: req.ID.Raw()},
		"notifications": map[string]any{"taskIds": agreed},
	})
	// The acknowledgement comes first on the stream; then each task's
	// present state, so that a listener misses no change.
	c.Connection.Write(ctx, &jsonrpc.Request{Method: "notifications/subscriptions/acknowledged", Params: ack})
	var notes []*notification
	for _, id := range agreed {
		notes = append(notes, &notification{streams: []jsonrpc.ID{req.ID}, task: ts.tasks[id].view("")})
	}
	ts.mu.Unlock()
	for _, n := range notes {
		ts.send(n)
	}
	return true
}

// endListen answers a listen of ours that the client cancelled.
func (c *tasksConn) endListen(ctx context.Context, req *jsonrpc.Request) bool {
	var p struct {
		RequestID any `json:"requestId"`
	}
	if json.Unmarshal(req.Params, &p) != nil {
		return false
	}
	id, err := jsonrpc.MakeID(p.RequestID)
	if err != nil {
		return false
	}
	ts := c.ts
	ts.mu.Lock()
	l, ok := ts.listens[idKey(id)]
	delete(ts.listens, idKey(id))
	ts.mu.Unlock()
	if !ok {
		return false
	}
	res, _ := json.Marshal(map[string]any{
		"resultType": "complete",
		"_meta":      map[string]any{mcp.MetaKeySubscriptionID: l.id.Raw()},
	})
	c.Connection.Write(ctx, &jsonrpc.Response{ID: l.id, Result: res})
	return true
}

func idKey(id jsonrpc.ID) string {
	b, _ := json.Marshal(id.Raw())
	return string(b)
}
