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
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
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

// register gives s the greet tool and the task fixtures, and serves the
// tasks methods and task-augmented tools/call from ts.
func (ts *taskStore) register(s *mcp.Server) {
	mcp.AddTool(s, &mcp.Tool{Name: "greet", Description: "Say hello at once (never a task)."},
		func(ctx context.Context, req *mcp.CallToolRequest, in GreetIn) (*mcp.CallToolResult, any, error) {
			return textResult("Hello, " + in.Name + "!"), nil, nil
		})

	ts.tools = taskFixtures()

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

// taskFixtures are the task tools the conformance suite's tasks-*
// scenarios call, by name.
func taskFixtures() map[string]*taskTool {
	return map[string]*taskTool{
		"slow_compute": {
			description: "Work for `seconds` seconds, then answer; a task for clients that declare the tasks extension.",
			schema:      objectSchema(map[string]string{"seconds": "number", "label": "string"}),
			run:         runSlowCompute,
		},
		"failing_job": {
			description: "A task that completes with a tool error after about a second.",
			required:    true,
			run:         runFailingJob,
		},
		"protocol_error_job": {
			description: "A task that fails with a JSON-RPC internal error.",
			run:         runProtocolErrorJob,
		},
		"confirm_delete": {
			description: "A task that asks the client to confirm, then (pretends to) delete `filename`.",
			schema:      objectSchema(map[string]string{"filename": "string"}, "filename"),
			required:    true,
			run:         runConfirmDelete,
		},
		"multi_input": {
			description: "A task that asks the client two questions at once.",
			required:    true,
			run:         runMultiInput,
		},
		"test_tool_with_task": {
			description: "Asks for the caller's name over MRTR, then greets them from a task.",
			required:    true,
			prepare:     askUserName,
			run:         runGreetFromTask,
		},
	}
}

// runSlowCompute is slow_compute's work: it waits the seconds asked for.
func runSlowCompute(tc *taskCtx, args json.RawMessage, _ any) (*mcp.CallToolResult, error) {
	var in SlowComputeIn
	if err := unmarshalArgs(args, &in); err != nil {
		return nil, err
	}
	if err := tc.sleep(time.Duration(in.Seconds * float64(time.Second))); err != nil {
		return nil, err
	}
	return textResult(fmt.Sprintf("computed %q after %gs", in.Label, in.Seconds)), nil
}

// runFailingJob is failing_job's work: a tool error after about a second.
func runFailingJob(tc *taskCtx, args json.RawMessage, _ any) (*mcp.CallToolResult, error) {
	if err := tc.sleep(time.Second); err != nil {
		return nil, err
	}
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "failing_job: the job failed, as it always does"}}}, nil
}

// runProtocolErrorJob is protocol_error_job's work: a JSON-RPC internal
// error.
func runProtocolErrorJob(tc *taskCtx, args json.RawMessage, _ any) (*mcp.CallToolResult, error) {
	if err := tc.sleep(200 * time.Millisecond); err != nil {
		return nil, err
	}
	return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "protocol_error_job: internal error, as always"}
}

// runConfirmDelete is confirm_delete's work: it asks the client to
// confirm, then (pretends to) delete the file.
func runConfirmDelete(tc *taskCtx, args json.RawMessage, _ any) (*mcp.CallToolResult, error) {
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
}

// runMultiInput is multi_input's work: it asks the client two questions
// at once.
func runMultiInput(tc *taskCtx, args json.RawMessage, _ any) (*mcp.CallToolResult, error) {
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
}

// askUserName is test_tool_with_task's prepare: it asks for a name over
// MRTR on tools/call, then creates the task (SEP-2663, Composition with
// Multi Round-Trip Requests).
func askUserName(p *mcp.CallToolParamsRaw) (mcp.Result, any) {
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
}

// runGreetFromTask is test_tool_with_task's work: it greets the name
// askUserName gathered.
func runGreetFromTask(tc *taskCtx, args json.RawMessage, prepared any) (*mcp.CallToolResult, error) {
	if err := tc.sleep(300 * time.Millisecond); err != nil {
		return nil, err
	}
	return textResult(fmt.Sprintf("Hello, %s! (from a task)", prepared)), nil
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
