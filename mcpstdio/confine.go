package mcpstdio

import (
	"encoding/json"
	"path/filepath"
)

// hideEnv carries the paths a child must not reach (Options.HidePaths, a
// JSON list of absolute paths) from the gateway to the process that execs
// the server, which confines itself (confine_linux.go) and removes it.
const hideEnv = "TAILGATE_CHILD_HIDE"

// hideEnvValue is the value of hideEnv for paths, made absolute against
// the gateway's working directory; "" for none.
func hideEnvValue(paths []string) string {
	var ps []string
	for _, p := range paths {
		if p == "" {
			continue
		}
		if abs, err := filepath.Abs(p); err == nil {
			ps = append(ps, abs)
		}
	}
	if len(ps) == 0 {
		return ""
	}
	b, _ := json.Marshal(ps)
	return string(b)
}
