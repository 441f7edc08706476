package integration

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tailgate-dev/tailgate/gateway"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
)

// whoami is what node n is told it may use, asking the gateway over the
// tailnet; format "text" asks for the table.
func whoami(t *testing.T, n *gatewaytest.Node, gw *gatewaytest.Gateway, format string) (*gateway.Explanation, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := gw.URL(3000, gateway.WhoamiPath)
	if format != "" {
		url += "?format=" + format
	}
	resp, err := n.HTTPGet(ctx, url)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s: %s", n.Name, resp.Status, body)
	}
	if format == "text" {
		return nil, string(body)
	}
	var ex gateway.Explanation
	if err := json.Unmarshal(body, &ex); err != nil {
		t.Fatalf("%s: %v: %s", n.Name, err, body)
	}
	return &ex, string(body)
}

// usableTools are the tools an explanation allows on route, sorted.
func usableTools(ex *gateway.Explanation, route string) []string {
	var names []string
	for _, re := range ex.Routes {
		if re.Name != route {
			continue
		}
		for _, te := range re.Targets {
			for _, it := range te.Tools {
				if it.Allow {
					names = append(names, it.Name)
				}
			}
		}
	}
	slices.Sort(names)
	return names
}

// routeNames are the names of an explanation's routes.
func routeNames(ex *gateway.Explanation) []string {
	var names []string
	for _, re := range ex.Routes {
		names = append(names, re.Name)
	}
	return names
}

// On configs/identity.yaml, each caller asks the gateway over the tailnet
// what it may use: Alice is told of both routes and her admin tool, the
// CI runner of the team route and add alone, each exactly what its own
// tools/list shows; nobody is told of a route or a tool it may not use.
// The operator's explanation of the CI runner's real node (by its
// address, WhoIs) agrees with that of an identity that only names its
// tag, and names the rules that deny it the rest.
func TestExplainOnTheTailnet(t *testing.T) {
	tm := newTeam(t)
	gw := tm.tn.Gateway(t, tm.identityConfig(t), gatewaytest.GatewayTags("tag:mcp-gateway"))

	for _, tt := range []struct {
		who    string
		node   *gatewaytest.Node
		login  string
		routes []string
		team   []string
	}{
		{"alice", tm.alice, tm.aliceID, []string{"admin", "team"}, []string{"add", "echo", "env", "slow"}},
		{"bob", tm.bob, tm.bobID, []string{"team"}, []string{"add", "echo", "slow"}},
		{"ci", tm.ci, "tagged-devices", []string{"team"}, []string{"add"}},
	} {
		ex, body := whoami(t, tt.node, gw, "")
		if !ex.Self || !ex.Real || ex.Identity.Login != tt.login {
			t.Errorf("%s: self %v, real %v, identity %+v", tt.who, ex.Self, ex.Real, ex.Identity)
		}
		if got := routeNames(ex); !slices.Equal(got, tt.routes) {
			t.Errorf("%s is told of routes %v, want %v", tt.who, got, tt.routes)
		}
		if got := usableTools(ex, "team"); !slices.Equal(got, tt.team) {
			t.Errorf("%s is told it may use %v on the team route, want %v", tt.who, got, tt.team)
		}
		if listed := toolNames(t, tt.node.MCP(t, gw, 3000, "/mcp")); !slices.Equal(listed, tt.team) {
			t.Errorf("%s: whoami says %v, its tools/list %v", tt.who, tt.team, listed)
		}
		if strings.Contains(body, `"allow": false`) {
			t.Errorf("%s is told of something it may not use:\n%s", tt.who, body)
		}
	}
	_, text := whoami(t, tm.ci, gw, "text")
	for _, line := range []string{`(?m)^who +tagged-devices .*, node ci-runner\.tail-scale\.ts\.net, tags tag:ci, .*\(as WhoIs says\)$`, `(?m)^\(what you may use:`, `(?m)^  tools +tool +add +allow +\S+rules\[0\] +allow rule matched$`, `(?m)^  may use: 1 tools$`} {
		if !regexp.MustCompile(line).MatchString(text) {
			t.Errorf("ci's whoami as text has no line matching %s:\n%s", line, text)
		}
	}

	// The operator: the CI runner's real node, and an identity that names
	// only its tag, get the same decisions, each with its rule.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	byPeer, err := gw.Server.Explain(ctx, gateway.ExplainIdentity{Peer: tm.ci.IP().String()})
	if err != nil {
		t.Fatal(err)
	}
	asked, err := gw.Server.Explain(ctx, gateway.ExplainIdentity{Tags: []string{"tag:ci"}})
	if err != nil {
		t.Fatal(err)
	}
	if !byPeer.Real || asked.Real || !slices.Equal(byPeer.Identity.Tags, []string{"tag:ci"}) {
		t.Errorf("by peer: real %v %+v; asked: real %v", byPeer.Real, byPeer.Identity, asked.Real)
	}
	for _, ex := range []*gateway.Explanation{byPeer, asked} {
		if got := usableTools(ex, "team"); !slices.Equal(got, []string{"add"}) {
			t.Errorf("explained (real %v): team tools %v, want [add]", ex.Real, got)
		}
		for _, te := range ex.Routes[1].Targets {
			for _, it := range te.Tools {
				if it.Name == "echo" && (it.Allow || it.Rule != "binds[0].listeners[0].routes[1].policies.mcpAuthorization.rules[4]") {
					t.Errorf("explained (real %v): echo %+v, want denied by the CI deny rule", ex.Real, it)
				}
			}
		}
		if ex.Routes[0].Authorization.Allow || ex.Routes[0].Authorization.Rule != "binds[0].listeners[0].routes[0].policies.authorization.rules" {
			t.Errorf("explained (real %v): admin route %+v, want denied for no allow rule matched", ex.Real, ex.Routes[0].Authorization)
		}
	}
}
