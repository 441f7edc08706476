package mcpstdio

import (
	"maps"
	"os"
	"slices"
	"strings"
)

// EnvPolicy is what of the gateway's own a child must not get: variables
// by name, any variable holding a secret value, and files.
type EnvPolicy struct {
	// DropEnv names variables of the gateway's environment that no child
	// may inherit, such as TS_AUTHKEY.
	DropEnv []string
	// Secrets are values that must not reach a child: any variable whose
	// value contains one is removed, whatever its name or origin. They
	// are redacted from its stderr too.
	Secrets []string
	// HidePaths are files and directories no child may open, read, write
	// or remove (the node's state dir, the auth key file): on Linux with
	// Landlock, each child is confined away from them before it execs
	// (confine_linux.go); elsewhere they are not enforced.
	HidePaths []string
}

// environ is the environment of a child running cmd: the gateway's
// (unless ClearEnv) without DropEnv, plus its user's HOME, USER and
// LOGNAME, plus cmd.Env; then anything holding a secret is removed,
// wherever it came from.
func (p EnvPolicy) environ(cmd *Command) []string {
	var env []string
	if !cmd.ClearEnv {
		for _, kv := range os.Environ() {
			name, _, _ := strings.Cut(kv, "=")
			if !slices.Contains(p.DropEnv, name) {
				env = append(env, kv)
			}
		}
	}
	set := func(m map[string]string) {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, k+"=") })
			env = append(env, k+"="+m[k])
		}
	}
	if u := cmd.User; u != nil {
		set(map[string]string{"HOME": u.Home, "USER": u.Login, "LOGNAME": u.Login})
	}
	set(cmd.Env)
	env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, hideEnv+"=") })
	if v := hideEnvValue(p.HidePaths); v != "" {
		env = append(env, hideEnv+"="+v)
	}
	return slices.DeleteFunc(env, func(kv string) bool {
		name, value, _ := strings.Cut(kv, "=")
		if slices.Contains(p.DropEnv, name) {
			return true
		}
		for _, s := range p.Secrets {
			if s != "" && strings.Contains(value, s) {
				return true
			}
		}
		return false
	})
}
