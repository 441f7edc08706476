package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tailgate-dev/tailgate/gateway"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"github.com/tailgate-dev/tailgate/policy"
)

// The official MCP conformance suite's client scenarios, with tailgate as
// the client of the suite's servers.
//
// For a client scenario the suite starts a server of its own and runs a
// command with the server's URL as its last argument (and the scenario in
// MCP_CONFORMANCE_SCENARIO); its checks are of what that server was sent.
// Here the command is this test binary again, as the wrapper
// (clientWrapperEnv): an in-process tailnet, a gateway whose route has the
// suite's server as its one remote target, and go-sdk's conformance
// everything-client speaking to the gateway through a local bridge. What
// the suite's server sees is tailgate's own client (gateway/remote).
const (
	// conformanceClientBaseline lists the client scenarios still expected
	// to fail through tailgate, one a line with the reason as a comment.
	conformanceClientBaseline = "conformance-client-expected-failures.yaml"
	// everythingClientPkg is go-sdk's conformance client, built from the
	// module version in go.mod.
	everythingClientPkg = "github.com/modelcontextprotocol/go-sdk/conformance/everything-client"
	// clientWrapperEnv, set to the everything-client's path, makes the test
	// binary the suite's client command: the wrapper
	// (runClientThroughTailgate), not the test.
	clientWrapperEnv = "TAILGATE_CONFORMANCE_CLIENT"
)

// conformanceClientScenarios are the suite's client scenarios of MCP
// 2025-11-25 and 2026-07-28 that need no authorization: auth/* needs an
// OAuth client in tailgate's remote targets, and the extensions' are not
// of either version.
var conformanceClientScenarios = []string{
	"initialize",
	"tools_call",
	"elicitation-sep1034-client-defaults",
	"sse-retry",
	"request-metadata",
	"http-standard-headers",
	"http-custom-headers",
	"http-invalid-tool-headers",
	"json-schema-ref-no-deref",
	"json-schema-2020-12-preservation",
	"sep-2322-client-request-state",
}

// TestConformanceClient runs each of conformanceClientScenarios with
// tailgate as the client of the suite's server (a remote mcp target of a
// gateway, which go-sdk's everything-client drives over the tailnet). A
// scenario fails when a check fails or warns, or when the client exits
// with an error the scenario does not expect; the test fails on a failure
// not listed in conformance-client-expected-failures.yaml and on a listed
// scenario that passes or that is not one of the run. A scenario that
// fails is run again with the everything-client straight against the
// suite, so that the error says whether tailgate is the cause. Set
// TAILGATE_CONFORMANCE_OUT to keep the per-scenario results, and
// TAILGATE_CONFORMANCE_SCENARIO to run one scenario.
//
// Run with clientWrapperEnv set, it is that wrapper instead.
func TestConformanceClient(t *testing.T) {
	if client := os.Getenv(clientWrapperEnv); client != "" {
		runClientThroughTailgate(t, client)
		return
	}
	node, cli := conformanceCLI(t)
	baseline, err := filepath.Abs(conformanceClientBaseline)
	if err != nil {
		t.Fatal(err)
	}
	_, expected := readBaseline(t, baseline)
	for _, e := range expected {
		if !slices.Contains(conformanceClientScenarios, e) {
			t.Errorf("%s: entry %q names no scenario of the run: remove it", conformanceClientBaseline, e)
		}
	}
	scenarios := conformanceClientScenarios
	if s := os.Getenv("TAILGATE_CONFORMANCE_SCENARIO"); s != "" {
		scenarios = []string{s}
	}

	client := buildGoProgram(t, everythingClientPkg)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The CLI splits the command at spaces and runs it with a shell,
	// the server's URL appended.
	wrapper := self + " '-test.run=^TestConformanceClient$' -test.timeout=2m"
	env := append(os.Environ(), clientWrapperEnv+"="+client)

	begin := time.Now()
	var failing []string
	for _, scenario := range scenarios {
		through := runClientScenario(t, node, cli, scenario, wrapper, env)
		listed := slices.Contains(expected, scenario)
		t.Logf("%-36s through tailgate: %s (%v)", scenario, through.verdict(), through.elapsed)
		switch {
		case through.failed() && !listed:
			direct := runClientScenario(t, node, cli, scenario, client, os.Environ())
			t.Errorf("%s fails through tailgate (directly: %s), and %s does not list it:\n%s\nclient's output:\n%s",
				scenario, direct.verdict(), conformanceClientBaseline, through.problems(), through.clientOutput())
		case !through.failed() && listed:
			t.Errorf("%s passes through tailgate: remove it from %s", scenario, conformanceClientBaseline)
		}
		if through.failed() {
			failing = append(failing, scenario)
		}
	}
	t.Logf("client scenarios through tailgate in %v: %d run, %d failed %v", time.Since(begin).Round(time.Second), len(scenarios), len(failing), failing)
}

// runClientThroughTailgate is the suite's client command: the suite's
// server (the last argument) as the one remote target of a gateway on an
// in-process tailnet, and client (go-sdk's everything-client, which reads
// the scenario from the environment the suite set) run against the gateway
// through a local bridge. The test fails, and so the command exits
// non-zero, when the client does. The tailnet, the gateway and the client
// end with the test, or when the suite stops the command.
func runClientThroughTailgate(t *testing.T, client string) {
	if flag.NArg() == 0 {
		t.Fatal("no server URL: the conformance CLI passes it as the last argument")
	}
	server := flag.Arg(flag.NArg() - 1)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	// Not gatewaytest.ParseConfig, which builds the demo server for
	// $DEMO: the wrapper runs in the suite's directory, once a scenario.
	env, err := policy.NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := gateway.Parse("conformance-client.yaml", []byte(routeConfig("", `
          - name: conformance
            mcp: {host: "`+server+`"}`)), env)
	if err != nil {
		t.Fatal(err)
	}
	tn := gatewaytest.NewTailnet(t)
	gw := tn.Gateway(t, cfg)
	local := gw.Bridge(t, tn.Node(t, "conformance-client"), 3000)

	cmd := exec.CommandContext(ctx, client, "http://"+local+"/mcp")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// Killed with the wrapper, should the suite kill it outright.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("everything-client through tailgate: %v", err)
	}
}

// clientRun is one client scenario's run by the conformance CLI.
type clientRun struct {
	checks  []conformanceCheck
	text    string // the CLI's output
	dir     string // its results
	err     error  // the CLI's
	elapsed time.Duration
}

// runClientScenario runs scenario with command as the client, in the
// environment env.
func runClientScenario(t *testing.T, node, cli, scenario, command string, env []string) clientRun {
	t.Helper()
	out := os.Getenv("TAILGATE_CONFORMANCE_OUT")
	if out == "" {
		out = t.TempDir()
	} else if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(out, "client-"+scenario+"-")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, cli, "client",
		"--scenario", scenario,
		"--command", command,
		// Through tailgate a scenario takes a few seconds (a tailnet
		// and a gateway start first), longer under the race detector.
		"--timeout", "60000",
		"-o", dir)
	cmd.Dir = dir
	cmd.Env = append(env, "NO_COLOR=1")
	cmd.WaitDelay = 5 * time.Second
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	begin := time.Now()
	runErr := cmd.Run()
	r := clientRun{text: ansi.ReplaceAllString(output.String(), ""), dir: dir, elapsed: time.Since(begin).Round(100 * time.Millisecond)}
	var exit *exec.ExitError
	if runErr != nil && !errors.As(runErr, &exit) || ctx.Err() != nil {
		// Not the CLI's verdict (it exits 1 for a failed scenario): it
		// did not run, or did not finish.
		r.err = runErr
		if ctx.Err() != nil {
			r.err = ctx.Err()
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "output.txt"), []byte(r.text), 0o644); err != nil {
		t.Error(err)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, scenario+"-*", "checks.json"))
	if len(matches) == 1 {
		data, err := os.ReadFile(matches[0])
		if err == nil {
			err = json.Unmarshal(data, &r.checks)
		}
		if err != nil {
			t.Errorf("%s: %v", matches[0], err)
		}
	}
	return r
}

// clientExitProblem is the CLI's word that the client exited with an error
// the scenario does not allow, or that it did not finish.
var clientExitProblem = []string{"CLIENT EXITED WITH ERROR", "CLIENT TIMED OUT"}

// failed reports whether the scenario failed: a check failed or warned
// (as the CLI's baseline counts), the client exited with an error the
// scenario does not expect, or the scenario did not run.
func (r clientRun) failed() bool { return r.problems() != "" }

// problems says why the scenario failed, one line a reason; "" if it
// passed.
func (r clientRun) problems() string {
	var lines []string
	if r.err != nil {
		lines = append(lines, "conformance CLI: "+r.err.Error())
	}
	if len(r.checks) == 0 {
		lines = append(lines, "no checks (results in "+r.dir+"): "+lastLines(r.text, 20))
	}
	for _, c := range r.checks {
		if c.Status == "FAILURE" || c.Status == "WARNING" {
			lines = append(lines, c.Status+" "+c.ID+": "+c.ErrorMessage)
		}
	}
	for _, p := range clientExitProblem {
		if strings.Contains(r.text, p) {
			lines = append(lines, p)
		}
	}
	return strings.Join(lines, "\n")
}

// verdict is the scenario's outcome in a few words.
func (r clientRun) verdict() string {
	passed := 0
	for _, c := range r.checks {
		if c.Status == "SUCCESS" {
			passed++
		}
	}
	if r.failed() {
		return "FAILED (" + strings.ReplaceAll(r.problems(), "\n", "; ") + ")"
	}
	return "passed (" + strconv.Itoa(passed) + " checks)"
}

// clientOutput is what the client wrote (the CLI keeps it in the
// scenario's results), its end when long.
func (r clientRun) clientOutput() string {
	var b strings.Builder
	for _, name := range []string{"stdout.txt", "stderr.txt"} {
		matches, _ := filepath.Glob(filepath.Join(r.dir, "*", name))
		for _, m := range matches {
			data, _ := os.ReadFile(m)
			b.WriteString("--- " + name + "\n" + lastLines(string(data), 60) + "\n")
		}
	}
	return b.String()
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
