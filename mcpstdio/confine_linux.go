package mcpstdio

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/landlock-lsm/go-landlock/landlock"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// Confinement: a guarded child (see supervise) is started under a Linux
// Landlock ruleset that keeps it from the paths the gateway hides
// (Options.HidePaths: the node's state dir, the auth key file). Landlock
// only allows, so the ruleset allows everything else: walking down from
// "/" towards each hidden path, every entry that neither is nor holds a
// hidden path gets full access (read, write, execute, create, remove,
// rename across directories, device ioctls), and the directories on the
// way (/, /var, /var/lib for /var/lib/tailgate) may only be listed. So
// the child:
//
//   - cannot open, read, write, execute or remove anything in a hidden
//     path; it may see the names in a hidden directory (listing is a right
//     inherited down the tree, and the ancestors keep it);
//   - cannot create, remove or rename entries directly in an ancestor of a
//     hidden path (with stateDir ~/.local/share/tailgate: none directly in
//     $HOME, ~/.local, ~/.local/share; below them, as before), nor use
//     entries created there after it started;
//   - is otherwise unchanged (ordinary permissions still apply), and
//     reaches a hidden path through no symlink: Landlock judges the file a
//     link resolves to.
//
// The ruleset is applied between the guard's start and the server's exec,
// in the process that becomes the server, and binds it and all it starts;
// it sets no_new_privs, so setuid programs do not gain privileges in it.
// Best effort: a kernel without Landlock (before 5.13, or disabled) runs
// the child unconfined; the ABI decides which rights are restricted
// (before ABI 2, renames across directories are refused). Network and
// signals are not restricted.

// ConfinementError says why children cannot be confined away from
// Options.HidePaths on this kernel, nil if they can.
func ConfinementError() error {
	v, err := llsys.LandlockGetABIVersion()
	if err != nil {
		return fmt.Errorf("no Landlock in this kernel (Linux 5.13 or later, with landlock in the lsm= list): %w", err)
	}
	if v < 1 {
		return fmt.Errorf("no Landlock in this kernel (ABI %d)", v)
	}
	return nil
}

// confineFromEnv applies the ruleset hideEnv asks for, and removes it.
func confineFromEnv() error {
	v, ok := os.LookupEnv(hideEnv)
	if !ok {
		return nil
	}
	os.Unsetenv(hideEnv)
	var paths []string
	if err := json.Unmarshal([]byte(v), &paths); err != nil {
		return err
	}
	return confine(paths)
}

// confine restricts this process and what it starts to everything but
// hide (see above).
func confine(hide []string) error {
	rules := confineRules(hide)
	if rules == nil {
		return nil
	}
	return landlock.V5.BestEffort().RestrictPaths(rules...)
}

// confineRules are the rules that allow all but hide; nil if nothing is
// to be hidden.
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
		return nil
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
