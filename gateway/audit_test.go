package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/gateway/audit"
)

const auditConfig = `
config:
  audit:
    file: AUDIT
    arguments: {include: true, redact: [message]}
binds:
- port: 3000
  listeners:
  - routes:
    - name: mcp
      policies:
        mcpAuthorization:
          rules: ['mcp.tool.name != "env"']
      backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: DEMO}
`

// readTrail is the records of the trail in file, verified.
func readTrail(t *testing.T, file string) []audit.Record {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(bytes.NewReader(data), ""); err != nil {
		t.Fatalf("the trail does not verify: %v", err)
	}
	var recs []audit.Record
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		var r audit.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	return recs
}

func findRecord(recs []audit.Record, match func(audit.Record) bool) *audit.Record {
	for i := range recs {
		if match(recs[i]) {
			return &recs[i]
		}
	}
	return nil
}

// Every decision is on the audit trail, with who, what, which rule and
// how it ended, before its answer reaches the client: a connection
// admitted, a call allowed (its arguments kept, a named field redacted),
// a call denied with the rule, a list with what policy filtered out.
func TestAuditTrail(t *testing.T) {
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	_, base := serveLoopback(t, strings.ReplaceAll(auditConfig, "AUDIT", file))
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	ctx := context.Background()
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "hunter2-s3cret"}}); err != nil {
		t.Fatal(err)
	}
	// No wait: the record was written before the answer left.
	recs := readTrail(t, file)
	echo := findRecord(recs, func(r audit.Record) bool { return r.Event == "mcp.call" && r.Name == "echo" })
	if echo == nil {
		t.Fatalf("the echo call is not on the trail when its answer came:\n%+v", recs)
	}
	if echo.Decision != "allow" || echo.Outcome != "ok" || echo.Target != "demo" || echo.Route != "mcp" || echo.Caller.Address == "" || len(echo.ArgsDigest) != 64 {
		t.Errorf("echo's record: %+v", echo)
	}
	if s := string(echo.Args); strings.Contains(s, "hunter2") || s != `{"message":"[redacted]"}` {
		t.Errorf("echo's arguments: %s", s)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "env", Arguments: map[string]any{"names": []string{"HOME"}}}); err == nil {
		t.Fatal("env was allowed")
	}
	if _, err := cs.ListTools(ctx, nil); err != nil {
		t.Fatal(err)
	}
	recs = readTrail(t, file)
	env := findRecord(recs, func(r audit.Record) bool { return r.Event == "mcp.call" && r.Name == "env" })
	if env == nil || env.Decision != "deny" || env.Outcome != "denied" || env.Rule != "binds[0].listeners[0].routes[0].policies.mcpAuthorization.rules" || env.Reason != "no allow rule matched" {
		t.Errorf("env's record: %+v", env)
	}
	list := findRecord(recs, func(r audit.Record) bool { return r.Event == "mcp.list" && r.Method == "tools/list" })
	if list == nil || list.Filtered != 1 || list.Outcome != "ok" {
		t.Errorf("tools/list's record (env filtered out): %+v", list)
	}
	if findRecord(recs, func(r audit.Record) bool { return r.Event == "connection" && r.Decision == "allow" }) == nil {
		t.Errorf("no connection on the trail:\n%+v", recs)
	}
	if bytes.Contains(must(os.ReadFile(file)), []byte("hunter2")) {
		t.Error("a redacted argument is on the trail")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// The decisions taken before any MCP is read are on the trail too: a
// connection networkAuthorization refused, with its rule and reason, and
// a route's authorization of an HTTP request, refused and admitted, with
// the route, method and path.
func TestAuditTrailBeforeMCP(t *testing.T) {
	tests := []struct {
		name   string
		config string
		status int
		want   func(audit.Record) bool
	}{
		{
			name: "connection refused",
			config: `
frontendPolicies:
  networkAuthorization:
    rules: ['cidr("100.64.0.0/10").containsIP(source.address)']
` + auditConfig,
			status: http.StatusForbidden,
			want: func(r audit.Record) bool {
				return r.Event == "connection" && r.Decision == "deny" && strings.HasPrefix(r.Caller.Address, "127.0.0.1:") &&
					r.Rule == "frontendPolicies.networkAuthorization.rules" && r.Reason == "no allow rule matched"
			},
		},
		{
			name:   "request refused by the route",
			config: strings.Replace(auditConfig, "      policies:\n", "      policies:\n        authorization:\n          rules: ['request.method == \"GET\"']\n", 1),
			status: http.StatusForbidden,
			want: func(r audit.Record) bool {
				return r.Event == "http" && r.Decision == "deny" && r.Route == "mcp" && r.Method == "POST" && r.Name == "/mcp" &&
					r.Rule == "binds[0].listeners[0].routes[0].policies.authorization.rules"
			},
		},
		{
			name:   "request admitted by the route",
			config: strings.Replace(auditConfig, "      policies:\n", "      policies:\n        authorization:\n          rules: ['request.method == \"POST\"']\n", 1),
			status: http.StatusOK,
			want: func(r audit.Record) bool {
				return r.Event == "http" && r.Decision == "allow" && r.Route == "mcp" && r.Method == "POST" && r.Name == "/mcp"
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "audit.jsonl")
			_, base := serveLoopback(t, strings.ReplaceAll(tt.config, "AUDIT", file))
			if resp := postInitialize(t, base+"/mcp"); resp.StatusCode != tt.status {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tt.status)
			}
			// The decision was written before the answer left.
			if recs := readTrail(t, file); findRecord(recs, tt.want) == nil {
				t.Errorf("the decision is not on the trail:\n%+v", recs)
			}
		})
	}
}
