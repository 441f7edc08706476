package mcpstdio

import (
	"os/exec"
	"syscall"
	"testing"
	"unsafe"
)

// A process group whose only member is a zombie has no living member: a
// stop does not wait on it (an orphan that nobody reaps, as under a
// container's PID 1 without an init, held Ctrl-C of tailgate dev up for a
// whole grace). The zombie here is this test's own child, not yet waited
// for; signals still find its group.
func TestGroupOfZombieHasNoLiving(t *testing.T) {
	cmd := exec.Command("/bin/true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	// Wait until it has exited, without reaping it (waitid's WNOWAIT): a
	// zombie.
	const pPID, wNOWAIT = 1, 0x01000000
	var siginfo [128]byte
	if _, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pgid), uintptr(unsafe.Pointer(&siginfo[0])), syscall.WEXITED|wNOWAIT, 0, 0); errno != 0 {
		t.Fatalf("waitid: %v", errno)
	}
	if err := syscall.Kill(-pgid, 0); err != nil {
		t.Fatalf("the zombie's group is not there to signal: %v", err)
	}
	if groupHasLiving(pgid) {
		t.Error("a group of one zombie counts as living")
	}
	cmd.Wait()
	if p := (&process{pgid: pgid}); p.groupAlive() {
		t.Error("a reaped group counts as alive")
	}
}

// A group with a member that runs is living, whatever else is in it.
func TestGroupWithLivingMember(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "sleep 0 & exec sleep 60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if !groupHasLiving(cmd.Process.Pid) {
		t.Error("a group whose leader runs counts as dead")
	}
}
