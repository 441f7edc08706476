package demoserver

import (
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestFaultToolsOnlyInFaultMode runs the real binary as `make demo` builds
// it, with -faults, and as the tests build it: an AI client pointed at the
// demo finds no tool that kills or wedges the server.
func TestFaultToolsOnlyInFaultMode(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if out, err := exec.Command("go", "build", "-o", plain, "github.com/tailgate-dev/tailgate/cmd/tailgate-demo-server").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	testBuild, err := Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	faults := []string{"exit", "hang", "flood", "big", "garbage", "grow"}
	for _, tc := range []struct {
		name       string
		cmd        *exec.Cmd
		wantFaults bool
	}{
		{"make demo's build", exec.Command(plain), false},
		{"-faults", exec.Command(plain, "-faults"), true},
		{"env", func() *exec.Cmd { c := exec.Command(plain); c.Env = append(c.Environ(), FaultsEnv+"=1"); return c }(), true},
		{"the tests' build", exec.Command(testBuild), true},
		{"the tests' build, -faults=false", exec.Command(testBuild, "-faults=false"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil)
			cs, err := c.Connect(ctx, &mcp.CommandTransport{Command: tc.cmd}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			res, err := cs.ListTools(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, tool := range res.Tools {
				names = append(names, tool.Name)
			}
			for _, want := range []string{"echo", "add", "slow", "env", "info", "roots"} {
				if !slices.Contains(names, want) {
					t.Errorf("tools %v lack %s", names, want)
				}
			}
			for _, f := range faults {
				if got := slices.Contains(names, f); got != tc.wantFaults {
					t.Errorf("tool %s listed: %v, want %v (tools %v)", f, got, tc.wantFaults, names)
				}
			}
		})
	}
}
