package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A remote target's header secrets, given as {env: X} or {file: path},
// reach no stdio child's environment, in whatever route: the variable X is
// dropped, and so is any variable holding either value. Before, only
// Tailscale's variables were dropped, and every child of the gateway
// inherited X.
func TestChildEnvironmentHoldsNoConfigSecret(t *testing.T) {
	const (
		envSecret  = "remote-header-secret-from-env-0123456789"
		fileSecret = "remote-header-secret-from-file-0123456789"
	)
	t.Setenv("TAILGATE_TEST_REMOTE_TOKEN", envSecret)
	t.Setenv("TAILGATE_TEST_COPY", "Bearer "+fileSecret)
	dir := t.TempDir()
	tokenFile, out := filepath.Join(dir, "token"), filepath.Join(dir, "env")
	if err := os.WriteFile(tokenFile, []byte(fileSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, base := serveLoopbackOpts(t, `
binds:
- port: 3000
  listeners:
  - routes:
    - name: tools
      matches: [{path: {exact: /mcp}}]
      backends:
      - mcp:
          targets:
          - name: local
            stdio: {cmd: /bin/sh, args: ["-c", "env > `+out+`; exec DEMO"]}
    - name: hosted
      matches: [{path: {exact: /hosted}}]
      backends:
      - mcp:
          targets:
          - name: hosted
            mcp:
              host: http://127.0.0.1:1/mcp
              headers:
                Authorization: {env: TAILGATE_TEST_REMOTE_TOKEN}
                X-Api-Key: {file: `+tokenFile+`}
`, Options{})
	connect(t, base+"/mcp").Close()
	env, err := os.ReadFile(out)
	if err != nil {
		t.Fatal("the child did not run:", err)
	}
	for _, leak := range []string{envSecret, fileSecret, "TAILGATE_TEST_REMOTE_TOKEN=", "TAILGATE_TEST_COPY="} {
		if strings.Contains(string(env), leak) {
			t.Errorf("the child's environment holds %q", leak)
		}
	}
	if !strings.Contains(string(env), "PATH=") {
		t.Errorf("the child lost its ordinary environment:\n%s", env)
	}
}
