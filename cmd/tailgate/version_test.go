package main

import (
	"runtime/debug"
	"strings"
	"testing"
)

// tailgate version names what a build says of itself: the stamped
// version and commit of a release build; else, for `go install …@v1.2.3`
// or a plain `go build` of a git checkout, the module version and VCS
// revision in Go's build info. Failed before: "dev" for all but release
// builds.
func TestVersionText(t *testing.T) {
	built := func(version, revision string) *debug.BuildInfo {
		bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/tailgate-dev/tailgate", Version: version},
			Deps: []*debug.Module{{Path: "tailscale.com", Version: "v1.102.5"}}}
		if revision != "" {
			bi.Settings = []debug.BuildSetting{{Key: "vcs.revision", Value: revision}}
		}
		return bi
	}
	for _, tc := range []struct {
		name             string
		bi               *debug.BuildInfo
		stamped, commit  string
		version, revised string
	}{
		{"release build", built("v0.0.0-20261207-abc", "abc123"), "v1.2.3", "def456", "tailgate v1.2.3", "commit def456"},
		{"go install @v1.2.3", built("v1.2.3", ""), "dev", "", "tailgate v1.2.3", "commit unknown"},
		{"go build of a checkout", built("v0.0.0-20261207152145-6fdcc9ab344f+dirty", "6fdcc9ab344f"), "dev", "", "tailgate v0.0.0-20261207152145-6fdcc9ab344f+dirty", "commit 6fdcc9ab344f"},
		{"go build without VCS", built("(devel)", ""), "dev", "", "tailgate dev", "commit unknown"},
		{"no build info", nil, "dev", "", "tailgate dev", "commit unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := versionText(tc.bi, tc.stamped, tc.commit)
			if !strings.Contains(got, tc.version+"\n") || !strings.Contains(got, tc.revised+"\n") {
				t.Errorf("version text:\n%s\nwant %q and %q", got, tc.version, tc.revised)
			}
		})
	}
}
