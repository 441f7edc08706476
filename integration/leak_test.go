package integration

import (
	"context"
	"encoding/json"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

// goroutineSlack is how many goroutines above the baseline the leak test
// tolerates: tsnet's own background work (netmap polls, magicsock) comes
// and goes on its own.
const goroutineSlack = 15

// 50 sessions end in the three ways sessions end — DELETE, idle TTL, a
// child killed with SIGKILL — and leave no process and no goroutine
// behind.
func TestNoLeaks(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	pids := t.TempDir()
	cfg := "config:\n  mcp:\n    sessionTtl: 1s\n" + seedLike("true", pids)
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, cfg))
	laptop := tn.Node(t, "laptop")
	ctx := context.Background()

	// Warm up, so that the baseline includes the tailnet's connections.
	warm := laptop.MCP(t, gw, 3000, "/mcp")
	warm.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}})
	warm.Close()
	waitGone(t, gw, 0)
	laptop.Client().CloseIdleConnections()
	baseline := settledGoroutines()

	var idle []*mcp.ClientSession
	for i := range 50 {
		cs, err := laptop.Connect(ctx, gw.URL(3000, "/mcp"), nil)
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "info", Arguments: map[string]any{}})
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		switch i % 3 {
		case 0: // the client ends it
			cs.Close()
		case 1: // the client goes quiet; the TTL ends it
			idle = append(idle, cs)
		case 2: // the child dies
			raw, _ := json.Marshal(res.StructuredContent)
			var info demoserver.InfoOut
			json.Unmarshal(raw, &info)
			syscall.Kill(info.PID, syscall.SIGKILL)
			if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err == nil {
				t.Errorf("session %d: call after SIGKILL succeeded", i)
			}
			cs.Close()
		}
	}
	started := gatewaytest.StartedPIDs(t, pids)
	if len(started) != 51 {
		t.Errorf("%d children started, want 51", len(started))
	}
	waitGone(t, gw, 30*time.Second)
	for _, pid := range started {
		if gatewaytest.Running(pid) {
			t.Errorf("child %d still running", pid)
		}
	}
	for _, cs := range idle {
		cs.Close()
	}
	laptop.Client().CloseIdleConnections()
	got := goroutinesBackTo(baseline+goroutineSlack, 15*time.Second)
	t.Logf("goroutines: baseline %d, after 50 sessions %d (slack %d)", baseline, got, goroutineSlack)
	if got > baseline+goroutineSlack {
		buf := make([]byte, 1<<20)
		os.WriteFile(os.Getenv("TAILGATE_GOROUTINE_DUMP")+"", buf[:runtime.Stack(buf, true)], 0o644)
		t.Errorf("goroutines grew from %d to %d", baseline, got)
	}
	st := gw.Server.Stats()
	t.Logf("stats: %+v", st)
}

// waitGone waits until the gateway has no session and no child left.
func waitGone(t *testing.T, gw *gatewaytest.Gateway, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(max(timeout, 5*time.Second))
	for {
		st := gw.Server.Stats()
		if st.Sessions == 0 && st.ChildrenRunning == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions %d, children %d still open", st.Sessions, st.ChildrenRunning)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// settledGoroutines counts goroutines once the count stops falling.
// goroutinesBackTo waits until the goroutines are no more than limit (a
// teardown under load takes a while: tsnet's per-connection goroutines,
// children's guards) and returns the count; a leak stays above it.
func goroutinesBackTo(limit int, within time.Duration) int {
	deadline := time.Now().Add(within)
	for {
		n := settledGoroutines()
		if n <= limit || time.Now().After(deadline) {
			return n
		}
	}
}

func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for range 20 {
		time.Sleep(100 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m >= n {
			return m
		}
		n = m
	}
	return n
}
