package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

// The tasks extension (io.modelcontextprotocol/tasks, SEP-2663) through
// tailgate, with the demo server in its tasks mode (-tasks) as the stdio
// target: tailgate relays tasks/* and task results it does not interpret.

// tasksRoute is a route whose one target is the demo server in tasks mode.
func tasksRoute() string {
	return routeConfig("", demoTarget(`args: ["-tasks"]`))
}

// tasksRoutes is the routes the go-level tests run on: one target, where
// tailgate passes task ids through, and two (multiplexed), where it
// prefixes them with their target as it does tool names. prefix is what
// the tools and task ids of the target under test carry.
var tasksRoutes = []struct {
	name, prefix string
	config       func(t *testing.T) string
}{
	{"one target", "", func(*testing.T) string { return tasksRoute() }},
	{"two targets", "two_", func(*testing.T) string {
		return routeConfig("", `
          - name: one
            stdio: {cmd: $DEMO, args: ["-tasks"]}
          - name: two
            stdio: {cmd: $DEMO, args: ["-tasks"]}`)
	}},
	// One upstream that keeps every caller's tasks, as a remote server
	// does: that a task is its creator's is tailgate's to enforce.
	{"remote target", "", func(t *testing.T) string {
		return routeConfig("", `
          - name: remote
            mcp: {host: `+statelessTasksServer(t)+`}`)
	}},
}

// statelessTasksServer serves the demo server in tasks mode over
// Streamable HTTP, statelessly (go-sdk's handler), on loopback, for the
// test; it returns its URL.
func statelessTasksServer(t *testing.T) string {
	t.Helper()
	return gatewaytest.RemoteMCP(t, demoserver.NewTasks(), &mcp.StreamableHTTPOptions{Stateless: true}, nil)
}

// TestTasksConformance runs the conformance suite's tasks-* scenarios
// (every scenario `conformance list` names so) against the demo server in
// tasks mode: directly, served by go-sdk's own stateless HTTP handler in
// this process, and through tailgate over the tailnet (the bridge, as
// TestConformance), where all of them must pass. TAILGATE_CONFORMANCE_OUT
// keeps the checks.json files.
func TestTasksConformance(t *testing.T) {
	node, cli := conformanceCLI(t)
	scenarios := tasksScenarios(t, node, cli)
	t.Logf("tasks scenarios: %s", strings.Join(scenarios, " "))

	out := os.Getenv("TAILGATE_CONFORMANCE_OUT")
	if out == "" {
		out = t.TempDir()
	} else if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}

	t.Run("direct", func(t *testing.T) {
		// The server's own answers, with no relay: go-sdk's handler is the
		// HTTP layer. It does not check Mcp-Name against params.taskId for
		// tasks/* (SEP-2663 extends SEP-2243 there); a stdio server never
		// sees headers, so that check is the gateway's.
		runs := runScenarios(t, node, cli, statelessTasksServer(t), scenarios, out, "direct-")
		reportScenarios(t, runs, map[string]string{
			"tasks-request-headers:sep-2663-server-rejects-mismatched-mcp-name-on-tasks-get": "go-sdk v1.8.0's HTTP handler checks Mcp-Name only for tools/call, prompts/get and resources/read",
		})
	})

	t.Run("tailgate", func(t *testing.T) {
		tn := gatewaytest.NewTailnet(t)
		gw := tn.Gateway(t, gatewaytest.ParseConfig(t, tasksRoute()))
		local := gw.Bridge(t, tn.Node(t, "conformance"), 3000)
		runs := runScenarios(t, node, cli, "http://"+local+"/mcp", scenarios, out, "tailgate-")
		reportScenarios(t, runs, nil)
	})
}

var listedTasksScenario = regexp.MustCompile(`(?m)^\s*-\s*(tasks-\S+)`)

// tasksScenarios lists the suite's server scenarios named tasks-*.
func tasksScenarios(t *testing.T, node, cli string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, cli, "list").CombinedOutput()
	if err != nil {
		t.Fatalf("conformance list: %v\n%s", err, out)
	}
	server, _, _ := strings.Cut(string(out), "Client scenarios")
	var names []string
	for _, m := range listedTasksScenario.FindAllStringSubmatch(server, -1) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		t.Fatalf("conformance list names no tasks-* server scenario:\n%s", out)
	}
	return names
}

type scenarioRun struct {
	checks []conformanceCheck
	output string
}

// runScenarios runs each scenario against url, a few at a time, and
// returns their checks by scenario; one that wrote no checks.json gets a
// single failed check.
func runScenarios(t *testing.T, node, cli, url string, scenarios []string, out, prefix string) map[string]scenarioRun {
	t.Helper()
	var (
		mu   sync.Mutex
		runs = make(map[string]scenarioRun)
		wg   sync.WaitGroup
		sem  = make(chan struct{}, 3)
	)
	begin := time.Now()
	for _, name := range scenarios {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			dir, err := os.MkdirTemp(out, prefix+name+"-")
			if err != nil {
				t.Error(err)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, node, cli, "server", "--url", url, "--scenario", name,
				"--timeout", "60000", "--verbose", "-o", dir)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "NO_COLOR=1")
			cmd.WaitDelay = 5 * time.Second
			output, _ := cmd.CombinedOutput()
			run := scenarioRun{output: ansi.ReplaceAllString(string(output), "")}
			if checks, ok := readConformanceResults(t, dir)[name]; ok {
				run.checks = checks
			} else {
				run.checks = []conformanceCheck{{ID: name, Status: "FAILURE", ErrorMessage: "failed to run (no checks.json)"}}
			}
			mu.Lock()
			runs[name] = run
			mu.Unlock()
		})
	}
	wg.Wait()
	t.Logf("%d scenarios against %s in %v, results under %s", len(scenarios), url, time.Since(begin).Round(100*time.Millisecond), out)
	return runs
}

// reportScenarios logs every scenario's outcome and fails the test for
// each failed check not in allowed (by "scenario:check-id", with the reason).
func reportScenarios(t *testing.T, runs map[string]scenarioRun, allowed map[string]string) {
	t.Helper()
	checks := make(map[string][]conformanceCheck, len(runs))
	for name, r := range runs {
		checks[name] = r.checks
	}
	sum := summarize(checks)
	t.Logf("scenarios: %d run, %d passed whole; checks: %d passed, %d failed, %d warnings, %d skipped",
		sum.scenarios, sum.scenariosPassed, sum.checks["SUCCESS"], sum.checks["FAILURE"], sum.checks["WARNING"], sum.checks["SKIPPED"])
	for _, name := range slices.Sorted(maps.Keys(runs)) {
		r := runs[name]
		var failed []string
		counts := map[string]int{}
		for _, c := range r.checks {
			counts[c.Status]++
			if c.Status != "FAILURE" && c.Status != "WARNING" {
				continue
			}
			key := name + ":" + c.ID
			if reason, ok := allowed[key]; ok {
				t.Logf("%s %s (expected here: %s): %s", c.Status, key, reason, c.ErrorMessage)
				continue
			}
			failed = append(failed, fmt.Sprintf("%s %s: %s", c.Status, c.ID, c.ErrorMessage))
		}
		t.Logf("%-28s %d passed, %d failed, %d warnings, %d skipped", name, counts["SUCCESS"], counts["FAILURE"], counts["WARNING"], counts["SKIPPED"])
		if len(failed) > 0 {
			t.Errorf("%s:\n  %s\noutput:\n%s", name, strings.Join(failed, "\n  "), r.output)
		}
	}
}

// ---- a 2026-07-28 client of the tasks extension, in raw JSON-RPC ----

// taskClient speaks MCP 2026-07-28 over HTTP from a tailnet node, with the
// tasks extension declared in every request's _meta unless noExt; go-sdk
// v1.8.0 has no tasks client.
type taskClient struct {
	t     *testing.T
	name  string
	url   string
	hc    *http.Client
	noExt bool
	// headers go with every request: a session client's Mcp-Session-Id
	// (sessionTaskClient).
	headers map[string]string
	id      atomic.Int64
}

func newTaskClient(t *testing.T, n *gatewaytest.Node, gw *gatewaytest.Gateway) *taskClient {
	return &taskClient{t: t, name: n.Name, url: gw.URL(3000, "/mcp"), hc: n.Client()}
}

type rpcError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

func (e *rpcError) Error() string { return fmt.Sprintf("%d %s", e.Code, e.Message) }

type rpcMessage struct {
	ID     json.RawMessage `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *rpcError       `json:"error,omitempty"`
}

// wireTask is a Task in any of its shapes.
type wireTask struct {
	ResultType     string                     `json:"resultType"`
	TaskID         string                     `json:"taskId"`
	Status         string                     `json:"status"`
	StatusMessage  string                     `json:"statusMessage"`
	CreatedAt      string                     `json:"createdAt"`
	LastUpdatedAt  string                     `json:"lastUpdatedAt"`
	TTLMs          *int64                     `json:"ttlMs"`
	PollIntervalMs int64                      `json:"pollIntervalMs"`
	InputRequests  map[string]json.RawMessage `json:"inputRequests"`
	Result         *struct {
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
		IsError bool `json:"isError"`
	} `json:"result"`
	Error        *rpcError       `json:"error"`
	RequestState json.RawMessage `json:"requestState"`
	Meta         map[string]any  `json:"_meta"`
}

func (c *taskClient) meta() map[string]any {
	caps := map[string]any{}
	if !c.noExt {
		caps["extensions"] = map[string]any{demoserver.TasksExtension: map[string]any{}}
	}
	return map[string]any{
		"io.modelcontextprotocol/protocolVersion":    "2026-07-28",
		"io.modelcontextprotocol/clientInfo":         map[string]any{"name": c.name, "version": "1.0.0"},
		"io.modelcontextprotocol/clientCapabilities": caps,
	}
}

// post sends one request with the headers SEP-2243 and SEP-2663 ask for
// (Mcp-Name is the tool's name or the task id), overridden by hdr, and
// returns the HTTP response for the caller to read.
func (c *taskClient) post(ctx context.Context, method string, params map[string]any, hdr map[string]string) (*http.Response, int64, error) {
	id := c.id.Add(1)
	p := map[string]any{"_meta": c.meta()}
	for k, v := range params {
		p[k] = v
	}
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": p})
	if err != nil {
		return nil, 0, err
	}
	headers := map[string]string{
		"Content-Type":         "application/json",
		"Accept":               "application/json, text/event-stream",
		"Mcp-Protocol-Version": "2026-07-28",
		"Mcp-Method":           method,
	}
	switch method {
	case "tools/call":
		headers["Mcp-Name"], _ = params["name"].(string)
	case "tasks/get", "tasks/update", "tasks/cancel":
		headers["Mcp-Name"], _ = params["taskId"].(string)
	}
	maps.Copy(headers, c.headers)
	maps.Copy(headers, hdr)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
		if err != nil {
			return nil, 0, err
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := c.hc.Do(req)
		if err != nil && ctx.Err() == nil && gatewaytest.Retryable(err) {
			// The netmap may not have reached a new node yet.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		return resp, id, err
	}
}

// call sends a request and returns its response, from a JSON body or the
// SSE stream the answer comes on.
func (c *taskClient) call(method string, params map[string]any, hdr map[string]string) (*rpcMessage, int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, id, err := c.post(ctx, method, params, hdr)
	if err != nil {
		c.t.Fatalf("%s: %s: %v", c.name, method, err)
	}
	defer resp.Body.Close()
	want := fmt.Sprint(id)
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		events := newSSEReader(resp.Body)
		for {
			m, err := events.next()
			if err != nil {
				c.t.Fatalf("%s: %s: no answer on the stream (HTTP %d): %v", c.name, method, resp.StatusCode, err)
			}
			if m.Method == "" && string(m.ID) == want {
				return m, resp.StatusCode
			}
		}
	}
	data, _ := io.ReadAll(resp.Body)
	var m rpcMessage
	if err := json.Unmarshal(data, &m); err != nil {
		c.t.Fatalf("%s: %s: HTTP %d %q: %v", c.name, method, resp.StatusCode, data, err)
	}
	return &m, resp.StatusCode
}

// task calls method and decodes its result as a Task; a JSON-RPC error
// fails the test.
func (c *taskClient) task(method string, params map[string]any) *wireTask {
	c.t.Helper()
	m, status := c.call(method, params, nil)
	if m.Error != nil {
		c.t.Fatalf("%s: %s %v: HTTP %d, error %v", c.name, method, params, status, m.Error)
	}
	var task wireTask
	if err := json.Unmarshal(m.Result, &task); err != nil {
		c.t.Fatalf("%s: %s: result %s: %v", c.name, method, m.Result, err)
	}
	return &task
}

// refused calls method and returns the JSON-RPC error it must end in.
func (c *taskClient) refused(method string, params map[string]any, hdr map[string]string) *rpcError {
	c.t.Helper()
	m, status := c.call(method, params, hdr)
	if m.Error == nil {
		c.t.Fatalf("%s: %s %v: answered %s (HTTP %d), want an error", c.name, method, params, m.Result, status)
	}
	return m.Error
}

// until polls tasks/get until the task's status is one of statuses.
func (c *taskClient) until(id string, statuses ...string) *wireTask {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		task := c.task("tasks/get", map[string]any{"taskId": id})
		if slices.Contains(statuses, task.Status) {
			return task
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: task %s still %q, want %v", c.name, id, task.Status, statuses)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type sseReader struct{ sc *bufio.Scanner }

func newSSEReader(r io.Reader) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	return &sseReader{sc: sc}
}

// next is the next JSON-RPC message on the stream.
func (s *sseReader) next() (*rpcMessage, error) {
	var data []string
	for s.sc.Scan() {
		line := s.sc.Text()
		switch {
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		case line == "" && len(data) > 0:
			var m rpcMessage
			if err := json.Unmarshal([]byte(strings.Join(data, "\n")), &m); err != nil {
				return nil, fmt.Errorf("event %q: %v", data, err)
			}
			return &m, nil
		}
	}
	if err := s.sc.Err(); err != nil {
		return nil, err
	}
	return nil, io.EOF
}

// A task created over the tailnet through tailgate, polled until it
// completes with its result inlined, cancelled while it works, answered
// through tasks/update while it waits for input; another node cannot see
// or cancel it (its tasks/get is refused exactly like one for a task that
// does not exist: tailgate serves each node's sessionless calls from
// children of its own); a client without the extension gets no task; a
// tasks/* request whose Mcp-Name is not its task id is refused. On a
// route with one target and on one with two, where task ids carry their
// target's prefix.
func TestTasksOverTailnet(t *testing.T) {
	for _, route := range tasksRoutes {
		t.Run(route.name, func(t *testing.T) { testTasksOverTailnet(t, route.config(t), route.prefix) })
	}
}

func testTasksOverTailnet(t *testing.T, config, prefix string) {
	tn := gatewaytest.NewTailnet(t)
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, config))
	laptop := newTaskClient(t, tn.Node(t, "laptop"), gw)
	desk := newTaskClient(t, tn.Node(t, "desk"), gw)

	// server/discover advertises the extension.
	m, _ := laptop.call("server/discover", nil, nil)
	var discover struct {
		Capabilities struct {
			Extensions map[string]json.RawMessage `json:"extensions"`
		} `json:"capabilities"`
	}
	if m.Error != nil || json.Unmarshal(m.Result, &discover) != nil {
		t.Fatalf("server/discover: %s %v", m.Result, m.Error)
	}
	if _, ok := discover.Capabilities.Extensions[demoserver.TasksExtension]; !ok {
		t.Errorf("server/discover does not advertise %s: %s", demoserver.TasksExtension, m.Result)
	}

	t.Run("created, polled, completed", func(t *testing.T) {
		laptop.t, desk.t = t, t
		created := laptop.task("tools/call", map[string]any{"name": prefix + "slow_compute", "arguments": map[string]any{"seconds": 0.5, "label": "polled"}})
		if created.ResultType != "task" || created.TaskID == "" || created.Status != "working" {
			t.Fatalf("tools/call: %+v, want a CreateTaskResult, working", created)
		}
		if !strings.HasPrefix(created.TaskID, prefix) || created.TaskID == prefix {
			t.Errorf("task id %q: want it prefixed %q, as the target's tools are", created.TaskID, prefix)
		}
		if created.TTLMs == nil || *created.TTLMs <= 0 || created.CreatedAt == "" || created.LastUpdatedAt == "" || created.Result != nil || created.RequestState != nil {
			t.Errorf("CreateTaskResult %+v: want ttlMs, createdAt, lastUpdatedAt, no result, no requestState", created)
		}
		got := laptop.task("tasks/get", map[string]any{"taskId": created.TaskID})
		if got.ResultType != "complete" || got.TaskID != created.TaskID || got.Status != "working" {
			t.Errorf("tasks/get at once: %+v, want the working task, resultType complete", got)
		}
		done := laptop.until(created.TaskID, "completed", "failed", "cancelled")
		if done.Status != "completed" || done.Result == nil || len(done.Result.Content) == 0 || !strings.Contains(done.Result.Content[0].Text, `"polled"`) {
			t.Fatalf("finished task: %+v, want completed with the tool's result inlined", done)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		laptop.t, desk.t = t, t
		created := laptop.task("tools/call", map[string]any{"name": prefix + "slow_compute", "arguments": map[string]any{"seconds": 60, "label": "cancelled"}})
		m, _ := laptop.call("tasks/cancel", map[string]any{"taskId": created.TaskID}, nil)
		var ack map[string]json.RawMessage
		if m.Error != nil || json.Unmarshal(m.Result, &ack) != nil {
			t.Fatalf("tasks/cancel: %s %v", m.Result, m.Error)
		}
		if string(ack["resultType"]) != `"complete"` || ack["taskId"] != nil || ack["status"] != nil {
			t.Errorf("tasks/cancel answered %s, want an empty ack with resultType complete", m.Result)
		}
		if got := laptop.task("tasks/get", map[string]any{"taskId": created.TaskID}); got.Status != "cancelled" || got.Result != nil {
			t.Errorf("after tasks/cancel: %+v, want cancelled", got)
		}
		// Idempotent on a terminal task.
		if m, _ := laptop.call("tasks/cancel", map[string]any{"taskId": created.TaskID}, nil); m.Error != nil {
			t.Errorf("second tasks/cancel: %v", m.Error)
		}
	})

	t.Run("input through tasks/update", func(t *testing.T) {
		laptop.t, desk.t = t, t
		created := laptop.task("tools/call", map[string]any{"name": prefix + "confirm_delete", "arguments": map[string]any{"filename": "notes.txt"}})
		waiting := laptop.until(created.TaskID, "input_required")
		if len(waiting.InputRequests) != 1 {
			t.Fatalf("input_required task: %+v, want one input request", waiting)
		}
		responses := map[string]any{}
		for key, req := range waiting.InputRequests {
			var r struct{ Method string }
			if json.Unmarshal(req, &r); r.Method != "elicitation/create" {
				t.Errorf("input request %s: %s, want elicitation/create", key, req)
			}
			responses[key] = map[string]any{"action": "accept", "content": map[string]any{"confirm": true}}
		}
		laptop.task("tasks/update", map[string]any{"taskId": created.TaskID, "inputResponses": responses})
		done := laptop.until(created.TaskID, "completed", "failed", "cancelled")
		if done.Status != "completed" || done.Result == nil || len(done.Result.Content) == 0 || done.Result.Content[0].Text != "deleted notes.txt" {
			t.Fatalf("finished task: %+v, want completed, deleted", done)
		}
	})

	t.Run("refused to another node", func(t *testing.T) {
		laptop.t, desk.t = t, t
		created := laptop.task("tools/call", map[string]any{"name": prefix + "slow_compute", "arguments": map[string]any{"seconds": 60, "label": "private"}})
		unknown := desk.refused("tasks/get", map[string]any{"taskId": prefix + "0123456789abcdef0123456789abcdef"}, nil)
		for _, method := range []string{"tasks/get", "tasks/cancel", "tasks/update"} {
			params := map[string]any{"taskId": created.TaskID}
			if method == "tasks/update" {
				params["inputResponses"] = map[string]any{}
			}
			err := desk.refused(method, params, nil)
			if err.Code != unknown.Code || err.Code != -32602 {
				t.Errorf("desk's %s of laptop's task: %v; want -32602, as for a task that does not exist (%v)", method, err, unknown)
			}
			if strings.Contains(err.Message, "private") {
				t.Errorf("desk's %s of laptop's task reveals it: %v", method, err)
			}
		}
		if got := laptop.task("tasks/get", map[string]any{"taskId": created.TaskID}); got.Status != "working" {
			t.Errorf("laptop's task after desk's tasks/cancel: %q, want still working", got.Status)
		}
		laptop.task("tasks/cancel", map[string]any{"taskId": created.TaskID})
	})

	t.Run("client without the extension", func(t *testing.T) {
		laptop.t, desk.t = t, t
		plain := &taskClient{t: t, name: laptop.name, url: laptop.url, hc: laptop.hc, noExt: true}
		m, _ := plain.call("tools/call", map[string]any{"name": prefix + "slow_compute", "arguments": map[string]any{"seconds": 0, "label": "sync"}}, nil)
		var res wireTask
		if m.Error != nil || json.Unmarshal(m.Result, &res) != nil || res.ResultType != "complete" || res.TaskID != "" {
			t.Errorf("tools/call without the extension: %s %v, want the result at once", m.Result, m.Error)
		}
		err := plain.refused("tools/call", map[string]any{"name": prefix + "failing_job", "arguments": map[string]any{}}, nil)
		if err.Code != demoserver.CodeMissingRequiredClientCapability || !strings.Contains(string(err.Data), demoserver.TasksExtension) {
			t.Errorf("a task-only tool without the extension: %v %s, want -32021 naming the extension", err, err.Data)
		}
		// SEP-2663: tasks/* from a client that did not declare the
		// extension get -32021 whatever the id (the suite's
		// tasks-capability-negotiation sends "gate-test"): with two
		// targets, before tailgate finds none for the id.
		for _, id := range []string{"gate-test", prefix + "gate-test"} {
			if err := plain.refused("tasks/get", map[string]any{"taskId": id}, nil); err.Code != demoserver.CodeMissingRequiredClientCapability {
				t.Errorf("tasks/get %q without the extension: %v, want -32021", id, err)
			}
		}
	})

	t.Run("Mcp-Name must name the task", func(t *testing.T) {
		laptop.t, desk.t = t, t
		created := laptop.task("tools/call", map[string]any{"name": prefix + "slow_compute", "arguments": map[string]any{"seconds": 60, "label": "routed"}})
		defer laptop.task("tasks/cancel", map[string]any{"taskId": created.TaskID})
		// SEP-2663: tasks/get, tasks/update and tasks/cancel carry
		// Mcp-Name: <taskId>; a gateway checks it as SEP-2243 asks.
		err := laptop.refused("tasks/get", map[string]any{"taskId": created.TaskID}, map[string]string{"Mcp-Name": "some-other-task"})
		if err.Code != -32020 {
			t.Errorf("tasks/get with a mismatched Mcp-Name: %v, want -32020", err)
		}
	})
}

// notifications/tasks reach a subscriptions/listen stream that asked for
// the task's id, through tailgate, with the stream's own subscription id
// and the task id the client knows (prefixed on a route with two targets):
// first the task's present state, then each change.
func TestTaskStatusNotificationsOverTailnet(t *testing.T) {
	for _, route := range tasksRoutes {
		if route.name == "remote target" {
			continue // a stateless upstream (go-sdk's handler) keeps no listens to relay
		}
		t.Run(route.name, func(t *testing.T) { testTaskStatusNotifications(t, route.config(t), route.prefix) })
	}
}

func testTaskStatusNotifications(t *testing.T, config, prefix string) {
	tn := gatewaytest.NewTailnet(t)
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, config))
	laptop := newTaskClient(t, tn.Node(t, "laptop"), gw)

	created := laptop.task("tools/call", map[string]any{"name": prefix + "confirm_delete", "arguments": map[string]any{"filename": "a.txt"}})
	waiting := laptop.until(created.TaskID, "input_required")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, listenID, err := laptop.post(ctx, "subscriptions/listen", map[string]any{"notifications": map[string]any{"taskIds": []string{created.TaskID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/event-stream") {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("subscriptions/listen: HTTP %d %s %s", resp.StatusCode, ct, body)
	}
	events := newSSEReader(resp.Body)
	msgs := make(chan *rpcMessage, 16)
	go func() {
		defer close(msgs)
		for {
			m, err := events.next()
			if err != nil {
				return
			}
			msgs <- m
		}
	}()
	next := func(what string) *rpcMessage {
		t.Helper()
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("the listen stream ended before %s", what)
			}
			return m
		case <-ctx.Done():
			t.Fatalf("no %s on the listen stream", what)
		}
		return nil
	}
	subscription := func(m *rpcMessage) string {
		var p struct {
			Meta map[string]json.RawMessage `json:"_meta"`
		}
		json.Unmarshal(m.Params, &p)
		return string(p.Meta["io.modelcontextprotocol/subscriptionId"])
	}

	ack := next("acknowledgement")
	if ack.Method != "notifications/subscriptions/acknowledged" || !strings.Contains(string(ack.Params), created.TaskID) {
		t.Fatalf("first on the listen stream: %s %s, want the acknowledgement naming the task", ack.Method, ack.Params)
	}
	if got := subscription(ack); got != fmt.Sprint(listenID) {
		t.Errorf("acknowledgement's subscription id %s, want the listen request's id %d", got, listenID)
	}
	statuses := func(want string) *wireTask {
		t.Helper()
		for {
			m := next("notifications/tasks " + want)
			if m.Method != "notifications/tasks" {
				t.Fatalf("on the listen stream: %s %s, want notifications/tasks", m.Method, m.Params)
			}
			if got := subscription(m); got != fmt.Sprint(listenID) {
				t.Errorf("notification's subscription id %s, want %d", got, listenID)
			}
			var task wireTask
			if err := json.Unmarshal(m.Params, &task); err != nil || task.TaskID != created.TaskID {
				t.Fatalf("notifications/tasks %s: %v", m.Params, err)
			}
			if task.Status == want {
				return &task
			}
		}
	}
	statuses("input_required")
	responses := map[string]any{}
	for key := range waiting.InputRequests {
		responses[key] = map[string]any{"action": "decline"}
	}
	laptop.task("tasks/update", map[string]any{"taskId": created.TaskID, "inputResponses": responses})
	done := statuses("completed")
	if done.Result == nil || len(done.Result.Content) == 0 || done.Result.Content[0].Text != "kept a.txt (decline)" {
		t.Errorf("completed notification: %+v, want the result inlined", done)
	}
}
