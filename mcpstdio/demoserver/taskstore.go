package demoserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The store of the tasks mode: its tasks, the tasks methods (tasks/get,
// tasks/update, tasks/cancel), the middleware that starts a task for a
// task-augmented tools/call, and what a task's work sees (taskCtx).

type taskStore struct {
	tools map[string]*taskTool

	mu      sync.Mutex
	tasks   map[string]*task
	listens map[string]*listen // by the listen request's id, as JSON
	conn    mcp.Connection     // where notifications go; nil until connected
}

type task struct {
	id       string
	created  time.Time
	updated  time.Time
	status   string
	message  string
	result   json.RawMessage
	err      *jsonrpc.Error
	pending  map[string]*pendingInput // outstanding input requests by key
	cancel   context.CancelFunc
	canceled bool // tasks/cancel arrived
}

type pendingInput struct {
	req    inputRequest
	answer chan json.RawMessage // buffered: one answer
}

func newTaskID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// view is t as the wire shows it; ts.mu is held.
func (t *task) view(resultType string) *taskResult {
	v := &taskResult{
		ResultType:     resultType,
		TaskID:         t.id,
		Status:         t.status,
		StatusMessage:  t.message,
		CreatedAt:      t.created.UTC().Format(timeFormat),
		LastUpdatedAt:  t.updated.UTC().Format(timeFormat),
		TTLMs:          taskTTL.Milliseconds(),
		PollIntervalMs: taskPollInterval.Milliseconds(),
	}
	switch t.status {
	case statusInputRequired:
		v.InputRequests = make(map[string]inputRequest, len(t.pending))
		for k, p := range t.pending {
			v.InputRequests[k] = p.req
		}
	case statusCompleted:
		v.Result = t.result
	case statusFailed:
		v.Error = t.err
	}
	return v
}

// expire drops tasks past their TTL (SEP-2663 lets a server delete them);
// ts.mu is held.
func (ts *taskStore) expire(now time.Time) {
	for id, t := range ts.tasks {
		if now.Sub(t.created) > taskTTL {
			t.cancel()
			delete(ts.tasks, id)
		}
	}
}

// lookup finds a task for a tasks/* request from a client that declared
// the extension; ts.mu is held on success.
func (ts *taskStore) lookup(p *taskParams) (*task, error) {
	if !declaresTasks(p.Meta) {
		return nil, missingTasksCapability(fmt.Sprintf("task %q", p.TaskID))
	}
	if p.TaskID == "" {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "missing taskId"}
	}
	ts.mu.Lock()
	ts.expire(time.Now())
	t, ok := ts.tasks[p.TaskID]
	if !ok {
		ts.mu.Unlock()
		return nil, unknownTask(p.TaskID)
	}
	return t, nil
}

func (ts *taskStore) get(ctx context.Context, ss *mcp.ServerSession, p *taskParams) (*taskResult, error) {
	t, err := ts.lookup(p)
	if err != nil {
		return nil, err
	}
	defer ts.mu.Unlock()
	return t.view("complete"), nil
}

// update delivers inputResponses to outstanding requests; keys that are not
// outstanding are ignored (SEP-2663). The task's status reflects them at
// once: answered keys leave inputRequests.
func (ts *taskStore) update(ctx context.Context, ss *mcp.ServerSession, p *taskParams) (*ackResult, error) {
	t, err := ts.lookup(p)
	if err != nil {
		return nil, err
	}
	changed := false
	for key, raw := range p.InputResponses {
		if pi, ok := t.pending[key]; ok {
			delete(t.pending, key)
			pi.answer <- raw
			changed = true
		}
	}
	if changed && !terminal(t.status) {
		t.updated = time.Now()
		if len(t.pending) == 0 {
			t.status, t.message = statusWorking, ""
		} else {
			t.message = waitingFor(t)
		}
	}
	note := ts.noteLocked(t, changed)
	ts.mu.Unlock()
	ts.send(note)
	return &ackResult{ResultType: "complete"}, nil
}

// cancel marks a task that is not yet terminal cancelled at once and stops
// its work; on a terminal task it is an idempotent ack.
func (ts *taskStore) cancel(ctx context.Context, ss *mcp.ServerSession, p *taskParams) (*ackResult, error) {
	t, err := ts.lookup(p)
	if err != nil {
		return nil, err
	}
	changed := false
	if !terminal(t.status) {
		t.canceled = true
		t.status, t.message, t.updated = statusCancelled, "cancelled at the client's request", time.Now()
		t.pending = nil
		t.cancel()
		changed = true
	}
	note := ts.noteLocked(t, changed)
	ts.mu.Unlock()
	ts.send(note)
	return &ackResult{ResultType: "complete"}, nil
}

// middleware answers task-augmented tools/call for the task tools.
func (ts *taskStore) middleware(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if method != "tools/call" {
			return next(ctx, method, req)
		}
		p, ok := req.GetParams().(*mcp.CallToolParamsRaw)
		if !ok {
			return next(ctx, method, req)
		}
		tt, ok := ts.tools[p.Name]
		if !ok || !declaresTasks(p.Meta) {
			// go-sdk's handler: at once, or -32021 for a required task.
			return next(ctx, method, req)
		}
		var prepared any
		if tt.prepare != nil {
			var res mcp.Result
			if res, prepared = tt.prepare(p); res != nil {
				return res, nil
			}
		}
		return ts.start(tt, p.Arguments, prepared)
	}
}

// start creates a task and its work; the task is in the store (tasks/get
// finds it) before CreateTaskResult is returned.
func (ts *taskStore) start(tt *taskTool, args json.RawMessage, prepared any) (mcp.Result, error) {
	now := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	t := &task{id: newTaskID(), created: now, updated: now, status: statusWorking, cancel: cancel, pending: map[string]*pendingInput{}}
	ts.mu.Lock()
	ts.expire(now)
	if len(ts.tasks) >= maxTasks {
		ts.mu.Unlock()
		cancel()
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: fmt.Sprintf("too many tasks (%d)", maxTasks)}
	}
	ts.tasks[t.id] = t
	created := t.view("task")
	ts.mu.Unlock()

	go func() {
		res, err := tt.run(&taskCtx{ctx: ctx, ts: ts, t: t}, args, prepared)
		ts.finish(t, res, err)
	}()
	return created, nil
}

// finish records the outcome of a task's work, unless the task was
// cancelled first.
func (ts *taskStore) finish(t *task, res *mcp.CallToolResult, err error) {
	ts.mu.Lock()
	if t.canceled || terminal(t.status) {
		ts.mu.Unlock()
		return
	}
	t.updated = time.Now()
	t.pending = nil
	var werr *jsonrpc.Error
	switch {
	case errors.As(err, &werr):
		t.status, t.err, t.message = statusFailed, werr, "failed: "+werr.Message
	case err != nil:
		t.status, t.err, t.message = statusFailed, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: err.Error()}, "failed: "+err.Error()
	default:
		if res == nil {
			res = &mcp.CallToolResult{}
		}
		if res.Content == nil {
			res.Content = []mcp.Content{}
		}
		data, merr := json.Marshal(res)
		if merr != nil {
			t.status, t.err = statusFailed, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: merr.Error()}
		} else {
			t.status, t.result = statusCompleted, data
		}
	}
	t.cancel()
	note := ts.noteLocked(t, true)
	ts.mu.Unlock()
	ts.send(note)
}

// taskCtx is what a task's work sees. Outside a task (a client without the
// extension) t is nil.
type taskCtx struct {
	ctx context.Context
	ts  *taskStore
	t   *task
}

func (tc *taskCtx) sleep(d time.Duration) error {
	select {
	case <-tc.ctx.Done():
		return tc.ctx.Err()
	case <-time.After(d):
		return nil
	}
}

type elicitAnswer struct {
	Action  string         `json:"action"`
	Content map[string]any `json:"content"`
}

// elicit asks the client for one field through the task's inputRequests
// and waits for tasks/update to answer it.
func (tc *taskCtx) elicit(key, message, field, typ string) (*elicitAnswer, error) {
	raw, err := tc.ask(key, elicitRequest(message, field, typ))
	if err != nil {
		return nil, err
	}
	var ans elicitAnswer
	if err := json.Unmarshal(raw, &ans); err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("inputResponses[%q]: %v", key, err)}
	}
	return &ans, nil
}

func (tc *taskCtx) ask(key string, req inputRequest) (json.RawMessage, error) {
	if tc.t == nil {
		return nil, errors.New("input requests need a task")
	}
	ts, t := tc.ts, tc.t
	pi := &pendingInput{req: req, answer: make(chan json.RawMessage, 1)}
	ts.mu.Lock()
	if terminal(t.status) {
		ts.mu.Unlock()
		return nil, context.Canceled
	}
	t.pending[key] = pi
	t.status, t.message, t.updated = statusInputRequired, waitingFor(t), time.Now()
	note := ts.noteLocked(t, true)
	ts.mu.Unlock()
	ts.send(note)
	select {
	case raw := <-pi.answer:
		return raw, nil
	case <-tc.ctx.Done():
		return nil, tc.ctx.Err()
	}
}

// waitingFor is t's status message while input requests are outstanding;
// ts.mu is held.
func waitingFor(t *task) string {
	return "waiting for input: " + strings.Join(sortedKeys(t.pending), ", ")
}
