// Command tailgate-demo-server is a stdio MCP server for trying and testing
// tailgate: tools echo, add, slow (sends progress), env, info and exit.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

func main() {
	if err := demoserver.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "tailgate-demo-server:", err)
		os.Exit(1)
	}
}
