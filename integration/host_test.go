package integration

import (
	"context"
	"encoding/json"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"tailscale.com/client/local"
	"tailscale.com/ipn"
)

var tailscaledBin struct {
	once sync.Once
	path string
	err  error
}

// buildTailscaled builds tailscaled from the pinned tailscale.com module.
func buildTailscaled(t *testing.T) string {
	t.Helper()
	tailscaledBin.once.Do(func() {
		tailscaledBin.path = filepath.Join(filepath.Dir(gatewaytest.DemoServer(t)), "tailscaled")
		out, err := exec.Command("go", "build", "-o", tailscaledBin.path, "tailscale.com/cmd/tailscaled").CombinedOutput()
		if err != nil {
			tailscaledBin.err = err
			t.Logf("%s", out)
		}
	})
	if tailscaledBin.err != nil {
		t.Fatalf("build tailscaled: %v", tailscaledBin.err)
	}
	return tailscaledBin.path
}

// startTailscaled runs a real tailscaled, without root or TUN (userspace
// networking), joined to tn as hostname. It returns its LocalAPI socket.
func startTailscaled(t *testing.T, tn *gatewaytest.Tailnet, hostname string) string {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "ts.sock")
	cmd := exec.Command(buildTailscaled(t), "--tun=userspace-networking", "--statedir="+dir, "--socket="+sock, "--port=0", "--no-logs-no-support")
	cmd.Env = append(os.Environ(), "TS_NO_LOGS_NO_SUPPORT=true")
	logf, _ := os.Create(filepath.Join(dir, "tailscaled.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	lc := &local.Client{Socket: sock, UseSocketOnly: true}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		if _, err := lc.Status(ctx); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("tailscaled did not come up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// What `tailscale up --login-server=... --hostname=...` does.
	err := lc.Start(ctx, ipn.Options{UpdatePrefs: &ipn.Prefs{ControlURL: tn.ControlURL, WantRunning: true, Hostname: hostname}})
	if err != nil {
		t.Fatal(err)
	}
	if err := lc.StartLoginInteractive(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		st, err := lc.Status(ctx)
		if err == nil && st.BackendState == ipn.Running.String() && len(st.TailscaleIPs) > 0 {
			return sock
		}
		if ctx.Err() != nil {
			raw, _ := os.ReadFile(filepath.Join(dir, "tailscaled.log"))
			t.Fatalf("tailscaled not running: %v\n%s", err, raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mode: host is the seed's own deployment — the host's tailscaled — with
// WhoIs through its LocalAPI instead of agentgateway's extAuthz call.
func TestHostMode(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	sock := startTailscaled(t, tn, "hostgw")
	cfg := writeConfig(t, `
tailscale:
  mode: host
  socket: `+sock+`
config: {adminAddr: "127.0.0.1:0"}
frontendPolicies:
  networkAuthorization:
    rules:
    - 'has(source.tailscale) && source.tailscale.node.hostname == "laptop"'`+routeConfig("", demoTarget("identityEnv: true")))
	p := startTailgate(t, cfg)
	p.waitLine(t, "tailgate ready", 30*time.Second)
	addr := tailnetAddr(t, p)

	laptop := tn.Node(t, "laptop")
	cs := laptop.MCP(t, &gatewaytest.Gateway{Addr: addr}, 3000, "/mcp")
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "env", Arguments: map[string]any{"names": []string{"TAILGATE_USER_LOGIN", "TAILGATE_NODE_HOSTNAME"}}})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(res.StructuredContent)
	if !strings.Contains(string(raw), `"TAILGATE_NODE_HOSTNAME":"laptop"`) || !strings.Contains(string(raw), laptop.Login(t)) {
		t.Errorf("identity through the host's WhoIs: %s", raw)
	}
	// Another node is refused by the identity rule.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if cs, err := tn.Node(t, "stranger").Connect(ctx, (&gatewaytest.Gateway{Addr: addr}).URL(3000, "/mcp"), nil); err == nil {
		cs.Close()
		t.Error("a node outside the rule got in")
	}
}
