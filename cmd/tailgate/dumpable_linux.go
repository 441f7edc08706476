package main

import (
	"fmt"
	"os"
	"syscall"
)

// The gateway is not dumpable, from process start: a process of the same
// uid (a stdio child, or anything it starts) cannot read
// /proc/<gateway pid>/environ (where TS_AUTHKEY sits, in the original
// environment block that no os.Unsetenv clears), mem, fd/ or maps, nor
// ptrace it, and no core dump is written. Root with CAP_SYS_PTRACE still
// can. Children are dumpable again: exec resets the flag.
//
// It is an init, not a line in main, so that it holds before anything
// else runs; the re-exec'd child and guard (mcpstdio's init) exit before
// it, and need it not: they hold no secret.
func init() {
	const prSetDumpable = 4 // PR_SET_DUMPABLE
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetDumpable, 0, 0); errno != 0 {
		fmt.Fprintln(os.Stderr, "tailgate: prctl(PR_SET_DUMPABLE, 0):", errno)
	}
}
