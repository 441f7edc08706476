package relay_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tailgate-dev/tailgate/gateway/relay"
	"github.com/tailgate-dev/tailgate/mcpstdio"
	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

// A target with User runs its children as that account, without root's
// capabilities: a hostile child of a root gateway can no longer read the
// gateway's environment (where TS_AUTHKEY stays for the process's life)
// nor a root-only file, and gets the account's HOME, USER and LOGNAME.
// Before stdio.user, the same child ran as root and read both.
func TestChildRunsAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting a child as another user needs root (CI runs as root)")
	}
	nobody, err := mcpstdio.LookupUser("nobody")
	if err != nil {
		t.Skip("no user nobody here:", err)
	}
	const fileSecret = "root-only-0123456789"
	// What nobody needs is opened to it: the demo server (in a folder
	// of its own, as its test folder is private) and a folder to write to.
	shared, err := os.MkdirTemp("", "tailgate-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	bin, err := os.ReadFile(demoBin)
	if err != nil {
		t.Fatal(err)
	}
	demo, out := filepath.Join(shared, "demo"), filepath.Join(shared, "out")
	private := filepath.Join(t.TempDir(), "root-only")
	for _, err := range []error{
		os.Chmod(shared, 0o755), os.WriteFile(demo, bin, 0o755), os.Mkdir(out, 0o777), os.Chmod(out, 0o777),
		os.WriteFile(private, []byte(fileSecret), 0o600),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	script := fmt.Sprintf("{ id -u; cat /proc/%d/environ | tr '\\0' '\\n'; cat %s; } > %s/stolen 2>&1; exec %s", os.Getpid(), private, out, demo)
	b := newBackendTargets(t, []relay.Target{{Name: "demo", Command: "/bin/sh", Args: []string{"-c", script}, User: nobody}}, relay.Options{})
	s := open(t, b, nil)
	var res struct{ StructuredContent demoserver.EnvOut }
	decodeResult(t, callTool(t, s, "env", map[string]any{"names": []string{"HOME", "USER", "LOGNAME"}}), &res)
	got, err := os.ReadFile(filepath.Join(out, "stolen"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the child read:\n%s", got)
	if uid := strings.SplitN(string(got), "\n", 2)[0]; uid != fmt.Sprint(nobody.Uid) {
		t.Errorf("child uid %q, want %d", uid, nobody.Uid)
	}
	if strings.Contains(string(got), fileSecret) {
		t.Errorf("the child read the root-only file")
	}
	if !strings.Contains(string(got), "environ: Permission denied") {
		t.Errorf("the child was not refused the gateway's environ")
	}
	want := map[string]string{"HOME": nobody.Home, "USER": nobody.Login, "LOGNAME": nobody.Login}
	if fmt.Sprint(res.StructuredContent.Values) != fmt.Sprint(want) {
		t.Errorf("child env = %v, want %v", res.StructuredContent.Values, want)
	}
}

// LookupUser takes a name or a uid; a uid the user database does not know
// still runs, with its own number as group.
func TestLookupUser(t *testing.T) {
	for _, tc := range []struct {
		name    string
		uid     uint32
		wantErr bool
	}{
		{"root", 0, false},
		{"0", 0, false},
		{"4000123", 4000123, false},
		{"no-such-user-tailgate", 0, true},
	} {
		u, err := mcpstdio.LookupUser(tc.name)
		if (err != nil) != tc.wantErr {
			t.Errorf("LookupUser(%q): %v", tc.name, err)
			continue
		}
		if err == nil && (u.Uid != tc.uid || u.Home == "") {
			t.Errorf("LookupUser(%q) = %+v, want uid %d and a HOME", tc.name, u, tc.uid)
		}
	}
	if u, _ := mcpstdio.LookupUser("4000123"); u.Gid != 4000123 || u.Home != "/" {
		t.Errorf("unknown uid: %+v, want gid 4000123 and HOME /", u)
	}
}
