package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/tailgate-dev/tailgate/gateway"
)

// printVersion prints tailgate's version and commit, and the Go and
// tailscale.com versions it was built with.
func printVersion(w io.Writer) {
	commit, ts := gateway.Commit, "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range bi.Deps {
			if dep.Path == "tailscale.com" {
				ts = dep.Version
			}
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && commit == "" {
				commit = s.Value
			}
		}
	}
	if commit == "" {
		commit = "unknown"
	}
	fmt.Fprintf(w, "tailgate %s\ncommit %s\ngo %s %s/%s\ntailscale.com %s\n", version(), commit, runtime.Version(), runtime.GOOS, runtime.GOARCH, ts)
}

// version is tailgate's version: the one a release build stamps
// (gateway.Version), else the module version Go's build info holds (the
// tag of `go install …@v1.2.3`, or the pseudo-version a plain `go build`
// of a git checkout derives from its commit).
func version() string {
	if gateway.Version != "dev" {
		return gateway.Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return gateway.Version
}
