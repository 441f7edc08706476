package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proxy is a process under test that the bench started: a peer, or
// tailgate in a process of its own (see TestGatewayHelper), so that its
// CPU time and resident memory are its own, as the peers' are, and never
// the bench client's or the stdio servers'.
type proxy struct {
	name string
	cmd  *exec.Cmd
	// helper is a gateway helper: it stops when its stdin closes, and must
	// not be signalled, which would leave its children behind.
	helper bool
	// url is its MCP endpoint.
	url   string
	stdin io.WriteCloser
	// lines gets the lines of a gateway helper's stdout that carry a
	// marker; everything is also written to the log file.
	lines  chan string
	exited chan struct{}
}

// Markers the gateway helper prints on stdout.
const (
	readyMarker = "TAILGATE_BENCH_READY"
	ackMarker   = "TAILGATE_BENCH_ACK"
)

// startProxy starts cmd with its output in logDir/name.log. A gateway
// helper announces its URL on stdout; a peer is ready when url accepts
// connections.
func startProxy(t *testing.T, name string, cmd *exec.Cmd, logDir, url string) *proxy {
	t.Helper()
	logFile, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{name: name, cmd: cmd, url: url, helper: url == "", lines: make(chan string, 16), exited: make(chan struct{})}
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	// Its own process group, so that nothing it leaves behind outlives
	// the bench (see stop).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: start: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logFile, line)
			if strings.HasPrefix(line, readyMarker) || strings.HasPrefix(line, ackMarker) {
				p.lines <- line
			}
		}
		cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	t.Cleanup(func() { p.stop(t) })
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if url == "" {
		select {
		case line := <-p.lines:
			p.url = strings.TrimSpace(strings.TrimPrefix(line, readyMarker))
		case <-p.exited:
			t.Fatalf("%s exited before it was ready (%v); see %s", name, cmd.ProcessState, logFile.Name())
		case <-ctx.Done():
			t.Fatalf("%s: not ready after 90s; see %s", name, logFile.Name())
		}
		return p
	}
	host := strings.TrimPrefix(url, "http://")
	host, _, _ = strings.Cut(host, "/")
	for {
		c, err := net.DialTimeout("tcp", host, time.Second)
		if err == nil {
			c.Close()
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited before it was ready (%v); see %s", name, cmd.ProcessState, logFile.Name())
		case <-ctx.Done():
			t.Fatalf("%s: %s not accepting connections after 90s: %v", name, host, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *proxy) pid() int { return p.cmd.Process.Pid }

// command sends a gateway helper a command and waits for its answer.
func (p *proxy) command(line string) error {
	if _, err := fmt.Fprintln(p.stdin, line); err != nil {
		return fmt.Errorf("%s: %s: %w", p.name, line, err)
	}
	select {
	case <-p.lines:
		return nil
	case <-p.exited:
		return fmt.Errorf("%s exited during %q", p.name, line)
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s: no answer to %q", p.name, line)
	}
}

// stop ends the process as its operator would: end of input for a
// gateway helper (which then shuts the gateway down and reaps its
// children), SIGTERM for a peer; then, after a grace period, SIGKILL to
// its process group.
func (p *proxy) stop(t *testing.T) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.stdin.Close()
	if !p.helper {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		t.Logf("%s: still running 20s after it was told to stop; killing its process group", p.name)
		syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.exited
	}
}

// freePort is a port on 127.0.0.1 that nothing listens on, for a peer
// that takes its port as a flag.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// checkLoopbackOnly fails unless every listening socket on port is bound
// to 127.0.0.1: the bench must not expose anything beyond the machine.
func checkLoopbackOnly(t *testing.T, name string, port int) {
	t.Helper()
	hexPort := fmt.Sprintf(":%04X", port)
	found := false
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 4 || f[3] != "0A" || !strings.HasSuffix(f[1], hexPort) { // 0A: LISTEN
				continue
			}
			found = true
			if addr := strings.TrimSuffix(f[1], hexPort); addr != "0100007F" {
				t.Fatalf("%s listens on %s (hex), not on 127.0.0.1 only", name, f[1])
			}
		}
	}
	if !found {
		t.Fatalf("%s: no listening socket on port %d", name, port)
	}
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux port Go supports.
const clockTick = 100

// procStat returns fields of /proc/<pid>/stat after the command name
// (field 3, state, is index 0).
func procStat(pid int) ([]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	return strings.Fields(string(data[i+1:])), nil
}

// procCPU is a process's user+system CPU time. Its children's time is
// not included (that is cutime and cstime, counted once they are reaped).
func procCPU(pid int) (time.Duration, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / clockTick, nil
}

// selfCPU is the bench process's own CPU time, its children (the direct
// runs' stdio servers) excluded.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procRSS is a process's resident set size in MB (VmRSS).
func procRSS(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status: VmRSS %q: %w", pid, v, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range entries {
		cpid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := procStat(cpid)
		if err != nil || len(f) < 2 || f[0] == "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == pid {
			kids = append(kids, cpid)
		}
	}
	return kids
}

// waitChildren waits until pid has want children or fewer (sessions
// closed, their children reaped), so that a dying child's work does not
// fall into the next measurement.
func waitChildren(pid, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n := len(children(pid))
		if n <= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d still has %d children after %v (want %d)", pid, n, timeout, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitWarm waits until pid has at least n children and they have all gone
// quiet (no CPU time used for quiet), which is when a pool's children are
// started and initialized.
func waitWarm(pid, n int, quiet, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last time.Duration = -1
	stableSince := time.Now()
	for time.Now().Before(deadline) {
		kids := children(pid)
		var total time.Duration
		for _, k := range kids {
			c, _ := procCPU(k)
			total += c
		}
		switch {
		case len(kids) < n:
			stableSince = time.Now()
		case total != last:
			stableSince = time.Now()
		case time.Since(stableSince) >= quiet:
			return nil
		}
		last = total
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("pid %d: %d children not started and quiet after %v (has %d)", pid, n, timeout, len(children(pid)))
}
