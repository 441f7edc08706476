package tsnode

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAuthKey(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	os.WriteFile(keyFile, []byte("  tskey-from-file\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	tests := []struct {
		name, file, authkey, authKey2 string
		want, from, err               string
	}{
		{name: "file wins", file: keyFile, authkey: "env", want: "tskey-from-file", from: "file " + keyFile},
		{name: "TS_AUTHKEY", authkey: "tskey-a", authKey2: "tskey-b", want: "tskey-a", from: "$TS_AUTHKEY"},
		{name: "TS_AUTH_KEY", authKey2: "tskey-b", want: "tskey-b", from: "$TS_AUTH_KEY"},
		{name: "none", want: "", from: ""},
		{name: "missing file", file: filepath.Join(dir, "nope"), err: "no such file"},
		{name: "empty file", file: empty, err: "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("TS_AUTHKEY", tt.authkey)
			t.Setenv("TS_AUTH_KEY", tt.authKey2)
			key, from, err := AuthKey(tt.file)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || key != tt.want || from != tt.from {
				t.Errorf("got %q from %q (%v), want %q from %q", key, from, err, tt.want, tt.from)
			}
		})
	}
}

func TestStateDirIsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	os.MkdirAll(dir, 0o755)
	n, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v (%v), want 0700", fi.Mode().Perm(), err)
	}

	fresh := filepath.Join(t.TempDir(), "a", "b")
	n2, err := New(Config{StateDir: fresh})
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("new state dir: %v %v", fi.Mode().Perm(), err)
	}
}

func TestStateDirErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := New(Config{StateDir: file}); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("state dir that is a file: %v", err)
	}
	if os.Geteuid() != 0 {
		ro := filepath.Join(t.TempDir(), "ro")
		os.MkdirAll(ro, 0o500)
		if _, err := New(Config{StateDir: ro}); err == nil || !strings.Contains(err.Error(), "not writable") {
			t.Errorf("read-only state dir: %v", err)
		}
	}
	if _, err := New(Config{MemoryState: true}); err == nil {
		t.Error("memory state without ephemeral accepted")
	}
}
