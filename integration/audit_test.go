package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/gateway/audit"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
)

// The audit trail over the tailnet names each caller by its tailnet
// identity and the gateway by its node: alice's allowed call and the CI
// runner's refused one, each with the rule that decided, and the
// connections they came on; the chain verifies as written.
func TestAuditTrailOverTheTailnet(t *testing.T) {
	tm := newTeam(t)
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	cfg := `
config:
  audit: {file: ` + file + `}
binds:
- port: 3000
  listeners:
  - routes:
    - name: team
      policies:
        mcpAuthorization:
          rules:
          - deny: '"tag:ci" in source.tailscale.node.tags && mcp.tool.name == "echo"'
          - 'true'
      backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: $DEMO}
`
	gw := tm.tn.Gateway(t, gatewaytest.ParseConfig(t, cfg))
	alice := tm.alice.MCP(t, gw, 3000, "/mcp")
	ci := tm.ci.MCP(t, gw, 3000, "/mcp")
	ctx := context.Background()
	if _, err := alice.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "hi"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ci.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "hi"}}); err == nil {
		t.Fatal("the CI runner's echo was allowed")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(bytes.NewReader(data), ""); err != nil {
		t.Fatalf("the trail does not verify: %v", err)
	}
	var calls, conns []audit.Record
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		var r audit.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		if r.Gateway != gw.Node.DNSName() {
			t.Errorf("record names gateway %q, want %q", r.Gateway, gw.Node.DNSName())
		}
		switch {
		case r.Event == "mcp.call" && r.Name == "echo":
			calls = append(calls, r)
		case r.Event == "connection":
			conns = append(conns, r)
		}
	}
	var aliceCall, ciCall *audit.Record
	for i := range calls {
		switch calls[i].Caller.Login {
		case tm.aliceID:
			aliceCall = &calls[i]
		case "tagged-devices":
			ciCall = &calls[i]
		}
	}
	if aliceCall == nil || aliceCall.Decision != "allow" || aliceCall.Outcome != "ok" || aliceCall.Caller.Node == "" || aliceCall.Caller.NodeID == "" || aliceCall.Rule == "" {
		t.Errorf("alice's call: %+v", aliceCall)
	}
	if ciCall == nil || ciCall.Decision != "deny" || ciCall.Outcome != "denied" || !strings.HasSuffix(ciCall.Rule, "mcpAuthorization.rules[0]") || len(ciCall.Caller.Tags) == 0 {
		t.Errorf("the CI runner's call: %+v", ciCall)
	}
	logins := map[string]bool{}
	for _, c := range conns {
		if c.Decision == "allow" {
			logins[c.Caller.Login] = true
		}
	}
	if !logins[tm.aliceID] || !logins["tagged-devices"] {
		t.Errorf("admitted connections on the trail by login: %v", logins)
	}
}
