package integration

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest/otlptest"
	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

// tracingTeamConfig traces to ENDPOINT a route with a stdio target and a
// remote one on the tailnet; CI runners may not call the remote's meta.
const tracingTeamConfig = `
config:
  tracing:
    otlpEndpoint: ENDPOINT
    randomSampling: true
binds:
- port: 3000
  listeners:
  - routes:
    - name: team
      policies:
        mcpAuthorization:
          rules:
          - 'true'
          - deny: '"tag:ci" in source.tailscale.node.tags && mcp.tool.target == "remote" && mcp.tool.name == "meta"'
      backends:
      - mcp:
          targets:
          - name: local
            stdio: {cmd: $DEMO}
          - name: remote
            mcp: {host: "http://tools:8080/mcp"}
`

// Traces over the tailnet, decoded by a real OTLP collector: each call is
// a span with its caller's tailnet identity (login, node, tags) and the
// decision, continuing the client's trace, and a child span per call to
// a target. The stdio child gets the trace context in _meta; the remote
// target, a go-sdk server on another node, gets it in its HTTP headers
// and in _meta, the same, naming the gateway's span of the call. A call
// policy refuses is traced with the rule and reaches no target.
func TestTracesOverTheTailnet(t *testing.T) {
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
	tm := newTeam(t)
	rcv := otlptest.Start(t)
	var mu sync.Mutex
	var remoteHeaders []string // traceparent headers of the remote's tools/call posts
	tm.tn.Node(t, "tools").RemoteMCP(t, "8080", demoserver.New(), nil, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Mcp-Method") == "tools/call" {
				mu.Lock()
				remoteHeaders = append(remoteHeaders, r.Header.Get("Traceparent"))
				mu.Unlock()
			}
			h.ServeHTTP(w, r)
		})
	})
	gw := tm.tn.Gateway(t, gatewaytest.ParseConfig(t, strings.ReplaceAll(tracingTeamConfig, "ENDPOINT", rcv.GRPCEndpoint)))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	alice := tm.alice.MCP(t, gw, 3000, "/mcp")
	for i, tool := range []string{"local_meta", "remote_meta"} {
		trace := strings.Repeat(string(rune('a'+i)), 32)
		res, err := alice.CallTool(ctx, &mcp.CallToolParams{Name: tool, Meta: mcp.Meta{"traceparent": "00-" + trace + "-00f067aa0ba902b7-01", "baggage": "team=tools"}})
		if err != nil || res.IsError {
			t.Fatalf("%s: %v %v", tool, err, res)
		}
		spans := rcv.Wait(t, 2, 20*time.Second, func(s otlptest.Span) bool { return s.TraceID == trace })
		t.Logf("the collector got, for %s:\n%s", tool, otlptest.Describe(spans))
		call, target := spanOf(t, spans, "server"), spanOf(t, spans, "client")
		if call.Name != "tools/call "+tool || target.Name != "tools/call meta" || call.ParentSpanID != "00f067aa0ba902b7" || target.ParentSpanID != call.SpanID {
			t.Errorf("%s: spans %q (parent %s) and %q (parent %s)", tool, call.Name, call.ParentSpanID, target.Name, target.ParentSpanID)
		}
		node, _ := call.Attrs["tailgate.caller.node"].(string)
		if call.Attrs["tailgate.caller.login"] != tm.aliceID || !strings.HasPrefix(node, "alice-laptop.") || call.Attrs["tailgate.decision"] != "allow" || call.Attrs["gen_ai.tool.name"] != tool {
			t.Errorf("%s: call span attributes %v", tool, call.Attrs)
		}
		want := "00-" + trace + "-" + target.SpanID + "-01"
		out, _ := res.StructuredContent.(map[string]any)
		meta, _ := out["meta"].(map[string]any)
		if meta["traceparent"] != want || meta["baggage"] != "team=tools" {
			t.Errorf("%s: the target's _meta %v, want traceparent %s", tool, meta, want)
		}
		if tool == "remote_meta" {
			mu.Lock()
			got := slices.Clone(remoteHeaders)
			mu.Unlock()
			if !slices.Contains(got, want) {
				t.Errorf("the remote target's Traceparent headers %q, want %s", got, want)
			}
			if target.Attrs["network.transport"] != "tcp" || target.Attrs["server.address"] != "tools" || target.Attrs["server.port"] != int64(8080) {
				t.Errorf("remote call span attributes %v", target.Attrs)
			}
		} else if target.Attrs["network.transport"] != "pipe" {
			t.Errorf("stdio call span attributes %v", target.Attrs)
		}
	}

	ci := tm.ci.MCP(t, gw, 3000, "/mcp")
	if _, err := ci.CallTool(ctx, &mcp.CallToolParams{Name: "remote_meta", Meta: mcp.Meta{"traceparent": "00-" + strings.Repeat("c", 32) + "-00f067aa0ba902b7-01"}}); err == nil {
		t.Fatal("the CI runner called remote_meta")
	}
	spans := rcv.Wait(t, 1, 20*time.Second, func(s otlptest.Span) bool { return s.TraceID == strings.Repeat("c", 32) })
	denied := spanOf(t, spans, "server")
	if tags, _ := denied.Attrs["tailgate.caller.tags"].([]any); len(tags) != 1 || tags[0] != "tag:ci" ||
		denied.Attrs["tailgate.decision"] != "deny" || denied.Attrs["tailgate.rule"] != "binds[0].listeners[0].routes[0].policies.mcpAuthorization.rules[1]" || denied.Status != "error" {
		t.Errorf("denied call span:\n%s", otlptest.Describe([]otlptest.Span{denied}))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(remoteHeaders) != 1 {
		t.Errorf("the remote target got %d calls, want alice's one", len(remoteHeaders))
	}
}

// spanOf is the one span of kind in spans.
func spanOf(t *testing.T, spans []otlptest.Span, kind string) otlptest.Span {
	t.Helper()
	var found []otlptest.Span
	for _, s := range spans {
		if s.Kind == kind {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d %s spans:\n%s", len(found), kind, otlptest.Describe(spans))
	}
	return found[0]
}
