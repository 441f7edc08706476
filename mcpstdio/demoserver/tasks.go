package demoserver

//lint:file-ignore SA1019 roots, sampling and logging are deprecated by 2026-07-28 (SEP-2577) but clients and servers still use them, and the gateway relays them

// The tasks extension (io.modelcontextprotocol/tasks, SEP-2663, beside MCP
// 2026-07-28), which go-sdk v1.8.0 does not implement (go-sdk#942): built
// here on its hooks — a receiving middleware for task-augmented tools/call,
// AddReceivingCustomMethod for tasks/get, tasks/update and tasks/cancel,
// and a wrapped stdio connection for notifications/tasks on
// subscriptions/listen streams. It serves the fixtures the conformance
// suite's tasks-* scenarios call (greet, slow_compute, failing_job,
// protocol_error_job, confirm_delete, multi_input, test_tool_with_task), so
// that tailgate's relay can be tested with tasks and no outside server.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const (
	// TasksExtension is the extension's identifier, under
	// capabilities.extensions on both sides (SEP-2663).
	TasksExtension = "io.modelcontextprotocol/tasks"
	// TasksEnv, set to anything but "" or "0", serves the tasks mode, as
	// the -tasks flag of cmd/tailgate-demo-server does.
	TasksEnv = "TAILGATE_DEMO_TASKS"

	// CodeMissingRequiredClientCapability is SEP-2575's -32021.
	CodeMissingRequiredClientCapability = -32021

	// The protocol version from which the extension applies: under
	// 2025-11-25 a client's declaration of it means nothing (SEP-2663,
	// Backward Compatibility).
	tasksProtocolVersion = "2026-07-28"

	taskTTL          = 10 * time.Minute
	taskPollInterval = 500 * time.Millisecond
	// maxTasks bounds the tasks kept at once; past it new tasks are refused.
	maxTasks = 1000
)

// Task statuses (SEP-2663).
const (
	statusWorking       = "working"
	statusInputRequired = "input_required"
	statusCompleted     = "completed"
	statusFailed        = "failed"
	statusCancelled     = "cancelled"
)

func terminal(status string) bool {
	return status == statusCompleted || status == statusFailed || status == statusCancelled
}

// TasksEnabled reports whether the environment asks for the tasks mode.
func TasksEnabled() bool {
	v := os.Getenv(TasksEnv)
	return v != "" && v != "0"
}

// NewTasks returns the demo server in its tasks mode: New's tools, prompt
// and resource, the tasks extension advertised in server/discover, the
// tasks methods, and the task fixtures. Served on any transport (go-sdk's
// HTTP handler, say) it sends no notifications/tasks: RunTasks does.
func NewTasks() *mcp.Server {
	s, _ := newTasks()
	return s
}

func newTasks() (*mcp.Server, *taskStore) {
	ts := &taskStore{tasks: make(map[string]*task), listens: make(map[string]*listen)}
	s := newServer(&mcp.ServerOptions{
		Instructions: "A demo server for tailgate with the tasks extension (io.modelcontextprotocol/tasks): " +
			"slow_compute, failing_job, protocol_error_job, confirm_delete, multi_input and test_tool_with_task run as tasks " +
			"for clients that declare the extension; greet and the demo tools answer at once.",
		Capabilities: tasksCapabilities(),
	})
	ts.register(s)
	return s, ts
}

func tasksCapabilities() *mcp.ServerCapabilities {
	caps := &mcp.ServerCapabilities{Logging: &mcp.LoggingCapabilities{}}
	caps.AddExtension(TasksExtension, nil)
	return caps
}

// RunTasks serves the tasks mode on stdin/stdout until stdin closes.
func RunTasks(ctx context.Context) error {
	s, ts := newTasks()
	return s.Run(ctx, &tasksTransport{inner: &mcp.StdioTransport{}, ts: ts})
}

// ---- the fixtures ----

type GreetIn struct {
	Name string `json:"name" jsonschema:"who to greet"`
}

type SlowComputeIn struct {
	Seconds float64 `json:"seconds,omitempty" jsonschema:"how long to work, in seconds (0: at once)"`
	Label   string  `json:"label,omitempty" jsonschema:"a label echoed in the result"`
}

type ConfirmDeleteIn struct {
	Filename string `json:"filename" jsonschema:"the file to (pretend to) delete"`
}

// taskTool is a tool that runs as a task for clients that declare the
// extension. A required one refuses other clients with -32021; an
// optional one answers them at once, running in the call.
type taskTool struct {
	description string
	schema      map[string]any // input schema; nil: an object
	required    bool
	// prepare, if set, runs before the task is created: it may answer with
	// an input-required result (MRTR, SEP-2322) and gathers what run needs.
	prepare func(p *mcp.CallToolParamsRaw) (mcp.Result, any)
	run     func(tc *taskCtx, args json.RawMessage, prepared any) (*mcp.CallToolResult, error)
}

func (ts *taskStore) register(s *mcp.Server) {
	mcp.AddTool(s, &mcp.Tool{Name: "greet", Description: "Say hello at once (never a task)."},
		func(ctx context.Context, req *mcp.CallToolRequest, in GreetIn) (*mcp.CallToolResult, any, error) {
			return textResult("Hello, " + in.Name + "!"), nil, nil
		})

	ts.tools = map[string]*taskTool{
		"slow_compute": {
			description: "Work for `seconds` seconds, then answer; a task for clients that declare the tasks extension.",
			schema:      objectSchema(map[string]string{"seconds": "number", "label": "string"}),
			run: func(tc *taskCtx, args json.RawMessage, _ any) (*mcp.CallToolResult, error) {
				var in SlowComputeIn
				if err := unmarshalArgs(args, &in); err != nil {
					return nil, err
				}
				if err := tc.sleep(time.Duration(in.Seconds * float64(time.Second))); err != nil {
					return nil, err
				}
				return textResult(fmt.Sprintf("computed %q after %gs", in.Label, in.Seconds)), nil
			},
		},
		"failing_job": {
			description: "A task that completes with a tool error after about a second.",
			required:    true,
			run: func(tc *taskCtx, args json.RawMessage, _ any) (*mcp.CallToolResult, error) {
				if err := tc.sleep(time.Second); err != nil {
					return nil, err
				}
				return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "failing_job: the job failed, as it always does"}}}, nil
			},
		},
		"protocol_error_job": {
			description: "A task that fails with a JSON-RPC internal error.",
			run: func(tc *taskCtx, args json.RawMessage, _ any) (*mcp.CallToolResult, error) {
				if err := tc.sleep(200 * time.Millisecond); err != nil {
					return nil, err
				}
				return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "protocol_error_job: internal error, as always"}
			},
		},
		"confirm_delete": {
			description: "A task that asks the client to confirm, then (pretends to) delete `filename`.",
			schema:      objectSchema(map[string]string{"filename": "string"}, "filename"),
			required:    true,
			run: func(tc *taskCtx, args json.RawMessage, _ any) (*mcp.CallToolResult, error) {
				var in ConfirmDeleteIn
				if err := unmarshalArgs(args, &in); err != nil {
					return nil, err
				}
				ans, err := tc.elicit("confirm", "Delete "+in.Filename+"?", "confirm", "boolean")
				if err != nil {
					return nil, err
				}
				if ans.Action == "accept" && ans.Content["confirm"] == true {
					return textResult("deleted " + in.Filename), nil
				}
				return textResult("kept " + in.Filename + " (" + ans.Action + ")"), nil
			},
		},
		"multi_input": {
			description: "A task that asks the client two questions at once.",
			required:    true,
			run: func(tc *taskCtx, args json.RawMessage, _ any) (*mcp.CallToolResult, error) {
				// Two requests outstanding at once, answered in any order.
				var (
					wg   sync.WaitGroup
					ans  [2]*elicitAnswer
					errs [2]error
				)
				for i, key := range []string{"first", "second"} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						ans[i], errs[i] = tc.elicit(key, "Input "+key+"?", "name", "string")
					}()
				}
				wg.Wait()
				if err := errors.Join(errs[:]...); err != nil {
					return nil, err
				}
				return textResult(fmt.Sprintf("first: %v, second: %v", ans[0].Content["name"], ans[1].Content["name"])), nil
			},
		},
		"test_tool_with_task": {
			description: "Asks for the caller's name over MRTR, then greets them from a task.",
			required:    true,
			// Asks for a name over MRTR on tools/call, then creates the
			// task (SEP-2663, Composition with Multi Round-Trip Requests).
			prepare: func(p *mcp.CallToolParamsRaw) (mcp.Result, any) {
				if r, ok := p.InputResponses["user_name"].(*mcp.ElicitResult); ok && r.Action == "accept" {
					if name, ok := r.Content["name"].(string); ok && name != "" {
						return nil, name
					}
				}
				return &inputRequiredResult{
					ResultType: "input_required",
					InputRequests: map[string]inputRequest{
						"user_name": elicitRequest("What is your name?", "name", "string"),
					},
				}, nil
			},
			run: func(tc *taskCtx, args json.RawMessage, prepared any) (*mcp.CallToolResult, error) {
				if err := tc.sleep(300 * time.Millisecond); err != nil {
					return nil, err
				}
				return textResult(fmt.Sprintf("Hello, %s! (from a task)", prepared)), nil
			},
		},
	}

	// Listed like every tool; go-sdk's handler serves clients that did not
	// declare the extension (the middleware answers the others).
	for _, name := range sortedKeys(ts.tools) {
		tt := ts.tools[name]
		desc, schema := tt.description, tt.schema
		if tt.required {
			desc += " Clients without the tasks extension get -32021."
		}
		if schema == nil {
			schema = objectSchema(nil)
		}
		s.AddTool(&mcp.Tool{Name: name, Description: desc, InputSchema: schema},
			func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				if tt.required || tt.prepare != nil {
					return nil, missingTasksCapability(req.Params.Name)
				}
				return tt.run(&taskCtx{ctx: ctx}, req.Params.Arguments, nil)
			})
	}

	s.AddReceivingMiddleware(ts.middleware)
	mustAdd(mcp.AddReceivingCustomMethod(s, "tasks/get", ts.get))
	mustAdd(mcp.AddReceivingCustomMethod(s, "tasks/update", ts.update))
	mustAdd(mcp.AddReceivingCustomMethod(s, "tasks/cancel", ts.cancel))
	// tasks/result and tasks/list (2025-11-25) are gone: go-sdk answers
	// them -32601, as SEP-2663 asks.
}

func objectSchema(props map[string]string, required ...string) map[string]any {
	p := map[string]any{}
	for name, typ := range props {
		p[name] = map[string]any{"type": typ}
	}
	schema := map[string]any{"type": "object", "properties": p}
	if len(required) > 0 {
		schema["required"] = required
	}
	return schema
}

func mustAdd(err error) {
	if err != nil {
		panic(err)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

func textResult(text string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: text}}}
}

func unmarshalArgs(args json.RawMessage, v any) error {
	if len(args) == 0 || string(args) == "null" {
		return nil
	}
	if err := json.Unmarshal(args, v); err != nil {
		return &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "invalid arguments: " + err.Error()}
	}
	return nil
}

// ---- wire shapes ----

// inputRequest is one entry of an inputRequests map (SEP-2322).
type inputRequest struct {
	Method string `json:"method"`
	Params any    `json:"params"`
}

func elicitRequest(message, field, typ string) inputRequest {
	return inputRequest{Method: "elicitation/create", Params: map[string]any{
		"mode":    "form",
		"message": message,
		"requestedSchema": map[string]any{
			"type":       "object",
			"properties": map[string]any{field: map[string]any{"type": typ}},
			"required":   []string{field},
		},
	}}
}

type inputRequiredResult struct {
	mcp.ResultBase
	ResultType    string                  `json:"resultType"`
	InputRequests map[string]inputRequest `json:"inputRequests"`
}

// taskResult is a Task in one of its shapes: CreateTaskResult (resultType
// "task"), tasks/get's DetailedTask (resultType "complete"), and the params
// of notifications/tasks (no resultType). It carries no requestState: the
// tasks wire has none.
type taskResult struct {
	mcp.ResultBase
	ResultType     string                  `json:"resultType,omitempty"`
	TaskID         string                  `json:"taskId"`
	Status         string                  `json:"status"`
	StatusMessage  string                  `json:"statusMessage,omitempty"`
	CreatedAt      string                  `json:"createdAt"`
	LastUpdatedAt  string                  `json:"lastUpdatedAt"`
	TTLMs          int64                   `json:"ttlMs"`
	PollIntervalMs int64                   `json:"pollIntervalMs,omitempty"`
	InputRequests  map[string]inputRequest `json:"inputRequests,omitempty"`
	Result         json.RawMessage         `json:"result,omitempty"`
	Error          *jsonrpc.Error          `json:"error,omitempty"`
}

// ackResult is the empty acknowledgement of tasks/update and tasks/cancel.
type ackResult struct {
	mcp.ResultBase
	ResultType string `json:"resultType"`
}

type taskParams struct {
	mcp.ParamsBase
	TaskID         string                     `json:"taskId"`
	InputResponses map[string]json.RawMessage `json:"inputResponses,omitempty"`
}

// declaresTasks reports whether a request's own _meta declares the
// extension: capabilities are per request (SEP-2575), and a 2025-11-25
// client's never enable it.
func declaresTasks(meta map[string]any) bool {
	if v, _ := meta[mcp.MetaKeyProtocolVersion].(string); v < tasksProtocolVersion {
		return false
	}
	caps, _ := meta[mcp.MetaKeyClientCapabilities].(map[string]any)
	ext, _ := caps["extensions"].(map[string]any)
	_, ok := ext[TasksExtension]
	return ok
}

func missingTasksCapability(what string) error {
	return &jsonrpc.Error{
		Code:    CodeMissingRequiredClientCapability,
		Message: fmt.Sprintf("Missing required client capability: %s needs the %s extension", what, TasksExtension),
		Data:    json.RawMessage(`{"requiredCapabilities":{"extensions":{"` + TasksExtension + `":{}}}}`),
	}
}

func unknownTask(id string) error {
	return &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("Failed to retrieve task: task %q not found", id)}
}

// ---- the store ----

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

// ---- notifications/tasks on subscriptions/listen ----

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
