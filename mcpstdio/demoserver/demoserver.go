// Package demoserver is a small stdio MCP server used by tailgate's tests,
// benchmarks and demo: tools echo, add, slow (with progress), env, info,
// meta (the request's _meta) and roots, a prompt and a resource. It needs
// nothing but Go. Its fault mode (the -faults flag or
// TAILGATE_DEMO_FAULTS=1; the build tests use, Build, has it on) adds
// tools that break or load the server on purpose: exit, hang, flood, big,
// garbage and grow. They are off by default because the
// demo is what people point their AI clients at, and an agent that finds a
// tool named exit will call it. Its tasks mode (NewTasks, RunTasks; the
// -tasks flag or TAILGATE_DEMO_TASKS=1) adds the tasks extension and the
// conformance suite's task fixtures (tasks.go).
package demoserver

//lint:file-ignore SA1019 roots, sampling and logging are deprecated by 2026-07-28 (SEP-2577) but clients and servers still use them, and the gateway relays them

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// PIDDirEnv names a directory where, when set, each server process writes
// an empty file named after its pid, so tests can find every child that
// was started.
const PIDDirEnv = "TAILGATE_DEMO_PIDDIR"

type EchoIn struct {
	Message string `json:"message" jsonschema:"the text to echo back"`
}

type AddIn struct {
	A float64 `json:"a" jsonschema:"first addend"`
	B float64 `json:"b" jsonschema:"second addend"`
}

type AddOut struct {
	Sum float64 `json:"sum"`
}

type SlowIn struct {
	Steps   int `json:"steps,omitempty" jsonschema:"number of progress steps (default 3)"`
	DelayMS int `json:"delayMs,omitempty" jsonschema:"milliseconds per step (default 100)"`
}

type EnvIn struct {
	Names []string `json:"names" jsonschema:"environment variables to report"`
}

type EnvOut struct {
	// Values holds the variables that are set; unset ones are absent.
	Values map[string]string `json:"values"`
}

type InfoOut struct {
	PID  int `json:"pid"`
	PPID int `json:"ppid"`
}

// MetaOut is what the meta tool reports: the request's _meta as the
// server got it, where a gateway puts the trace context (traceparent,
// tracestate, baggage) it passes on.
type MetaOut struct {
	Meta map[string]any `json:"meta"`
}

type HangIn struct {
	IgnoreTerm bool `json:"ignoreTerm,omitempty" jsonschema:"also ignore SIGTERM"`
}

type FloodIn struct {
	Bytes int `json:"bytes" jsonschema:"how many bytes to write"`
}

type ExitIn struct {
	Code   int    `json:"code,omitempty" jsonschema:"exit status"`
	Stderr string `json:"stderr,omitempty" jsonschema:"a line to write to stderr first"`
}

// AskRootsEnv names a duration (such as "500ms"); when set, the server
// asks the client for its roots that long after the session is
// initialized, unprompted, as some real servers do. Tests use it to check
// that a client that never answers hangs nothing.
const AskRootsEnv = "TAILGATE_ASK_ROOTS_AFTER"

// VersionsEnv names a comma-separated list of the MCP protocol versions
// the server speaks; "2025-11-25" makes it a server of the session era,
// which answers no server/discover and asks its client with requests of
// its own.
const VersionsEnv = "TAILGATE_MCP_VERSIONS"

// CacheEnv, when set to "<ttlMs>,<public|private>", makes the demo's lists
// and reads carry those cache hints (SEP-2549).
const CacheEnv = "TAILGATE_CACHE_HINTS"

// ModernOnlyEnv, when set, makes the demo a server of MCP 2026-07-28 only:
// it refuses initialize (-32601), as a server written for that version
// alone may, and gains ask_name, a tool that asks for input the
// 2026-07-28 way (an input_required result, SEP-2322).
const ModernOnlyEnv = "TAILGATE_MODERN_ONLY"

// FaultsEnv, when set to a non-empty value, turns on the fault mode: the
// tools exit, hang, flood, big, garbage and grow (see the package doc).
const FaultsEnv = "TAILGATE_DEMO_FAULTS"

// New returns the demo server, with the fault tools when FaultsEnv is set.
func New() *mcp.Server {
	return newServer(&mcp.ServerOptions{
		Instructions: "A demo server for tailgate: echo, add, slow, env, info, meta, roots.",
	})
}

// newServer returns a server with opts (amended from the environment) and
// the demo's tools, prompt and resource.
func newServer(opts *mcp.ServerOptions) *mcp.Server {
	amendOptions(opts)
	s := mcp.NewServer(&mcp.Implementation{Name: "tailgate-demo-server", Version: "1.0.0"}, opts)
	if os.Getenv(ModernOnlyEnv) != "" {
		modernOnly(s) // its discover names 2026-07-28 alone: see amendOptions
	}
	addDemoTools(s)
	if os.Getenv(FaultsEnv) != "" {
		addFaultTools(s)
	}
	addPromptAndResources(s)
	return s
}

// amendOptions amends opts from the environment: the protocol versions,
// an unprompted roots/list, the completion handler and cache hints.
func amendOptions(opts *mcp.ServerOptions) {
	if v := os.Getenv(VersionsEnv); v != "" {
		opts.SupportedProtocolVersions = strings.Split(v, ",")
	}
	if os.Getenv(ModernOnlyEnv) != "" {
		opts.SupportedProtocolVersions = []string{"2026-07-28"}
	}
	if d, err := time.ParseDuration(os.Getenv(AskRootsEnv)); err == nil {
		opts.InitializedHandler = func(ctx context.Context, req *mcp.InitializedRequest) {
			go func() {
				time.Sleep(d)
				res, err := req.Session.ListRoots(context.Background(), nil)
				fmt.Fprintf(os.Stderr, "tailgate-demo-server: roots/list answered: %v %v\n", res, err)
			}()
		}
	}
	if opts.CompletionHandler == nil {
		opts.CompletionHandler = complete
	}
	if ttl, scope, ok := strings.Cut(os.Getenv(CacheEnv), ","); ok {
		ms, _ := strconv.Atoi(ttl)
		opts.SetCacheable = func(ctx context.Context, req mcp.Request, c *mcp.Cacheable) {
			c.TTLMs, c.CacheScope = ms, scope
		}
	}
}

// addDemoTools gives s the demo's tools: echo, add, slow, env, info,
// meta and roots.
func addDemoTools(s *mcp.Server) {
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "Echo a message back."},
		func(ctx context.Context, req *mcp.CallToolRequest, in EchoIn) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Message}}}, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "add", Description: "Add two numbers."},
		func(ctx context.Context, req *mcp.CallToolRequest, in AddIn) (*mcp.CallToolResult, AddOut, error) {
			sum := in.A + in.B
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: strconv.FormatFloat(sum, 'g', -1, 64)}}}, AddOut{Sum: sum}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "slow", Description: "Work in steps, sending progress after each."},
		func(ctx context.Context, req *mcp.CallToolRequest, in SlowIn) (*mcp.CallToolResult, any, error) {
			steps, delay := in.Steps, time.Duration(in.DelayMS)*time.Millisecond
			if steps <= 0 {
				steps = 3
			}
			if in.DelayMS <= 0 {
				delay = 100 * time.Millisecond
			}
			token := req.Params.GetProgressToken()
			for i := 1; i <= steps; i++ {
				select {
				case <-ctx.Done():
					// Tests look for this line to see that cancellation
					// reached the server.
					fmt.Fprintf(os.Stderr, "slow: cancelled after %d of %d steps\n", i-1, steps)
					return nil, nil, ctx.Err()
				case <-time.After(delay):
				}
				if token != nil {
					req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
						ProgressToken: token, Progress: float64(i), Total: float64(steps),
						Message: fmt.Sprintf("step %d of %d", i, steps),
					})
				}
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("done after %d steps", steps)}}}, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "env", Description: "Report the named environment variables that are set."},
		func(ctx context.Context, req *mcp.CallToolRequest, in EnvIn) (*mcp.CallToolResult, EnvOut, error) {
			out := EnvOut{Values: map[string]string{}}
			for _, n := range in.Names {
				if v, ok := os.LookupEnv(n); ok {
					out.Values[n] = v
				}
			}
			return nil, out, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "info", Description: "Report this server's process id and parent process id."},
		func(ctx context.Context, req *mcp.CallToolRequest, in struct{}) (*mcp.CallToolResult, InfoOut, error) {
			return nil, InfoOut{PID: os.Getpid(), PPID: os.Getppid()}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "meta", Description: "Report the _meta this request arrived with (the trace context a gateway passed on)."},
		func(ctx context.Context, req *mcp.CallToolRequest, in struct{}) (*mcp.CallToolResult, MetaOut, error) {
			meta := map[string]any(req.Params.Meta)
			if meta == nil {
				meta = map[string]any{}
			}
			return nil, MetaOut{Meta: meta}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "roots", Description: "Ask the client for its roots and list them."},
		func(ctx context.Context, req *mcp.CallToolRequest, in struct{}) (*mcp.CallToolResult, any, error) {
			res, err := req.Session.ListRoots(ctx, nil)
			if err != nil {
				return nil, nil, err
			}
			var uris []string
			for _, r := range res.Roots {
				uris = append(uris, r.URI)
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: strings.Join(uris, ",")}}}, nil, nil
		})
}

// addPromptAndResources gives s the demo's prompt (greet), its resource
// (demo://readme) and its resource templates.
func addPromptAndResources(s *mcp.Server) {
	s.AddPrompt(&mcp.Prompt{Name: "greet", Description: "Greet someone.", Arguments: []*mcp.PromptArgument{{Name: "name", Required: true}}},
		func(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "Say hello to " + req.Params.Arguments["name"] + "."}}}}, nil
		})
	s.AddResource(&mcp.Resource{URI: "demo://readme", Name: "readme", MIMEType: "text/plain"},
		func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "text/plain", Text: "tailgate demo server"}}}, nil
		})
	// Two templates that overlap: demo://notes/x is an expansion of both.
	s.AddResourceTemplate(&mcp.ResourceTemplate{URITemplate: "demo://{+path}", Name: "any-demo", MIMEType: "text/plain"},
		func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "text/plain", Text: "anything at " + req.Params.URI}}}, nil
		})
	s.AddResourceTemplate(&mcp.ResourceTemplate{URITemplate: noteTemplate, Name: "note", MIMEType: "text/plain"},
		func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "text/plain", Text: "a note at " + req.Params.URI}}}, nil
		})
}

// addFaultTools gives s the tools of the fault mode, which break or load
// the server on purpose.
func addFaultTools(s *mcp.Server) {
	mcp.AddTool(s, &mcp.Tool{Name: "exit", Description: "Exit the server process at once (for fault tests)."},
		func(ctx context.Context, req *mcp.CallToolRequest, in ExitIn) (*mcp.CallToolResult, any, error) {
			if in.Stderr != "" {
				fmt.Fprintln(os.Stderr, in.Stderr)
			}
			os.Exit(in.Code)
			return nil, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "hang", Description: "Never answer; ignore cancellation, and SIGTERM too if asked (for fault tests)."},
		func(ctx context.Context, req *mcp.CallToolRequest, in HangIn) (*mcp.CallToolResult, any, error) {
			if in.IgnoreTerm {
				signal.Ignore(syscall.SIGTERM)
			}
			select {}
		})
	mcp.AddTool(s, &mcp.Tool{Name: "flood", Description: "Write this many bytes of text to stderr as fast as possible, then answer."},
		func(ctx context.Context, req *mcp.CallToolRequest, in FloodIn) (*mcp.CallToolResult, any, error) {
			line := []byte(strings.Repeat("x", 99) + "\n")
			for n := 0; n < in.Bytes; n += len(line) {
				os.Stderr.Write(line)
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "flooded"}}}, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "big", Description: "Answer with this many bytes of text (for memory tests)."},
		func(ctx context.Context, req *mcp.CallToolRequest, in FloodIn) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: strings.Repeat("x", in.Bytes)}}}, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "garbage", Description: "Write a line that is not JSON-RPC to stdout (for fault tests)."},
		func(ctx context.Context, req *mcp.CallToolRequest, in struct{}) (*mcp.CallToolResult, any, error) {
			os.Stdout.Write([]byte("this is not JSON\n"))
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "wrote garbage"}}}, nil, nil
		})
	var grown atomic.Bool
	mcp.AddTool(s, &mcp.Tool{Name: "grow", Description: "Add a tool named extra (or remove it again), which announces tools/list_changed."},
		func(ctx context.Context, req *mcp.CallToolRequest, in struct{}) (*mcp.CallToolResult, any, error) {
			if grown.Load() {
				grown.Store(false)
				s.RemoveTools("extra")
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "removed extra"}}}, nil, nil
			}
			grown.Store(true)
			mcp.AddTool(s, &mcp.Tool{Name: "extra", Description: "A tool added at run time."},
				func(ctx context.Context, req *mcp.CallToolRequest, in struct{}) (*mcp.CallToolResult, any, error) {
					return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "extra"}}}, nil, nil
				})
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "added extra"}}}, nil, nil
		})
}

// modernOnly makes s refuse initialize and gives it ask_name.
func modernOnly(s *mcp.Server) {
	s.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method == "initialize" {
				return nil, &jsonrpc.Error{Code: jsonrpc.CodeMethodNotFound, Message: "initialize: this server speaks MCP 2026-07-28 only (server/discover)"}
			}
			return next(ctx, method, req)
		}
	})
	mcp.AddTool(s, &mcp.Tool{Name: "ask_name", Description: "Ask the caller's name (an input_required result), then greet them."},
		func(ctx context.Context, req *mcp.CallToolRequest, in struct{}) (*mcp.CallToolResult, any, error) {
			if r, ok := req.Params.InputResponses["name"].(*mcp.ElicitResult); ok && r.Action == "accept" && req.Params.RequestState == "asked-name" {
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("Hello, %v!", r.Content["name"])}}}, nil, nil
			}
			return &mcp.CallToolResult{
				InputRequests: mcp.InputRequestMap{"name": &mcp.ElicitParams{Message: "What is your name?", RequestedSchema: map[string]any{
					"type": "object", "properties": map[string]any{"name": map[string]any{"type": "string"}}, "required": []string{"name"},
				}}},
				RequestState: "asked-name",
			}, nil, nil
		})
}

// noteTemplate is the demo's resource template.
const noteTemplate = "demo://notes/{name}"

// complete completes the greet prompt's name and the note template's
// name from a fixed list, by prefix.
func complete(ctx context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
	ref := req.Params.Ref
	if ref == nil || req.Params.Argument.Name != "name" || !(ref.Type == "ref/prompt" && ref.Name == "greet" || ref.Type == "ref/resource" && ref.URI == noteTemplate) {
		return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: []string{}}}, nil
	}
	values := []string{}
	for _, v := range []string{"alice", "alex", "bob"} {
		if strings.HasPrefix(v, req.Params.Argument.Value) {
			values = append(values, v)
		}
	}
	return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: values, Total: len(values)}}, nil
}

// Run serves the demo server on stdin/stdout until stdin closes, in its
// tasks mode when TasksEnabled.
func Run(ctx context.Context) error {
	if dir := os.Getenv(PIDDirEnv); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(os.Getpid())), nil, 0o644); err != nil {
			return err
		}
	}
	if TasksEnabled() {
		fmt.Fprintf(os.Stderr, "tailgate-demo-server: serving on stdio with the tasks extension, pid %d\n", os.Getpid())
		return RunTasks(ctx)
	}
	fmt.Fprintf(os.Stderr, "tailgate-demo-server: serving on stdio, pid %d\n", os.Getpid())
	return New().Run(ctx, &mcp.StdioTransport{})
}

// Build compiles cmd/tailgate-demo-server, with its fault mode on, into dir
// and returns the binary's path. Tests use it to run the server as a real
// child process.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "tailgate-demo-server")
	// The tests' server is the fault mode's: they crash, wedge and flood
	// it on purpose, whatever environment a config gives the child.
	out, err := exec.Command("go", "build", "-ldflags", "-X main.faultsByDefault=1", "-o", bin, "github.com/tailgate-dev/tailgate/cmd/tailgate-demo-server").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build demo server: %v\n%s", err, out)
	}
	return bin, nil
}

// TestMain builds the server into a temporary directory, sets *bin to its
// path, runs the tests and exits; a test package's TestMain calls it.
func TestMain(m interface{ Run() int }, bin *string) {
	dir, err := os.MkdirTemp("", "tailgate-demo-")
	if err == nil {
		*bin, err = Build(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// LogWriter writes to tb's log until the test ends, then discards: a
// gateway's goroutines may log a little after the test that started them
// has finished, which testing.T does not allow.
func LogWriter(tb testing.TB) io.Writer {
	w := &logWriter{tb: tb}
	tb.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

type logWriter struct {
	tb   testing.TB
	mu   sync.Mutex
	done bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.tb.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
