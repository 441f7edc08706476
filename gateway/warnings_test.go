package gateway

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// syncBuffer is a log destination safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A rule that reads an identity header of `tailscale serve` loads (it is
// valid behind serve) but is warned about, naming the rule and its line
// and pointing to source.tailscale: here any client sets that header.
// Before, it loaded without a word.
func TestForgeableHeaderRuleWarned(t *testing.T) {
	cfg, err := Parse("team.yaml", []byte(strings.ReplaceAll(`
binds:
- port: 3000
  listeners:
  - routes:
    - name: team
      policies:
        authorization:
          rules:
          - 'request.headers["x-team"] == "platform"'
          - 'request.headers["tailscale-user-login"] == "alice@example.com"'
        mcpAuthorization:
          rules:
          - deny: '"Tailscale-App-Capabilities" in request.headers && mcp.tool.name == "env"'
      backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: DEMO}
`, "DEMO", demoBin)), newEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range cfg.Warnings {
		got = append(got, w.Error())
	}
	want := []string{
		`team.yaml:11: binds[0].listeners[0].routes[0].policies.authorization.rules[1]: reads request header "tailscale-user-login", which any client can set to anything here (tailgate is not behind ` + "`tailscale serve`" + `); use source.tailscale.user.login, which comes from WhoIs`,
		`team.yaml:14: binds[0].listeners[0].routes[0].policies.mcpAuthorization.rules[0]: reads request header "tailscale-app-capabilities", which any client can set to anything here (tailgate is not behind ` + "`tailscale serve`" + `); use source.tailscale.caps, which comes from WhoIs`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	var logs syncBuffer
	s, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(t.Context())
	for _, w := range []string{
		`level=WARN msg="config warning" at=team.yaml:11 rule=binds[0].listeners[0].routes[0].policies.authorization.rules[1]`,
		`use source.tailscale.user.login`,
		`at=team.yaml:14 rule=binds[0].listeners[0].routes[0].policies.mcpAuthorization.rules[0]`,
	} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, logs.String())
		}
	}
	if n := strings.Count(logs.String(), "config warning"); n != 2 {
		t.Errorf("%d warnings logged, want 2", n)
	}
}
