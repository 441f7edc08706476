package integration

import (
	"context"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// ppidOf is pid's parent, from /proc.
func ppidOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// guarded reports whether a guard process watches the child with pid
// server (mcpstdio's supervise: "tailgate __tailgate-guard <pid>").
func guarded(server int) bool {
	entries, _ := os.ReadDir("/proc")
	want := "\x00__tailgate-guard\x00" + strconv.Itoa(server) + "\x00"
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && strings.Contains(string(b), want) {
			return true
		}
	}
	return false
}

// After kill -9 of the gateway, a child's grandchild (`sh -c "sleep 300 &
// exec server"`) does not survive: each child has a guard that kills its
// process group when the gateway dies (mcpstdio's supervise). Before,
// Pdeathsig killed the child only, and the grandchild lived on under init.
func TestKill9LeavesNoGrandchild(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	pids := t.TempDir()
	target := `
          - name: demo
            stdio:
              cmd: /bin/sh
              args: ["-c", "sleep 300 & echo $! > ` + pids + `/grandchild; exec $DEMO"]`
	cfg := writeConfig(t, tailscaleBlock(tn.ControlURL, "")+"config: {adminAddr: \"127.0.0.1:0\"}\n"+routeConfig("", target))
	p := startTailgate(t, cfg)
	p.waitLine(t, "tailgate ready", 45*time.Second)
	cs := tn.Node(t, "laptop").MCP(t, &gatewaytest.Gateway{Addr: tailnetAddr(t, p)}, 3000, "/mcp")
	if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(pids, "grandchild"))
	if err != nil {
		t.Fatal(err)
	}
	grandchild, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	t.Cleanup(func() { syscall.Kill(grandchild, syscall.SIGKILL) })
	server := ppidOf(t, grandchild)
	if !guarded(server) {
		t.Fatal("the child is not guarded: mcpstdio/process.go's startProcess must call supervise(cmd)")
	}

	p.cmd.Process.Kill()
	<-p.exited
	deadline := time.Now().Add(5 * time.Second)
	for gatewaytest.Running(grandchild) || gatewaytest.Running(server) {
		if time.Now().After(deadline) {
			t.Fatalf("after kill -9 of the gateway: grandchild running %v, server running %v", gatewaytest.Running(grandchild), gatewaytest.Running(server))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
