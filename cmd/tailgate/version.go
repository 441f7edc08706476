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
	bi, _ := debug.ReadBuildInfo()
	fmt.Fprint(w, versionText(bi, gateway.Version, gateway.Commit))
}

// versionText is what printVersion prints for a binary whose build info
// is bi (nil: none) and whose stamped version and commit are stamped and
// commit ("dev" and "" when a release build did not stamp them): the
// stamped version, else the module version Go's build info holds (the
// tag of `go install …@v1.2.3`, or the pseudo-version a plain `go build`
// of a git checkout derives from its commit); the stamped commit, else
// the VCS revision.
func versionText(bi *debug.BuildInfo, stamped, commit string) string {
	version, ts := stamped, "unknown"
	if bi != nil {
		if version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version = bi.Main.Version
		}
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
	return fmt.Sprintf("tailgate %s\ncommit %s\ngo %s %s/%s\ntailscale.com %s\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH, ts)
}
