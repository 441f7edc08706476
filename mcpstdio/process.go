package mcpstdio

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// process is one running child: its own process group, stdin/stdout for
// MCP, stderr drained into the log.
type process struct {
	target string
	cmd    *exec.Cmd
	pgid   int
	log    *slog.Logger

	stdin  *os.File   // our write end of the child's stdin
	wmu    sync.Mutex // serializes writes to stdin
	stdout *os.File   // our read end of the child's stdout

	exited     chan struct{} // closed once the child is reaped
	waitErr    error         // set before exited is closed
	stderrDone chan struct{} // closed when stderr reaches EOF

	tail *stderrTail
	// started is when the process started, for a status page's uptime.
	started time.Time
	// stopped is set when tailgate began to stop the child, so that its
	// exit is not counted as a crash.
	stopped atomic.Bool
}

// stderrLines is how many of the last stderr lines an exit error quotes.
const stderrLines = 5

// startProcess starts t with env in a new process group.
//
// The pipes are plain os.Pipes handed to the child, not exec's
// StdoutPipe/StderrPipe: exec's Wait would otherwise also wait for those
// pipes to reach EOF, which a grandchild that keeps them open (npx's node)
// delays forever, and the child would stay a zombie.
func startProcess(t *Command, env []string, log *slog.Logger, limits stderrLimits) (*process, error) {
	cmd := exec.Command(t.Path, t.Args...)
	cmd.Env = env
	cmd.Dir = t.Dir
	// A process group of its own, so that stop can signal npx/uvx and the
	// interpreter they start together; Pdeathsig kills the direct child if
	// the gateway dies without stopping it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if u := t.User; u != nil {
		if err := u.Allowed(); err != nil {
			return nil, err
		}
		// Dropping root also drops its capabilities (CAP_SYS_PTRACE among
		// them), so the child cannot read the gateway's memory or files.
		// A user that is the gateway's own (not root) is left as it is:
		// setting its groups would take a capability it lacks.
		if euid := os.Geteuid(); euid == 0 || uint32(euid) != u.Uid {
			cmd.SysProcAttr.Credential = &syscall.Credential{Uid: u.Uid, Gid: u.Gid, Groups: u.Groups}
		}
	}
	// A guard takes the child's whole group down if the gateway dies, even
	// by SIGKILL (reaper_linux.go).
	supervise(cmd)

	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return nil, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	err = cmd.Start()
	// The child holds its ends now; ours must go so that EOF propagates.
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return nil, err
	}
	p := &process{
		target:     t.Name,
		cmd:        cmd,
		pgid:       cmd.Process.Pid,
		log:        log.With("pid", cmd.Process.Pid),
		stdin:      inW,
		stdout:     outR,
		exited:     make(chan struct{}),
		stderrDone: make(chan struct{}),
		tail:       newStderrTail(stderrLines),
		started:    time.Now(),
	}
	go p.drainStderr(errR, limits)
	go func() {
		p.waitErr = cmd.Wait()
		// The last words of a dying child are what its exit error quotes:
		// let the drain reach them. A grandchild holding stderr open must
		// not delay the exit, hence the bound.
		select {
		case <-p.stderrDone:
		case <-time.After(100 * time.Millisecond):
		}
		close(p.exited)
	}()
	return p, nil
}

// Pid is the child's process id, also its process group id.
func (p *process) Pid() int { return p.cmd.Process.Pid }

// exitError describes how the child ended, with its last stderr lines.
func (p *process) exitError() error {
	select {
	case <-p.exited:
	default:
		return nil
	}
	status := "exited"
	if p.waitErr != nil {
		status = p.waitErr.Error()
	} else {
		status = "exit status 0"
	}
	if lines := p.tail.lines(); len(lines) > 0 {
		return fmt.Errorf("target %q: child %s; last stderr: %s", p.target, status, strings.Join(lines, " | "))
	}
	return fmt.Errorf("target %q: child %s", p.target, status)
}

// stop ends the child: close stdin and give it inputGrace to exit, then
// SIGTERM the whole group and give it grace, then SIGKILL it, and reap. It
// also ends group members that outlived the leader. It returns once the
// leader is reaped.
func (p *process) stop(inputGrace, grace time.Duration) {
	p.stopped.Store(true)
	p.stdin.Close()
	timer := time.NewTimer(inputGrace)
	defer timer.Stop()
	select {
	case <-p.exited:
	case <-timer.C:
		p.signalGroup(syscall.SIGTERM)
		timer.Reset(grace)
		select {
		case <-p.exited:
		case <-timer.C:
			p.signalGroup(syscall.SIGKILL)
			<-p.exited
		}
	}
	// The leader is gone; members it started may not be. The group id
	// cannot be reused while any member lives, so signalling it is safe.
	if p.groupAlive() {
		p.signalGroup(syscall.SIGTERM)
		deadline := time.Now().Add(grace)
		for p.groupAlive() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if p.groupAlive() {
			p.signalGroup(syscall.SIGKILL)
		}
	}
	p.stdout.Close()
}

func (p *process) signalGroup(sig syscall.Signal) {
	if err := syscall.Kill(-p.pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		p.log.Warn("signal child process group", "signal", sig.String(), "err", err)
	}
}

// groupAlive reports whether a member of the child's process group still
// runs: a zombie does not count (an orphan whose new parent does not reap
// it, as PID 1 of a container without an init, would otherwise hold the
// stop up for a whole grace, and signals cannot end it anyway).
func (p *process) groupAlive() bool {
	return syscall.Kill(-p.pgid, 0) == nil && groupHasLiving(p.pgid)
}

// stderrLimits bound what a child's stderr may cost the gateway.
type stderrLimits struct {
	// maxLine is the longest line logged; the rest is cut.
	maxLine int
	// perSecond is how many lines per second are logged; the others are
	// counted and reported, never buffered.
	perSecond int
}

// drainStderr reads the child's stderr until EOF, logging each line. It
// never stops reading, so a flood cannot fill the pipe and wedge the
// child, and it never holds more than one line.
func (p *process) drainStderr(r io.ReadCloser, limits stderrLimits) {
	defer close(p.stderrDone)
	defer r.Close()
	br := bufio.NewReaderSize(r, limits.maxLine)
	var (
		windowStart = time.Now()
		logged      int
		dropped     int
	)
	for {
		line, isPrefix, err := br.ReadLine()
		if len(line) > 0 || (err == nil && !isPrefix) {
			text := strings.TrimRight(string(line), "\r")
			if isPrefix {
				text += " …(cut)"
				// Skip the rest of the overlong line.
				for isPrefix && err == nil {
					_, isPrefix, err = br.ReadLine()
				}
			}
			p.tail.add(text)
			if now := time.Now(); now.Sub(windowStart) >= time.Second {
				if dropped > 0 {
					p.log.Warn("child stderr rate-limited", "dropped_lines", dropped)
				}
				windowStart, logged, dropped = now, 0, 0
			}
			switch {
			case logged < limits.perSecond:
				p.log.Info("child stderr", "line", text)
				logged++
			case dropped == 0:
				// Said at once, so that a flood is visible while it lasts.
				p.log.Warn("child stderr rate-limited; dropping lines for the rest of this second", "limit_per_second", limits.perSecond)
				dropped++
			default:
				dropped++
			}
		}
		if err != nil {
			if dropped > 0 {
				p.log.Warn("child stderr rate-limited", "dropped_lines", dropped)
			}
			return
		}
	}
}

// stderrTail keeps the last n stderr lines for error messages.
type stderrTail struct {
	mu   sync.Mutex
	buf  []string
	next int
	full bool
}

func newStderrTail(n int) *stderrTail { return &stderrTail{buf: make([]string, n)} }

func (t *stderrTail) add(line string) {
	const maxQuoted = 200
	if len(line) > maxQuoted {
		line = line[:maxQuoted] + "…"
	}
	t.mu.Lock()
	t.buf[t.next] = line
	t.next = (t.next + 1) % len(t.buf)
	if t.next == 0 {
		t.full = true
	}
	t.mu.Unlock()
}

func (t *stderrTail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.full {
		return append([]string(nil), t.buf[:t.next]...)
	}
	return append(append([]string(nil), t.buf[t.next:]...), t.buf[:t.next]...)
}
