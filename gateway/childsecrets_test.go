package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tailgate-dev/tailgate/tsnode"
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

// Secrets a config names in the gateway's environment for callers
// ({env: TOKEN_{user}}) and for the gateway itself (config.oauth.key as
// {env: X}) reach no child's environment: a child gets its own caller's
// value, given to it under the name the config says, and never another
// caller's variable. Before, every child inherited TOKEN_BOB and the
// connection store's key.
func TestChildEnvironmentHoldsNoOtherCallersSecret(t *testing.T) {
	t.Setenv("TAILGATE_TEST_TOKEN_ALICE", "alices-token-0123456789")
	t.Setenv("TAILGATE_TEST_TOKEN_BOB", "bobs-token-0123456789")
	t.Setenv("TAILGATE_TEST_TOKEN_CAROL", "carols-token-0123456789")
	t.Setenv("TAILGATE_TEST_OAUTH_KEY", strings.Repeat("ab", 32))
	out := filepath.Join(t.TempDir(), "env")
	_, base := serveLoopbackOpts(t, `
config:
  oauth: {key: {env: TAILGATE_TEST_OAUTH_KEY}}
binds:
- port: 3000
  listeners:
  - routes:
    - name: tools
      backends:
      - mcp:
          targets:
          - name: local
            stdio:
              cmd: /bin/sh
              args: ["-c", "env > `+out+`; exec DEMO"]
              callerEnv:
                GH_TOKEN: {env: "TAILGATE_TEST_TOKEN_{user}"}
`, Options{Identify: identifyAs(&tsnode.Identity{NodeName: "laptop.tail1234.ts.net", NodeHostname: "laptop", UserLogin: "alice@example.com"})})
	connect(t, base+"/mcp").Close()
	env, err := os.ReadFile(out)
	if err != nil {
		t.Fatal("the child did not run:", err)
	}
	for _, leak := range []string{"bobs-token", "carols-token", "TAILGATE_TEST_TOKEN_", "TAILGATE_TEST_OAUTH_KEY", strings.Repeat("ab", 32)} {
		if strings.Contains(string(env), leak) {
			t.Errorf("the child's environment holds %q", leak)
		}
	}
	if !strings.Contains(string(env), "GH_TOKEN=alices-token-0123456789") {
		t.Errorf("the child did not get its own caller's secret:\n%s", env)
	}
}
