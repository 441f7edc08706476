package gatewaytest

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

var demo struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// DemoServer is the path of the demo stdio MCP server, built once per test
// binary. Call RemoveDemoServer from TestMain when done.
func DemoServer(t testing.TB) string {
	t.Helper()
	demo.once.Do(func() {
		demo.dir, demo.err = os.MkdirTemp("", "tailgate-integration-")
		if demo.err == nil {
			demo.bin, demo.err = demoserver.Build(demo.dir)
		}
	})
	if demo.err != nil {
		t.Fatal(demo.err)
	}
	return demo.bin
}

// RemoveDemoServer removes the built demo server.
func RemoveDemoServer() {
	if demo.dir != "" {
		os.RemoveAll(demo.dir)
	}
}

// StartedPIDs lists the demo server processes that started with dir as
// their pid directory (demoserver.PIDDirEnv).
func StartedPIDs(t testing.TB, dir string) []int {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Running reports whether process pid exists and is not a zombie.
func Running(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	for i := len(stat) - 1; i > 0; i-- {
		if stat[i] == ')' {
			return i+2 < len(stat) && stat[i+2] != 'Z'
		}
	}
	return true
}
