package mcpstdio

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeGatewayEnv makes TestReaperFakeGateway act as a gateway that starts
// one supervised child and waits to be killed.
const fakeGatewayEnv = "MCPSTDIO_TEST_FAKE_GATEWAY"

// TestReaperFakeGateway is not a test of its own: TestGrandchildrenDieWith
// TheGateway runs the test binary with it as a stand-in gateway, which
// starts a child as process.go does, supervised, and writes the pids of
// the server and its grandchild to the directory in
// MCPSTDIO_TEST_FAKE_GATEWAY.
func TestReaperFakeGateway(t *testing.T) {
	dir := os.Getenv(fakeGatewayEnv)
	if dir == "" {
		t.Skip("run by TestGrandchildrenDieWithTheGateway")
	}
	cmd := exec.Command("sh", "-c", `sleep 300 & echo $! > "$1/grandchild.tmp"; mv "$1/grandchild.tmp" "$1/grandchild"; exec sleep 301`, "sh", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	supervise(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "server"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	time.Sleep(time.Minute) // killed long before
}

// alive reports whether pid is a live process (a zombie is dead).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(s[i+1:], " Z")
}

func readPid(t *testing.T, file string, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(file)
		if err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				return pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pid in %s after %v", file, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// After kill -9 of the gateway, no process of a child's tree survives: not
// the child, and not the grandchild a shell left in the background
// (`sh -c "sleep 300 & exec server"`), which Pdeathsig alone leaves to
// init. (Before: without the supervisor, the grandchild lived on.)
func TestGrandchildrenDieWithTheGateway(t *testing.T) {
	dir := t.TempDir()
	gw := exec.Command(os.Args[0], "-test.run=^TestReaperFakeGateway$")
	gw.Env = append(os.Environ(), fakeGatewayEnv+"="+dir)
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	defer gw.Process.Kill()
	grandchild := readPid(t, filepath.Join(dir, "grandchild"), 60*time.Second)
	server := readPid(t, filepath.Join(dir, "server"), 5*time.Second)
	defer syscall.Kill(grandchild, syscall.SIGKILL)
	if !alive(grandchild) || !alive(server) {
		t.Fatal("the child's tree is not running")
	}
	if g := groupOf(t, grandchild); g != server {
		t.Fatalf("the grandchild is in group %d, not the server's %d (the server keeps its pid)", g, server)
	}

	gw.Process.Signal(syscall.SIGKILL)
	gw.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for alive(grandchild) || alive(server) || groupAlive(server) {
		if time.Now().After(deadline) {
			t.Fatalf("after kill -9 of the gateway: grandchild alive %v, server alive %v, group alive %v", alive(grandchild), alive(server), groupAlive(server))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// groupOf is pid's process group.
func groupOf(t *testing.T, pid int) int {
	t.Helper()
	g, err := syscall.Getpgid(pid)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// groupAlive reports whether process group pgid has a live member.
func groupAlive(pgid int) bool {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid && alive(pid) {
			return true
		}
	}
	return false
}

// A supervised child is the same child to the gateway: it has the pid and
// process group the gateway started, stdin, stdout and stderr reach it, its
// exit status and its death by a signal come back as they were, and once
// it has exited its guard does not linger in the group.
func TestSupervisedChildIsTransparent(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", `echo $$ > "$1/pid"; read x; echo "got $x"; echo oops >&2; exit 3`, "sh", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	supervise(cmd)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader("hi\n"), &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("exit: %v, want status 3", err)
	}
	if stdout.String() != "got hi\n" || stderr.String() != "oops\n" {
		t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	if pid := readPid(t, filepath.Join(dir, "pid"), time.Second); pid != cmd.Process.Pid {
		t.Errorf("the server ran as pid %d, the gateway started %d", pid, cmd.Process.Pid)
	}
	deadline := time.Now().Add(2 * time.Second)
	for groupAlive(cmd.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatal("the child's group outlived it (its guard lingers)")
		}
		time.Sleep(10 * time.Millisecond)
	}

	cmd = exec.Command("sh", "-c", `kill -TERM $$`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	supervise(cmd)
	if err := cmd.Run(); err == nil || err.Error() != "signal: terminated" {
		t.Errorf("a server killed by SIGTERM: %v, want signal: terminated", err)
	}

	// The gateway's stop: SIGTERM to the group while the server runs.
	cmd = exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	supervise(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	if err := cmd.Wait(); err == nil || err.Error() != "signal: terminated" {
		t.Errorf("a group stopped by SIGTERM: %v", err)
	}
	deadline = time.Now().Add(2 * time.Second)
	for groupAlive(cmd.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatal("the group outlived SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}

	notExecutable := filepath.Join(dir, "data")
	os.WriteFile(notExecutable, []byte("#!/bin/sh\n"), 0o644)
	for _, name := range []string{"no-such-command-tailgate", notExecutable, dir} {
		cmd = exec.Command(name)
		supervise(cmd)
		if err := cmd.Start(); err == nil {
			cmd.Wait()
			t.Errorf("%s started", name)
		}
	}
}
