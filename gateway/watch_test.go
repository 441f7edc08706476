package gateway

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The config watcher stats an unchanged file and does not read it; a
// touched file with the same contents is read once and is no change; new
// contents are a change, whether written in place with the same size and
// an old mtime, or renamed over the file.
func TestConfigFileReadOnlyWhenChanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tailgate.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("mcp: {}\n")
	w, data, err := WatchConfigFile(path)
	if err != nil || string(data) != "mcp: {}\n" {
		t.Fatalf("%q %v", data, err)
	}
	reads := 0
	w.read = func(p string) ([]byte, error) { reads++; return os.ReadFile(p) }
	check := func(what string, wantChanged bool, wantReads int) {
		t.Helper()
		reads = 0
		_, changed := w.Changed()
		if changed != wantChanged || reads != wantReads {
			t.Errorf("%s: changed %v after %d reads, want %v after %d", what, changed, reads, wantChanged, wantReads)
		}
	}
	for range 5 {
		check("unchanged", false, 0)
	}

	old := time.Now().Add(-time.Hour)
	os.Chtimes(path, old, old)
	check("touched", false, 1)
	check("unchanged after touch", false, 0)

	write("mcp: {x}\n") // same size
	os.Chtimes(path, old, old)
	check("rewritten with the old mtime", true, 1)
	check("unchanged after the change", false, 0)

	os.WriteFile(path+".new", []byte("mcp: {y: 1}\n"), 0o600)
	os.Rename(path+".new", path)
	if data, changed := w.Changed(); !changed || string(data) != "mcp: {y: 1}\n" {
		t.Errorf("renamed over: %v %q", changed, data)
	}

	os.Remove(path)
	check("removed (being replaced)", false, 0)
	write("mcp: {y: 1}\n")
	check("back as it was", false, 1)
}
