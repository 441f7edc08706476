package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"tailscale.com/tstest/integration/testcontrol"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

// faultGateway is a gateway with the demo server as target, short
// timeouts, and its children's pids recorded.
func faultGateway(t *testing.T, stdioExtra string, opts ...gatewaytest.GatewayOption) (*gatewaytest.Tailnet, *gatewaytest.Gateway, *gatewaytest.Node, string) {
	t.Helper()
	tn := gatewaytest.NewTailnet(t)
	pids := t.TempDir()
	cfg := strings.Replace(seedLike("true", pids), "              cmd: $DEMO\n", "              cmd: $DEMO\n"+stdioExtra, 1)
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, cfg), opts...)
	return tn, gw, tn.Node(t, "laptop"), pids
}

func childPID(t *testing.T, cs *mcp.ClientSession) int {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "info", Arguments: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(res.StructuredContent)
	var info demoserver.InfoOut
	json.Unmarshal(raw, &info)
	return info.PID
}

func assertReaped(t *testing.T, gw *gatewaytest.Gateway, pids string) {
	t.Helper()
	waitGone(t, gw, 10*time.Second)
	for _, pid := range gatewaytest.StartedPIDs(t, pids) {
		if gatewaytest.Running(pid) {
			t.Errorf("child %d still running", pid)
		}
	}
}

func TestFaultChildKilledMidCall(t *testing.T) {
	_, gw, laptop, pids := faultGateway(t, "")
	opts, progress := gatewaytest.Progress()
	cs := laptop.MCPWith(t, gw, 3000, "/mcp", opts)
	pid := childPID(t, cs)
	errc := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(context.Background(), gatewaytest.SlowCall("p", 100, 100))
		errc <- err
	}()
	gatewaytest.AwaitProgress(t, progress, 1) // the call runs in the child
	syscall.Kill(pid, syscall.SIGKILL)
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), `target \"demo\"`) && !strings.Contains(err.Error(), `target "demo"`) || !strings.Contains(err.Error(), "killed") {
			t.Errorf("in-flight call: %v; want an error naming the target and the signal", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the in-flight call hung after its child was killed")
	}
	// The session is gone; the client must start a new one.
	if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err == nil {
		t.Error("call on the dead session succeeded")
	}
	cs2 := laptop.MCP(t, gw, 3000, "/mcp")
	if _, err := cs2.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err != nil {
		t.Errorf("new session: %v", err)
	}
	cs2.Close()
	assertReaped(t, gw, pids)
}

// A child that answers nothing and ignores SIGTERM: the request times out,
// and closing the session kills it.
func TestFaultChildHangs(t *testing.T) {
	_, gw, laptop, pids := faultGateway(t, "              requestTimeout: 500ms\n")
	cs := laptop.MCP(t, gw, 3000, "/mcp")
	start := time.Now()
	_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "hang", Arguments: map[string]any{"ignoreTerm": true}})
	if err == nil || !strings.Contains(err.Error(), "no answer in time") || time.Since(start) > 5*time.Second {
		t.Errorf("hung call: %v after %v", err, time.Since(start))
	}
	cs.Close()
	assertReaped(t, gw, pids)
}

// A child that floods stderr keeps working: the drain never stops, the log
// is rate-limited, and memory does not grow with the flood.
func TestFaultChildFloodsStderr(t *testing.T) {
	logs := &gatewaytest.Logs{}
	_, gw, laptop, pids := faultGateway(t, "", gatewaytest.CaptureLogs(logs))
	cs := laptop.MCP(t, gw, 3000, "/mcp")
	for range 3 {
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "flood", Arguments: map[string]any{"bytes": 20 << 20}})
		if err != nil || resultText(res) != "flooded\n" {
			t.Fatalf("flood: %v", err)
		}
	}
	if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "still fine"}}); err != nil {
		t.Errorf("after 60 MB of stderr: %v", err)
	}
	if !logs.Contains("child stderr rate-limited") {
		t.Error("no rate-limit notice in the log")
	}
	size := logs.Len()
	if size > 5<<20 {
		t.Errorf("the log grew by %d bytes for 60 MB of stderr", size)
	}
	cs.Close()
	assertReaped(t, gw, pids)
}

// A child that writes a line that is not JSON-RPC on stdout.
func TestFaultChildWritesGarbage(t *testing.T) {
	_, gw, laptop, pids := faultGateway(t, "")
	cs := laptop.MCP(t, gw, 3000, "/mcp")
	_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "garbage", Arguments: map[string]any{}})
	t.Logf("call that wrote garbage: %v", err)
	// Whatever go-sdk makes of the line, the client gets an answer or a
	// clear error, never a hang, and a new session works.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err != nil {
		t.Logf("after garbage the session ended: %v", err)
		cs = laptop.MCP(t, gw, 3000, "/mcp")
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}); err != nil {
			t.Fatalf("new session: %v", err)
		}
	}
	cs.Close()
	assertReaped(t, gw, pids)
}

// After start-up the control server goes away: existing sessions keep
// working and known peers can still connect.
func TestFaultControlServerGone(t *testing.T) {
	tn, gw, laptop, pids := faultGateway(t, "")
	cs := laptop.MCP(t, gw, 3000, "/mcp")
	if err := tn.Dev.StopControl(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": strconv.Itoa(i)}}); err != nil {
			t.Fatalf("existing session without control: %v", err)
		}
	}
	laptop.Client().CloseIdleConnections()
	cs2 := laptop.MCP(t, gw, 3000, "/mcp")
	if _, err := cs2.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "new"}}); err != nil {
		t.Fatalf("new session from a known peer without control: %v", err)
	}
	cs.Close()
	cs2.Close()
	assertReaped(t, gw, pids)
}

// The state directory cannot be created: exit 2 with one clear line.
func TestFaultStateDirUnusable(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	blocker := filepath.Join(t.TempDir(), "file")
	os.WriteFile(blocker, nil, 0o600)
	cfg := writeConfig(t, fmt.Sprintf(`
tailscale:
  controlURL: %s
  stateDir: %s/state
config: {adminAddr: "127.0.0.1:0"}
`, tn.ControlURL, blocker)+seedLike("true", t.TempDir()))
	p := startTailgate(t, cfg)
	if code := p.wait(t, 20*time.Second); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	out := strings.TrimSpace(p.output())
	last := out[strings.LastIndex(out, "\n")+1:]
	if !strings.HasPrefix(last, "tailgate: tailnet: state dir "+blocker+"/state") || strings.Contains(out, "goroutine ") {
		t.Errorf("last line %q", last)
	}
}

// SIGTERM with many calls in flight: each finishes or gets an error, the
// process exits 0 within 10 s, and no child survives.
func TestFaultSIGTERMUnderLoad(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	pids := t.TempDir()
	cfg := writeConfig(t, tailscaleBlock(tn.ControlURL, "")+"config: {adminAddr: \"127.0.0.1:0\"}\n"+seedLike("true", pids))
	p := startTailgate(t, cfg)
	p.waitLine(t, "tailgate ready", 45*time.Second)
	gw := &gatewaytest.Gateway{Addr: tailnetAddr(t, p)}
	laptop := tn.Node(t, "laptop")
	const sessions = 10
	results := make(chan error, sessions*4)
	opts, progress := gatewaytest.Progress()
	for range sessions {
		cs := laptop.MCPWith(t, gw, 3000, "/mcp", opts)
		for i := range 4 {
			go func() {
				_, err := cs.CallTool(context.Background(), gatewaytest.SlowCall(i, 3, 300))
				results <- err
			}()
		}
	}
	// Every call is running in a child (each has done its first step)
	// when SIGTERM comes.
	gatewaytest.AwaitProgress(t, progress, sessions*4)
	begin := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	t.Logf("exited %v after SIGTERM", time.Since(begin).Round(time.Millisecond))
	var ok, failed int
	for range sessions * 4 {
		select {
		case err := <-results:
			if err == nil {
				ok++
			} else {
				failed++
			}
		case <-time.After(15 * time.Second):
			t.Fatal("a call in flight at SIGTERM never returned")
		}
	}
	t.Logf("calls in flight at SIGTERM: %d finished, %d got an error", ok, failed)
	for _, pid := range gatewaytest.StartedPIDs(t, pids) {
		if gatewaytest.Running(pid) {
			t.Errorf("child %d survived", pid)
		}
	}
}

// The gateway process listens on no host address but loopback: its MCP
// ports exist only on the tailnet.
func TestListensOnNoHostAddress(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	cfg := writeConfig(t, tailscaleBlock(tn.ControlURL, "")+anyAdminPort+seedLike("true", t.TempDir()))
	p := startTailgate(t, cfg)
	p.waitLine(t, "tailgate ready", 45*time.Second)
	inodes := socketInodes(t, p.cmd.Process.Pid)
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] { // 0A: LISTEN
				continue
			}
			if !loopbackHex(fields[1]) {
				t.Errorf("tailgate listens on host address %s (%s)", fields[1], table)
			}
		}
		f.Close()
	}
}

// socketInodes are the socket inodes the process pid holds.
func socketInodes(t *testing.T, pid int) map[string]bool {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	return inodes
}

// loopbackHex reports whether a /proc/net/tcp{,6} local address
// ("0100007F:1F90") is on loopback.
func loopbackHex(addr string) bool {
	ip, _, _ := strings.Cut(addr, ":")
	switch len(ip) {
	case 8:
		return strings.HasSuffix(ip, "7F") // 127.x.x.x, little-endian
	case 32:
		return ip == "00000000000000000000000001000000" || strings.HasPrefix(ip, "0000000000000000FFFF0000") && strings.HasSuffix(ip, "7F")
	}
	return false
}

// derpCut is a TCP forwarder in front of the tailnet's DERP server that a
// test can cut, to take DERP away from running nodes.
type derpCut struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

// cutDERP routes the tailnet's DERP through a forwarder and returns it.
func cutDERP(dc **derpCut) gatewaytest.TailnetOption {
	return func(c *testcontrol.Server) {
		node := c.DERPMap.Regions[1].Nodes[0]
		target := net.JoinHostPort(node.IPv4, strconv.Itoa(node.DERPPort))
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		d := &derpCut{ln: ln}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				up, err := net.Dial("tcp", target)
				if err != nil {
					c.Close()
					continue
				}
				d.mu.Lock()
				d.conns = append(d.conns, c, up)
				d.mu.Unlock()
				go func() { io.Copy(up, c); up.Close() }()
				go func() { io.Copy(c, up); c.Close() }()
			}
		}()
		node.DERPPort = ln.Addr().(*net.TCPAddr).Port
		*dc = d
	}
}

// cut closes the forwarder and every connection through it.
func (d *derpCut) cut() {
	d.ln.Close()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
}

// DERP goes away while the peers have a direct path: sessions go on, and
// a known peer opens new ones.
func TestFaultDERPGone(t *testing.T) {
	var derp *derpCut
	tn := gatewaytest.NewTailnet(t, cutDERP(&derp))
	pids := t.TempDir()
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, seedLike("true", pids)))
	laptop := tn.Node(t, "laptop")
	cs := laptop.MCP(t, gw, 3000, "/mcp")
	// Wait for the direct (UDP on 127.0.0.1) path to the gateway.
	lc, _ := laptop.LocalClient()
	deadline := time.Now().Add(20 * time.Second)
	for {
		cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "ping"}})
		st, err := lc.Status(context.Background())
		direct := false
		if err == nil {
			for _, p := range st.Peer {
				if slices.Contains(p.TailscaleIPs, gw.Addr) && p.CurAddr != "" {
					direct = true
				}
			}
		}
		if direct {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no direct path between the nodes")
		}
		time.Sleep(200 * time.Millisecond)
	}
	derp.cut()
	for i := range 5 {
		if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": strconv.Itoa(i)}}); err != nil {
			t.Fatalf("session without DERP: %v", err)
		}
	}
	laptop.Client().CloseIdleConnections()
	cs2 := laptop.MCP(t, gw, 3000, "/mcp")
	if _, err := cs2.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "new"}}); err != nil {
		t.Fatalf("new session without DERP: %v", err)
	}
	cs.Close()
	cs2.Close()
	assertReaped(t, gw, pids)
}
