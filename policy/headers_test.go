package policy

import (
	"slices"
	"testing"
)

// HeaderNames says which request headers each rule reads by name, however
// it is spelt, so that the gateway can warn about forgeable ones.
func TestHeaderNames(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		expr string
		want []string
	}{
		{`request.headers["tailscale-user-login"] == "alice@example.com"`, []string{"tailscale-user-login"}},
		{`"Tailscale-User-Name" in request.headers`, []string{"tailscale-user-name"}},
		{`request.headers["x-team"] == "a" && request.headers["tailscale-app-capabilities"] != ""`, []string{"x-team", "tailscale-app-capabilities"}},
		{`request.headers.exists(k, k.startsWith("tailscale-user"))`, []string{"tailscale-user"}},
		{`source.tailscale.user.login == "alice@example.com"`, nil},
		{`request.path == "/mcp"`, nil},
	} {
		rs := compile(t, ScopeHTTP, Rule{Kind: Allow, Expr: tt.expr})
		got := rs.HeaderNames()["rules[0]"]
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: %q, want %q", tt.expr, got, tt.want)
		}
	}
}
