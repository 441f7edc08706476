package integration

import (
	"context"
	"errors"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// A call of the demo's slow tool that runs for ten minutes (6000 steps of
// 100 ms): longer than tailgate's requestTimeout, so only closing its
// session can end it in time.
const tenMinuteSteps, tenMinuteDelayMS = 6000, 100

// startTenMinuteCall starts a ten-minute call on cs, waits until it runs
// in the child (its first progress), and returns where its error will come.
func startTenMinuteCall(t *testing.T, cs *mcp.ClientSession, progress <-chan *mcp.ProgressNotificationParams) <-chan error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(context.Background(), gatewaytest.SlowCall("long", tenMinuteSteps, tenMinuteDelayMS))
		errc <- err
	}()
	gatewaytest.AwaitProgress(t, progress, 1)
	return errc
}

// checkCallEndedByGateway waits for the call's outcome: an MCP error
// response from the gateway, not a hang and not a broken connection.
func checkCallEndedByGateway(t *testing.T, errc <-chan error, within time.Duration) {
	t.Helper()
	select {
	case err := <-errc:
		var wire *jsonrpc.Error
		switch {
		case err == nil:
			t.Error("the ten-minute call finished")
		case !errors.As(err, &wire):
			t.Errorf("the call in flight got %v (%T), want an MCP error response", err, err)
		default:
			t.Logf("the call in flight got MCP error %d %q", wire.Code, wire.Message)
		}
	case <-time.After(within):
		t.Fatalf("the call in flight got no answer within %v", within)
	}
}

// checkNoProcessLeft checks that no demo server that recorded itself in
// pids, nor anything in its process group, is still running.
func checkNoProcessLeft(t *testing.T, pids string) {
	t.Helper()
	started := gatewaytest.StartedPIDs(t, pids)
	if len(started) == 0 {
		t.Fatal("no child recorded its pid: the check proves nothing")
	}
	for _, pid := range started {
		if gatewaytest.Running(pid) {
			t.Errorf("child %d still running", pid)
		}
		// Children lead process groups of their own.
		if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process group %d still has members (%v)", pid, err)
		}
	}
}

// SIGTERM to the binary with a ten-minute call in flight: after the drain
// timeout the call's session is closed, its client gets an MCP error, the
// process exits 0 within 10 s (README's promise), and no child is left.
func TestSIGTERMWithTenMinuteCall(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	pids := t.TempDir()
	cfg := writeConfig(t, tailscaleBlock(tn.ControlURL, "")+anyAdminPort+seedLike("true", pids))
	p := startTailgate(t, cfg)
	p.waitLine(t, "tailgate ready", 45*time.Second)
	opts, progress := gatewaytest.Progress()
	cs := tn.Node(t, "laptop").MCPWith(t, &gatewaytest.Gateway{Addr: tailnetAddr(t, p)}, 3000, "/mcp", opts)
	errc := startTenMinuteCall(t, cs, progress)

	begin := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
	t.Logf("exited %v after SIGTERM", time.Since(begin).Round(time.Millisecond))
	checkCallEndedByGateway(t, errc, 5*time.Second)
	checkNoProcessLeft(t, pids)
}

// DELETE of a session with a ten-minute call in flight: answered within
// 10 s, by which time the session's child is reaped; the call's client
// gets an MCP error.
func TestDELETEWithTenMinuteCall(t *testing.T) {
	_, gw, laptop, pids := faultGateway(t, "")
	opts, progress := gatewaytest.Progress()
	cs := laptop.MCPWith(t, gw, 3000, "/mcp", opts)
	pid := childPID(t, cs)
	errc := startTenMinuteCall(t, cs, progress)

	req, _ := http.NewRequest(http.MethodDelete, gw.URL(3000, "/mcp"), nil)
	req.Header.Set("Mcp-Session-Id", cs.ID())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	begin := time.Now()
	resp, err := laptop.Client().Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("DELETE with a call in flight: %v after %v", err, time.Since(begin))
	}
	resp.Body.Close()
	took := time.Since(begin)
	t.Logf("DELETE answered %d in %v", resp.StatusCode, took.Round(time.Millisecond))
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("DELETE: %d, want 204", resp.StatusCode)
	}
	if gatewaytest.Running(pid) {
		t.Errorf("child %d still running when DELETE was answered", pid)
	}
	checkCallEndedByGateway(t, errc, 5*time.Second)
	checkNoProcessLeft(t, pids)
	waitGone(t, gw, 5*time.Second) // the gateway's own count agrees
}

// A legacy SSE session answers everything on its one stream: a shutdown
// with a ten-minute call in flight answers the call there, with an MCP
// error, before the stream ends, and leaves no process.
func TestShutdownWithTenMinuteCallOnLegacySSE(t *testing.T) {
	_, gw, laptop, pids := faultGateway(t, "")
	opts, progress := gatewaytest.Progress()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "sse-client"}, opts).Connect(ctx,
		&mcp.SSEClientTransport{Endpoint: gw.URL(3000, "/sse"), HTTPClient: laptop.Client()}, gatewaytest.LegacySession)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	errc := startTenMinuteCall(t, cs, progress)

	begin := time.Now()
	gw.Shutdown(t)
	took := time.Since(begin)
	t.Logf("shut down in %v", took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("shutdown took %v with a call in flight", took)
	}
	checkCallEndedByGateway(t, errc, 5*time.Second)
	checkNoProcessLeft(t, pids)
}
