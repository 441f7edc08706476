package gateway

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

const readinessConfig = `
config:
  readiness: {targets: MODE}
binds:
- port: 3000
  listeners:
  - routes:
    - backends:
      - mcp:
          targets:
          - name: good
            stdio: {cmd: DEMO}
          - name: broken
            stdio: {cmd: /nonexistent/mcp-server}
`

// /healthz/ready says whether the targets can serve, and names each one
// that cannot: a gateway whose only server cannot start is not ready.
// Failed before: ready answered 200 whatever the targets did.
func TestReadinessNamesTargetsThatCannotStart(t *testing.T) {
	for _, tc := range []struct {
		mode  string
		ready bool
	}{
		{"all", false},
		{"any", true},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			s, _ := serveLoopback(t, strings.ReplaceAll(readinessConfig, "MODE", tc.mode))
			s.Warm(context.Background())
			s.SetReady(true)
			code, body := get(t, s.AdminHandler(), "/healthz/ready")
			if (code == http.StatusOK) != tc.ready {
				t.Fatalf("readiness %q: %d %s", tc.mode, code, body)
			}
			if !tc.ready && (!strings.Contains(body, "target broken") || !strings.Contains(body, "/nonexistent/mcp-server") || strings.Contains(body, "target good")) {
				t.Errorf("the answer should name the broken target and why, and only it: %s", body)
			}
		})
	}
}
