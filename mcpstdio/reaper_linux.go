package mcpstdio

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A child's guard: what stops a stdio server's grandchildren from
// outliving a gateway that is killed with SIGKILL.
//
// A child runs in a process group of its own and gets Pdeathsig SIGKILL,
// so it dies with the gateway; but what it started (`sh -c "sleep 300 &
// exec server"`, npx's node) is reparented to init and lives on. Making the
// gateway a subreaper does not help when the gateway itself is what died.
// So the gateway starts each child as this very binary with a hidden first
// argument; that process starts a guard and then execs the server in its
// own place, so the server keeps the pid (and process group) the gateway
// knows:
//
//	gateway ─ server (pid P, group P) ─┬─ grandchildren (group P)
//	                                   └─ guard (a group of its own)
//
// The guard holds the read end of a pipe whose write end only the gateway
// has (the lifeline): when the gateway dies, however it dies, the kernel
// closes that end, the guard reads EOF and SIGKILLs group P. When the
// server exits, the guard is told (Pdeathsig SIGCHLD) and leaves within
// half a second — at once killing group P if the lifeline closes meanwhile
// (a dying gateway's threads end one by one, and the one that started the
// server may end before the last one closes the lifeline). Being in a group
// of its own, the guard is never waited for by the gateway's stop, which
// signals group P as before.
//
// It costs one small process per child (the Go runtime, a few MB of RSS;
// the binary's pages are shared) and the binary's start-up before the
// server's exec (about 20 ms). It does not reach what left group P (setsid
// daemons), as the gateway's own group signals do not. An exited guard is
// reaped by init: under a PID 1 that reaps nothing it stays a zombie.

// Hidden first arguments of this binary.
const (
	childArg = "__tailgate-child"
	guardArg = "__tailgate-guard"
)

func init() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case childArg:
			os.Exit(runChild(os.Args[2:]))
		case guardArg:
			os.Exit(runGuard(os.Args[2:]))
		}
	}
}

// lifeline is the pipe whose write end only the gateway holds, for the
// lifetime of the process; children get the read end.
var lifeline struct {
	once sync.Once
	r, w *os.File
	err  error
}

// supervise makes cmd start through a guard (see above). Call it once
// cmd.SysProcAttr is set and before Start; the server still runs with
// cmd's process group, environment, directory, files and pid. A cmd that
// could not be resolved (cmd.Err), or a lifeline that cannot be made,
// leaves cmd alone, and so does a path that is no executable file (Start
// reports it then, as before).
func supervise(cmd *exec.Cmd) {
	if cmd.Err != nil || cmd.Path == "" {
		return
	}
	// What cannot be executed fails at Start, as without a guard.
	if fi, err := os.Stat(cmd.Path); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return
	}
	lifeline.once.Do(func() { lifeline.r, lifeline.w, lifeline.err = os.Pipe() })
	if lifeline.err != nil {
		return
	}
	argv0 := cmd.Path
	if len(cmd.Args) > 0 {
		argv0 = cmd.Args[0]
	}
	var rest []string
	if len(cmd.Args) > 1 {
		rest = cmd.Args[1:]
	}
	fd := 3 + len(cmd.ExtraFiles)
	cmd.ExtraFiles = append(cmd.ExtraFiles, lifeline.r)
	// /proc/self/exe is this binary even if its file was replaced since.
	cmd.Args = append([]string{filepath.Base(os.Args[0]), childArg, strconv.Itoa(fd), cmd.Path, argv0}, rest...)
	cmd.Path = "/proc/self/exe"
}

// runChild starts the guard, then execs the server in its place. args are
// the lifeline's fd, the server's path, its argv[0] and its arguments.
func runChild(args []string) int {
	if len(args) < 3 {
		fmt.Fprintln(os.Stderr, "tailgate child: bad arguments")
		return 2
	}
	fd, err := strconv.Atoi(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "tailgate child: bad arguments")
		return 2
	}
	// The guard's Pdeathsig follows the thread that starts it: the same
	// thread execs the server, so it is the server's death it reports.
	runtime.LockOSThread()
	guard := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{filepath.Base(os.Args[0]), guardArg, strconv.Itoa(os.Getpid())},
		ExtraFiles: []*os.File{os.NewFile(uintptr(fd), "lifeline")},
		// A group of its own: the gateway's stop must not wait for it.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGCHLD},
	}
	if err := guard.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "tailgate: child guard:", err)
	} else {
		guard.Process.Release()
	}
	syscall.CloseOnExec(fd)
	// Confined (Options.HidePaths) before the exec, so the server and
	// all it starts are; a ruleset that cannot be applied on a kernel
	// that has Landlock stops the child rather than run it unconfined.
	if err := confineFromEnv(); err != nil {
		fmt.Fprintln(os.Stderr, "tailgate: cannot confine the child:", err)
		return 126
	}
	err = syscall.Exec(args[1], args[2:], os.Environ())
	fmt.Fprintf(os.Stderr, "tailgate: exec %s: %v\n", args[1], err)
	return 127
}

// runGuard watches the lifeline (fd 3) and the server, its parent, whose
// pid is args[0].
func runGuard(args []string) int {
	if len(args) != 1 {
		return 2
	}
	server, err := strconv.Atoi(args[0])
	if err != nil {
		return 2
	}
	// SIGCHLD is the server's death (Pdeathsig; the guard has no children
	// of its own, and the signal's default action is to be ignored, so
	// one that comes while the guard starts is harmless).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	gatewayGone := make(chan struct{})
	go func() {
		waitEOF(lifelineFD)
		close(gatewayGone)
	}()
	killGroup := func() int {
		syscall.Kill(-server, syscall.SIGKILL)
		return 1
	}
	var serverGone <-chan time.Time
	// A SIGCHLD that came before Notify is lost: a server that is gone
	// already has left the guard to init.
	if os.Getppid() != server {
		serverGone = time.After(500 * time.Millisecond)
	}
	for {
		select {
		case <-gatewayGone:
			return killGroup()
		case sig := <-sigs:
			switch sig {
			case syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP:
				return 0
			case syscall.SIGCHLD:
				// The server is gone: by itself, or killed because the
				// gateway is dying, whose last thread may not have closed
				// the lifeline yet.
				serverGone = time.After(500 * time.Millisecond)
			}
		case <-serverGone:
			return 0
		}
	}
}

// lifelineFD is the guard's lifeline.
const lifelineFD = 3

// waitEOF blocks until fd, a pipe's read end nobody writes to, is at EOF.
func waitEOF(fd int) {
	var b [1]byte
	for {
		n, err := syscall.Read(fd, b[:])
		if n == 0 && err == nil {
			return
		}
		switch err {
		case nil, syscall.EINTR:
		case syscall.EAGAIN:
			waitReadable(fd, nil)
		default:
			return
		}
	}
}

// waitReadable waits until fd is readable, or timeout (nil: no timeout).
func waitReadable(fd int, timeout *syscall.Timeval) bool {
	var set syscall.FdSet
	set.Bits[fd/64] |= int64(1) << (uint(fd) % 64)
	n, err := syscall.Select(fd+1, &set, nil, nil, timeout)
	return err == nil && n > 0
}

// groupHasLiving reports whether process group pgid has a member that is
// not a zombie, from /proc. A process shown as a zombie whose other
// threads still run (its main thread exited alone) is living; so is the
// group when /proc cannot be read or shows none of its members (another
// pid namespace): only a group seen whole, and dead, is not.
func groupHasLiving(pgid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	want := strconv.Itoa(pgid)
	seen := false
	for _, e := range entries {
		if c := e.Name()[0]; c < '0' || c > '9' {
			continue
		}
		state, group, ok := procState("/proc/" + e.Name() + "/stat")
		if !ok || group != want {
			continue // gone meanwhile, or another group's
		}
		seen = true
		if living(state) || state == "Z" && threadsLiving("/proc/"+e.Name()+"/task") {
			return true
		}
	}
	return !seen
}

// threadsLiving reports whether a thread listed in task (a process's
// /proc/<pid>/task) is not a zombie.
func threadsLiving(task string) bool {
	threads, err := os.ReadDir(task)
	if err != nil {
		return false // reaped meanwhile
	}
	for _, th := range threads {
		if state, _, ok := procState(task + "/" + th.Name() + "/stat"); ok && living(state) {
			return true
		}
	}
	return false
}

// procState reads a /proc stat file: the state (the field after the
// command's closing parenthesis, which may itself hold spaces and
// parentheses) and the process group (the third after it).
func procState(file string) (state, group string, ok bool) {
	stat, err := os.ReadFile(file)
	if err != nil {
		return "", "", false
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return "", "", false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 3 {
		return "", "", false
	}
	return f[0], f[2], true
}

// living reports whether a /proc state is of a process or thread that
// has not exited (Z: zombie, X: dead).
func living(state string) bool { return state != "Z" && state != "X" }
