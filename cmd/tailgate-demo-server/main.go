// Command tailgate-demo-server is a stdio MCP server for trying and testing
// tailgate: tools echo, add, slow (sends progress), env, info and exit.
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

func main() {
	tasks := flag.Bool("tasks", false, "serve the tasks extension and its fixtures (also: "+demoserver.TasksEnv+"=1)")
	flag.Parse()
	if *tasks {
		os.Setenv(demoserver.TasksEnv, "1")
	}
	if err := demoserver.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "tailgate-demo-server:", err)
		os.Exit(1)
	}
}
