//go:build !linux

package mcpstdio

import "os/exec"

// supervise is a no-op outside Linux: there is no child subreaper there.
func supervise(*exec.Cmd) {}
