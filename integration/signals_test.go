package integration

import (
	"context"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// SIGHUP while tailgate starts or stops does not kill it (status 129, its
// children left behind): one sent while it joins the tailnet is a reload
// once it runs, and those sent while it shuts down are ignored; it exits 0.
// Before, SIGHUP was caught only while the reload loop ran, and either one
// killed the process.
func TestSIGHUPDuringStartAndStop(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	cfg := writeConfig(t, tailscaleBlock(tn.ControlURL, "")+"config: {adminAddr: \"127.0.0.1:0\"}\n"+seedLike("true", t.TempDir()))
	p := startTailgate(t, cfg)
	p.waitLine(t, "joining tailnet", 30*time.Second)
	for range 3 {
		p.cmd.Process.Signal(syscall.SIGHUP)
		time.Sleep(10 * time.Millisecond)
	}
	p.waitLine(t, "tailgate ready", 45*time.Second)
	p.waitLine(t, "SIGHUP: reloading config", 10*time.Second)

	// A call in flight keeps the shutdown going for a second. (The
	// session is not closed at the end: the gateway is gone by then.)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := tn.Node(t, "laptop").Connect(ctx, (&gatewaytest.Gateway{Addr: tailnetAddr(t, p)}).URL(3000, "/mcp"), nil)
	if err != nil {
		t.Fatal(err)
	}
	slow := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"steps": 5, "delayMs": 200}})
		slow <- err
	}()
	time.Sleep(200 * time.Millisecond)
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitLine(t, "shutting down", 10*time.Second)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				p.cmd.Process.Signal(syscall.SIGHUP)
			}
		}
	}()
	code := p.wait(t, 15*time.Second)
	if code != 0 {
		t.Fatalf("exit %d (%v) after SIGHUPs during shutdown, want 0", code, p.err)
	}
	if !strings.Contains(p.output(), "SIGHUP ignored: shutting down") {
		t.Errorf("the SIGHUPs during shutdown were not logged as ignored")
	}
	if err := <-slow; err != nil {
		t.Errorf("the call in flight at SIGTERM: %v", err)
	}
}
