package mcpstdio

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/landlock-lsm/go-landlock/landlock"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// Confinement: every guarded child (see supervise) runs in a Linux
// Landlock domain of its own, applied between the guard's start and the
// server's exec, in the process that becomes the server; it binds the
// server and all it starts, and cannot be lifted.
//
// The domain itself is what keeps children from the gateway and from each
// other: Landlock refuses a process in a domain ptrace-class access
// (ptrace, /proc/<pid>/environ, mem, cwd, ...) to a process outside that
// domain or its nested ones, whatever the dumpable flag (since Landlock
// ABI 1; the kernel's own selftest, tools/testing/selftests/landlock/
// ptrace_test.c, checks environ). The gateway is in no domain, and each
// child in one of its own, so a child can read neither the gateway's
// environment (TS_AUTHKEY) nor that of another caller's child. So a child
// gets a domain even when no path is to be hidden: its ruleset then
// allows everything on "/". A root child (no stdio.user) still read
// /proc/<pid>/environ of processes outside its domain on Linux 6.18 while
// it held CAP_SYS_ADMIN or CAP_PERFMON (ptrace attach and mem were
// refused), so a root child loses those, and CAP_SYS_PTRACE, before it
// execs (dropInspectionCapabilities).
//
// Paths (Options.HidePaths: the node's state dir, the default one too, the
// auth key file) are hidden from the child. Landlock only allows, so the
// ruleset allows everything else: walking down from "/" towards each
// hidden path, every entry that neither is nor holds a hidden path gets
// full access (read, write, execute, create, remove, rename across
// directories, device ioctls), and the directories on the way (/, /var,
// /var/lib for /var/lib/tailgate) may only be listed. So the child:
//
//   - cannot open, read, write, execute or remove anything in a hidden
//     path; it may see the names in a hidden directory (listing is a right
//     inherited down the tree, and the ancestors keep it);
//   - cannot create, remove or rename entries directly in an ancestor of a
//     hidden path (with stateDir ~/.local/share/tailgate: none directly in
//     $HOME, ~/.local, ~/.local/share; below them, as before), nor use
//     entries created there after it started: a right granted on a
//     directory holds for all beneath it, so no rule can let a child
//     create ~/.npm and not also reach ~/.config/tailgate;
//   - is otherwise unchanged (ordinary permissions still apply), and
//     reaches a hidden path through no symlink: Landlock judges the file a
//     link resolves to.
//
// Landlock also refuses a process in a domain mount, umount and
// pivot_root, and the ruleset sets no_new_privs, so setuid programs do not
// gain privileges in it. Best effort: a kernel without Landlock ABI 2
// (before 5.19, or Landlock disabled) runs the child unconfined (ABI 1
// cannot allow renames across directories, which would break package
// managers, and go-landlock then applies nothing), which the gateway says
// once at start (ConfinementError). Network and signals are not
// restricted. A root child is kept from processes and paths, not from the
// machine: it can still read raw disks or load kernel modules; stdio.user
// is what takes that away.
//
// The cost per child start is a few system calls and, with hidden paths,
// a listing of each directory on the way to them: well under a
// millisecond, against the ~20 ms of the guard's start (reaper_linux.go).

// ConfinementError says why children cannot be confined on this kernel
// (kept from Options.HidePaths, from the gateway's and each other's
// memory and environment), nil if they can.
func ConfinementError() error {
	v, err := llsys.LandlockGetABIVersion()
	if err != nil {
		return fmt.Errorf("no Landlock in this kernel (Linux 5.13 or later, with landlock in the lsm= list): %w", err)
	}
	if v < 2 {
		return fmt.Errorf("this kernel has Landlock ABI %d; children are confined from ABI 2 (Linux 5.19)", v)
	}
	return nil
}

// confineFromEnv puts this process in a domain of its own that hides
// what hideEnv names (nothing if it is unset), and removes hideEnv.
func confineFromEnv() error {
	var paths []string
	if v, ok := os.LookupEnv(hideEnv); ok {
		os.Unsetenv(hideEnv)
		if err := json.Unmarshal([]byte(v), &paths); err != nil {
			return err
		}
	}
	dropInspectionCapabilities()
	return confine(paths)
}

// dropInspectionCapabilities takes from a root child, and all it
// execs, the capabilities that let it read other processes' memory and
// environment past Landlock (see above): CAP_SYS_ADMIN and CAP_PERFMON
// (with either, root reads /proc/<pid>/environ of a process outside its
// domain; checked on Linux 6.18), and CAP_SYS_PTRACE (which overrides the
// gateway's non-dumpable flag on a kernel without Landlock). It removes
// them from the bounding set of the calling thread, the one that execs
// (runChild holds it), so exec does not give them back. A child that is
// not root has none of them, and the drop fails harmlessly.
func dropInspectionCapabilities() {
	if os.Geteuid() != 0 {
		return
	}
	const (
		prCapbsetDrop = 24 // PR_CAPBSET_DROP
		capSysPtrace  = 19
		capSysAdmin   = 21
		capPerfmon    = 38
	)
	for _, c := range []uintptr{capSysPtrace, capSysAdmin, capPerfmon} {
		// EINVAL: a kernel that does not know the capability (CAP_PERFMON
		// before 5.8), which cannot grant it either.
		syscall.RawSyscall(syscall.SYS_PRCTL, prCapbsetDrop, c, 0)
	}
}

// confine puts this process and what it starts in a Landlock domain of
// its own that allows everything but hide (see above).
func confine(hide []string) error {
	return landlock.V5.BestEffort().RestrictPaths(confineRules(hide)...)
}

// confineRules are the rules that allow all but hide; with nothing to
// hide, everything on "/".
func confineRules(hide []string) []landlock.Rule {
	var hidden []string
	for _, p := range hide {
		if p == "" {
			continue
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			continue
		}
		for _, q := range []string{abs, resolved(abs)} {
			if q != "/" && !slices.Contains(hidden, q) {
				hidden = append(hidden, q)
			}
		}
	}
	if len(hidden) == 0 {
		return []landlock.Rule{landlock.RWDirs("/").WithRefer().WithIoctlDev()}
	}
	var listOnly, dirs, files []string
	var walk func(p string)
	walk = func(p string) {
		if slices.Contains(hidden, p) {
			return
		}
		holds := false
		for _, h := range hidden {
			if p == "/" || strings.HasPrefix(h, p+"/") {
				holds = true
				break
			}
		}
		fi, err := os.Lstat(p)
		switch {
		case err != nil, fi.Mode()&os.ModeSymlink != 0:
			// A link needs no rule: access through it is judged on its
			// target.
			return
		case !holds && fi.IsDir():
			dirs = append(dirs, p)
			return
		case !holds:
			files = append(files, p)
			return
		}
		listOnly = append(listOnly, p)
		entries, _ := os.ReadDir(p)
		for _, e := range entries {
			walk(filepath.Join(p, e.Name()))
		}
	}
	walk("/")
	rules := []landlock.Rule{landlock.PathAccess(llsys.AccessFSReadDir, listOnly...).IgnoreIfMissing()}
	if len(dirs) > 0 {
		rules = append(rules, landlock.RWDirs(dirs...).WithRefer().WithIoctlDev().IgnoreIfMissing())
	}
	if len(files) > 0 {
		rules = append(rules, landlock.RWFiles(files...).WithIoctlDev().IgnoreIfMissing())
	}
	return rules
}

// resolved is p with its symlinks resolved, as far as they exist.
func resolved(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	dir, base := filepath.Split(p)
	if dir == "/" || dir == "" {
		return p
	}
	return filepath.Join(resolved(filepath.Clean(dir)), base)
}
