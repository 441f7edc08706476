package integration

//lint:file-ignore SA1019 roots, sampling and logging are deprecated by 2026-07-28 (SEP-2577) but clients and servers still use them, and the gateway relays them

import (
	"context"
	"encoding/json"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// npmModules is the project-local node_modules that `make npm-deps`
// installs (pinned in testdata/npm/package-lock.json).
func npmModules(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("testdata/npm/node_modules")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "@modelcontextprotocol", "server-everything")); err != nil {
		t.Fatalf("npm packages missing (%v): run `make npm-deps` (make test does)", err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node not found: %v", err)
	}
	return dir
}

// everythingTarget is a stdio target block running the reference server.
func everythingTarget(t testing.TB, name string) string {
	script := filepath.Join(npmModules(t), "@modelcontextprotocol", "server-everything", "dist", "index.js")
	return `
          - name: ` + name + `
            stdio:
              cmd: node
              args: ["` + script + `", "stdio"]`
}

// demoTarget is a stdio target block running the demo server, with extra
// stdio settings ("identityEnv: true").
func demoTarget(extra string) string {
	if extra != "" {
		extra = ", " + extra
	}
	return `
          - name: demo
            stdio: {cmd: $DEMO` + extra + `}`
}

func routeConfig(extra, targets string) string {
	return `
binds:
- port: 3000
  listeners:
  - routes:
    - name: mcp
      backends:
      - mcp:
` + extra + `
          targets:` + targets + "\n"
}

// client is a go-sdk client that answers every server→client request and
// records every notification, as a full-featured MCP client would.
type client struct {
	mu        sync.Mutex
	progress  []float64
	logs      []*mcp.LoggingMessageParams
	updated   []string
	toolsList int
	sampled   []*mcp.CreateMessageParams
	elicited  []*mcp.ElicitParams
}

func (c *client) options() *mcp.ClientOptions {
	return &mcp.ClientOptions{
		ProgressNotificationHandler: func(ctx context.Context, req *mcp.ProgressNotificationClientRequest) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.progress = append(c.progress, req.Params.Progress)
		},
		LoggingMessageHandler: func(ctx context.Context, req *mcp.LoggingMessageRequest) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.logs = append(c.logs, req.Params)
		},
		ResourceUpdatedHandler: func(ctx context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.updated = append(c.updated, req.Params.URI)
		},
		ToolListChangedHandler: func(ctx context.Context, req *mcp.ToolListChangedRequest) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.toolsList++
		},
		CreateMessageHandler: func(ctx context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			c.mu.Lock()
			c.sampled = append(c.sampled, req.Params)
			c.mu.Unlock()
			return &mcp.CreateMessageResult{Role: "assistant", Model: "test-model", Content: &mcp.TextContent{Text: "sampled by the test client"}}, nil
		},
		ElicitationHandler: func(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			c.mu.Lock()
			c.elicited = append(c.elicited, req.Params)
			c.mu.Unlock()
			return &mcp.ElicitResult{Action: "decline"}, nil
		},
	}
}

func (c *client) wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c.mu.Lock()
		ok := cond()
		c.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func resultText(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		switch c := c.(type) {
		case *mcp.TextContent:
			b.WriteString(c.Text)
		case *mcp.EmbeddedResource:
			if c.Resource != nil {
				b.WriteString(c.Resource.Text)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// The reference server, behind tailgate, over the tailnet: everything it
// offers works as if the client talked to it directly.
func TestServerEverythingConformance(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, routeConfig("", everythingTarget(t, "everything"))))
	laptop := tn.Node(t, "laptop")
	rec := &client{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mc := mcp.NewClient(&mcp.Implementation{Name: "conformance"}, rec.options())
	mc.AddRoots(&mcp.Root{URI: "file:///workspace/conformance-root", Name: "workspace"})
	cs, err := mc.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: gw.URL(3000, "/mcp"), HTTPClient: laptop.HTTPClient()}, gatewaytest.LegacySession)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	caps := cs.InitializeResult().Capabilities
	if caps.Tools == nil || caps.Prompts == nil || caps.Resources == nil || !caps.Resources.Subscribe || caps.Completions == nil || caps.Logging == nil {
		t.Errorf("capabilities not mirrored: %+v", caps)
	}

	// Every tool is listed and works with valid arguments.
	args := map[string]map[string]any{
		"echo":                           {"message": "hello"},
		"get-annotated-message":          {"messageType": "success"},
		"get-env":                        {},
		"get-resource-links":             {"count": 2},
		"get-resource-reference":         {"resourceId": 1, "resourceType": "Text"},
		"get-structured-content":         {"location": "Chicago"},
		"get-sum":                        {"a": 19, "b": 23},
		"get-tiny-image":                 {},
		"gzip-file-as-resource":          {"data": "data:text/plain;base64,aGVsbG8gdGFpbGdhdGU=", "name": "hello.txt.gz"},
		"toggle-subscriber-updates":      {},
		"toggle-simulated-logging":       {},
		"trigger-long-running-operation": {"duration": 1, "steps": 4},
		"get-roots-list":                 {},
		"trigger-elicitation-request":    {},
		"trigger-sampling-request":       {"prompt": "say hi", "maxTokens": 10},
		"simulate-research-query":        {"topic": "tailnets"},
	}
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	for name := range args {
		if !slices.Contains(names, name) {
			t.Errorf("tool %s not listed (got %v)", name, names)
		}
	}
	if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
		t.Fatalf("setLevel: %v", err)
	}
	// Subscribe before the updates are switched on.
	if err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: "demo://resource/static/document/architecture.md"}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	results := map[string]string{}
	for _, name := range names {
		a, ok := args[name]
		if !ok {
			t.Errorf("tool %s has no test arguments", name)
			continue
		}
		params := &mcp.CallToolParams{Name: name, Arguments: a}
		if name == "trigger-long-running-operation" {
			params.SetProgressToken("lro")
		}
		res, err := cs.CallTool(ctx, params)
		if err != nil {
			t.Errorf("call %s: %v", name, err)
			continue
		}
		if name == "simulate-research-query" {
			// It requires MCP's experimental tasks, which go-sdk's client
			// (and so tailgate) does not speak: the server's own refusal
			// comes through unchanged.
			if !res.IsError || !strings.Contains(resultText(res), "task augmentation") {
				t.Errorf("simulate-research-query: %q", resultText(res))
			}
			continue
		}
		if res.IsError {
			t.Errorf("call %s: tool error %s", name, resultText(res))
		}
		results[name] = resultText(res)
	}
	if !strings.Contains(results["echo"], "hello") || !strings.Contains(results["get-sum"], "42") {
		t.Errorf("echo %q, get-sum %q", results["echo"], results["get-sum"])
	}
	// The long-running operation's progress all arrived, the last one
	// included.
	rec.wait(t, "4 progress notifications", func() bool { return len(rec.progress) == 4 })
	// Roots, sampling and elicitation reached this client's handlers.
	if !strings.Contains(results["get-roots-list"], "file:///workspace/conformance-root") {
		t.Errorf("roots: %q", results["get-roots-list"])
	}
	if len(rec.sampled) != 1 || !strings.Contains(results["trigger-sampling-request"], "sampled by the test client") {
		t.Errorf("sampling: %d requests, result %q", len(rec.sampled), results["trigger-sampling-request"])
	}
	if len(rec.elicited) != 1 || !strings.Contains(strings.ToLower(results["trigger-elicitation-request"]), "decline") {
		t.Errorf("elicitation: %d requests, result %q", len(rec.elicited), results["trigger-elicitation-request"])
	}
	// Simulated logging and subscription updates arrive on their own.
	rec.wait(t, "log messages", func() bool { return len(rec.logs) > 0 })
	rec.wait(t, "resource updates", func() bool { return len(rec.updated) > 0 })
	if got := rec.updated[0]; got != "demo://resource/static/document/architecture.md" {
		t.Errorf("updated %q", got)
	}
	// Switch both off again.
	cs.CallTool(ctx, &mcp.CallToolParams{Name: "toggle-simulated-logging", Arguments: map[string]any{}})
	cs.CallTool(ctx, &mcp.CallToolParams{Name: "toggle-subscriber-updates", Arguments: map[string]any{}})

	// Resources, templates, prompts, completion.
	resources, err := cs.ListResources(ctx, nil)
	if err != nil || len(resources.Resources) == 0 {
		t.Fatalf("resources: %v", err)
	}
	for _, r := range resources.Resources {
		read, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: r.URI})
		if err != nil || len(read.Contents) == 0 {
			t.Errorf("read %s: %v", r.URI, err)
		}
	}
	templates, err := cs.ListResourceTemplates(ctx, nil)
	if err != nil || len(templates.ResourceTemplates) == 0 {
		t.Errorf("templates: %v %+v", err, templates)
	}
	if read, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "demo://resource/dynamic/text/3"}); err != nil || len(read.Contents) == 0 {
		t.Errorf("templated read: %v", err)
	}
	prompts, err := cs.ListPrompts(ctx, nil)
	if err != nil || len(prompts.Prompts) < 4 {
		t.Fatalf("prompts: %v %+v", err, prompts)
	}
	promptArgs := map[string]map[string]string{
		"simple-prompt":      nil,
		"args-prompt":        {"city": "Paris"},
		"completable-prompt": {"department": "Engineering", "name": "Alice"},
		"resource-prompt":    {"resourceType": "Text", "resourceId": "1"},
	}
	for _, p := range prompts.Prompts {
		got, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: p.Name, Arguments: promptArgs[p.Name]})
		if err != nil || len(got.Messages) == 0 {
			t.Errorf("prompt %s: %v", p.Name, err)
		}
	}
	comp, err := cs.Complete(ctx, &mcp.CompleteParams{
		Ref:      &mcp.CompleteReference{Type: "ref/prompt", Name: "completable-prompt"},
		Argument: mcp.CompleteParamsArgument{Name: "department", Value: "Eng"},
	})
	if err != nil || !slices.Contains(comp.Completion.Values, "Engineering") {
		t.Errorf("completion: %v %+v", err, comp)
	}
}

// A client that gives up on a call cancels it at the child.
func TestCancellationReachesChild(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	logs := &gatewaytest.Logs{}
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, seedLike("true", t.TempDir())), gatewaytest.CaptureLogs(logs))
	cs := tn.Node(t, "laptop").MCP(t, gw, 3000, "/mcp")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"steps": 50, "delayMs": 100}})
	if err == nil {
		t.Fatal("call outlived its context")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !logs.Contains("slow: cancelled after") {
		if time.Now().After(deadline) {
			t.Fatal("the child never saw the cancellation")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The session goes on.
	if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "still here"}}); err != nil {
		t.Errorf("after cancel: %v", err)
	}
}

// Two targets, the reference server and the repo's Go server, are one MCP
// server with prefixed names.
func TestMultiplexEverythingAndDemo(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	targets := everythingTarget(t, "everything") + demoTarget("")
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, routeConfig("", targets)))
	cs := tn.Node(t, "laptop").MCP(t, gw, 3000, "/mcp")
	ctx := context.Background()
	names := toolNames(t, cs)
	for _, want := range []string{"everything_echo", "everything_get-sum", "demo_echo", "demo_add"} {
		if !slices.Contains(names, want) {
			t.Errorf("tools %v lack %s", names, want)
		}
	}
	for tool, args := range map[string]map[string]any{
		"everything_get-sum": {"a": 1, "b": 2},
		"demo_add":           {"a": 1, "b": 2},
	} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
		if err != nil || !strings.Contains(resultText(res), "3") {
			t.Errorf("%s: %v %q", tool, err, resultText(res))
		}
	}
	res, err := cs.ListResources(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var sawDemo, sawEverything bool
	for _, r := range res.Resources {
		sawDemo = sawDemo || strings.HasPrefix(r.URI, "demo+demo://")
		sawEverything = sawEverything || strings.HasPrefix(r.URI, "everything+demo://")
	}
	if !sawDemo || !sawEverything {
		t.Errorf("resource URIs not mapped per target: %+v", res.Resources)
	}
	read, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "demo+demo://readme"})
	if err != nil || read.Contents[0].Text != "tailgate demo server" {
		t.Errorf("read demo resource: %v %+v", err, read)
	}
	if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "demo_greet", Arguments: map[string]string{"name": "x"}}); err != nil {
		t.Errorf("demo_greet: %v", err)
	}
	if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "everything_simple-prompt"}); err != nil {
		t.Errorf("everything_simple-prompt: %v", err)
	}
	comp, err := cs.Complete(ctx, &mcp.CompleteParams{
		Ref:      &mcp.CompleteReference{Type: "ref/prompt", Name: "everything_completable-prompt"},
		Argument: mcp.CompleteParamsArgument{Name: "department", Value: "Eng"},
	})
	if err != nil || !slices.Contains(comp.Completion.Values, "Engineering") {
		t.Errorf("completion routed by prefix: %v %+v", err, comp)
	}
	instr := cs.InitializeResult().Instructions
	if !strings.Contains(instr, "[demo] ") {
		t.Errorf("instructions not merged per target: %q", instr)
	}
}

// The TypeScript SDK's client, through a local forwarder into the tailnet,
// lists tools and calls one with progress.
func TestTypeScriptClient(t *testing.T) {
	modules := npmModules(t)
	tn := gatewaytest.NewTailnet(t)
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, routeConfig("", everythingTarget(t, "everything"))))
	local := gw.Bridge(t, tn.Node(t, "ts-client"), 3000)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "testdata/npm/client.mjs", "http://"+local+"/mcp")
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("ts client: %v\n%s\n%s", err, out, stderr)
	}
	var got struct {
		Session  string   `json:"session"`
		Tools    []string `json:"tools"`
		Progress []int    `json:"progress"`
		Result   string   `json:"result"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("ts client output %q: %v", out, err)
	}
	if got.Session == "" || !slices.Contains(got.Tools, "trigger-long-running-operation") || len(got.Progress) != 2 || got.Result == "" {
		t.Errorf("ts client saw %+v", got)
	}
}

// README's Claude Desktop recipe: the client runs mcp-remote (pinned in
// testdata/npm) as a local stdio server pointed at tailgate with
// --allow-http, and talks to the gateway's targets through it.
func TestMCPRemoteClient(t *testing.T) {
	proxy := filepath.Join(npmModules(t), "mcp-remote", "dist", "proxy.js")
	tn := gatewaytest.NewTailnet(t)
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, routeConfig("", `
          - name: demo
            stdio: {cmd: "`+gatewaytest.DemoServer(t)+`"}`)))
	local := gw.Bridge(t, tn.Node(t, "desktop"), 3000)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.Command("node", proxy, "http://"+local+"/mcp", "--allow-http")
	// mcp-remote keeps its OAuth state under ~/.mcp-auth.
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	cmd.Stderr = testLogWriter{t, "mcp-remote: "}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "claude-desktop-like"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, gatewaytest.LegacySession)
	if err != nil {
		t.Fatalf("connect through mcp-remote: %v", err)
	}
	defer cs.Close()
	tools, err := cs.ListTools(ctx, nil)
	if err != nil || !slices.ContainsFunc(tools.Tools, func(tool *mcp.Tool) bool { return tool.Name == "echo" }) {
		t.Fatalf("tools through mcp-remote: %v %+v", err, tools)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "via mcp-remote"}})
	if err != nil || res.IsError || res.Content[0].(*mcp.TextContent).Text != "via mcp-remote" {
		t.Fatalf("echo through mcp-remote: %v %+v", err, res)
	}
}

// everythingProcesses lists the running processes (not zombies) whose
// command line mentions the reference server.
func everythingProcesses(t *testing.T) []int {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), "server-everything") {
			continue
		}
		if gatewaytest.Running(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// The seed's deployment runs the reference server through npx, which
// starts node as a grandchild; here a shell adds one more level. Ending
// the session ends the whole tree.
func TestNpxProcessTreeReaped(t *testing.T) {
	dir := filepath.Dir(npmModules(t))
	if _, err := exec.LookPath("npx"); err != nil {
		t.Fatalf("npx not found: %v", err)
	}
	tn := gatewaytest.NewTailnet(t)
	target := `
          - name: everything
            stdio:
              cmd: /bin/sh
              args: ["-c", "cd ` + dir + ` && npx --offline --no-install @modelcontextprotocol/server-everything"]`
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, routeConfig("", target)))
	before := everythingProcesses(t)
	cs := tn.Node(t, "laptop").MCP(t, gw, 3000, "/mcp")
	if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err != nil {
		t.Fatal(err)
	}
	during := everythingProcesses(t)
	if len(during) <= len(before) {
		t.Fatalf("no server-everything processes seen while the session is open (%v)", during)
	}
	t.Logf("process tree while open: %v", during)
	cs.Close()
	waitGone(t, gw, 10*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for len(everythingProcesses(t)) > len(before) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if left := everythingProcesses(t); len(left) > len(before) {
		t.Errorf("processes left after the session ended: %v", left)
	}
}
