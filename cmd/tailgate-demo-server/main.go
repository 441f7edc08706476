// Command tailgate-demo-server is a stdio MCP server for trying and testing
// tailgate: tools echo, add, slow (sends progress), env, info, meta (the
// request's _meta, where a gateway passes the trace context) and roots, a
// prompt and a resource.
//
// With -faults (or TAILGATE_DEMO_FAULTS=1) it also has tools that break or
// load it on purpose, for tests: exit, hang, flood, big, garbage and grow.
// They are off by default: the demo is handed to AI clients, and an agent
// calls what it finds. The build tests use turns them on (see
// demoserver.Build).
//
// With -tasks (or TAILGATE_DEMO_TASKS=1) it also implements the MCP tasks
// extension (io.modelcontextprotocol/tasks) for 2026-07-28 clients, with the
// conformance suite's task fixtures: greet, slow_compute, failing_job,
// protocol_error_job, confirm_delete, multi_input, test_tool_with_task.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

// faultsByDefault, set at link time ("-X main.faultsByDefault=1"), makes
// the fault mode the default: the build tests run.
var faultsByDefault string

func main() {
	tasks := flag.Bool("tasks", false, "serve the tasks extension and its fixtures (also: "+demoserver.TasksEnv+"=1)")
	faults := flag.Bool("faults", faultsByDefault == "1", "add the fault tools exit, hang, flood, big, garbage and grow (also: "+demoserver.FaultsEnv+"=1)")
	flag.Parse()
	if *tasks {
		os.Setenv(demoserver.TasksEnv, "1")
	}
	if *faults {
		os.Setenv(demoserver.FaultsEnv, "1")
	}
	if err := demoserver.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "tailgate-demo-server:", err)
		os.Exit(1)
	}
}
