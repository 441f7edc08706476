package tsnode

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tailscale.com/net/netns"
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

// lineWriter sends every log line it is given on a channel.
type lineWriter chan string

func (w lineWriter) Write(p []byte) (int, error) {
	select {
	case w <- string(p):
	default:
	}
	return len(p), nil
}

// A node whose control server cannot be reached says so within 15 s,
// naming the URL and the cause: at once when tsnet reports an error (a
// refused connection), and after ControlReport when tsnet has nothing to
// report (a server that accepts connections and never answers).
func TestControlProblemIsReported(t *testing.T) {
	netns.SetEnabled(false)
	for _, tc := range []struct {
		name  string
		serve func(net.Listener) // nil: nothing listens
		cause string
	}{
		{"refused", nil, "connection refused"},
		{"silent", holdConnections, "no HTTP answer within"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if tc.serve == nil {
				ln.Close()
			} else {
				go tc.serve(ln)
			}
			url := "http://" + ln.Addr().String()
			lines := make(lineWriter, 100)
			n, err := New(Config{
				ControlURL: url, Ephemeral: true, MemoryState: true, StartTimeout: 30 * time.Second, ControlReport: time.Second,
				Logger: slog.New(slog.NewTextHandler(lines, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			ctx, cancel := context.WithCancel(context.Background())
			started := make(chan error, 1)
			go func() { started <- n.Start(ctx) }()
			begin := time.Now()
			deadline := time.After(15 * time.Second)
			for found := ""; found == ""; {
				select {
				case line := <-lines:
					if strings.Contains(line, "cannot reach the control server") && strings.Contains(line, url) && strings.Contains(line, tc.cause) {
						found = line
						t.Logf("reported after %v: %s", time.Since(begin).Round(time.Millisecond), found)
					}
				case <-deadline:
					t.Fatalf("no line within 15s says the control server cannot be reached (%s)", tc.cause)
				}
			}
			cancel()
			<-started
		})
	}
}

// holdConnections accepts connections on ln and never answers them.
func holdConnections(ln net.Listener) {
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		held = append(held, c)
	}
}

func TestDefaultControlURLIsNamed(t *testing.T) {
	n, err := New(Config{Ephemeral: true, MemoryState: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if got := n.ControlURL(); got != "https://controlplane.tailscale.com" {
		t.Errorf("ControlURL() = %q", got)
	}
}

// The default state dir keeps the node's keys where stdio children can be
// kept from them at the least cost: for root outside HOME (hiding a dir
// under HOME denies children new entries directly in HOME, such as npx's
// first ~/.npm), unless a node already has its state at the older
// default; systemd's $STATE_DIRECTORY first.
func TestDefaultStateDir(t *testing.T) {
	home := t.TempDir()
	old := filepath.Join(home, ".config", "tailgate", "gw")
	for _, tc := range []struct {
		name     string
		euid     int
		stateEnv string
		oldState bool
		want     string
	}{
		{"root", 0, "", false, "/var/lib/tailgate/gw"},
		{"root with state at the older default", 0, "", true, old},
		{"an ordinary user", 1000, "", false, old},
		{"systemd's StateDirectory", 0, "/var/lib/tg:/var/lib/other", true, "/var/lib/tg/gw"},
		{"systemd's StateDirectory, ordinary user", 1000, "/var/lib/tg", false, "/var/lib/tg/gw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("HOME", home)
			t.Setenv("XDG_CONFIG_HOME", "")
			t.Setenv("STATE_DIRECTORY", tc.stateEnv)
			os.RemoveAll(filepath.Join(home, ".config"))
			if tc.oldState {
				if err := os.MkdirAll(old, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			got, err := DefaultStateDir("gw", tc.euid)
			if err != nil || got != tc.want {
				t.Errorf("DefaultStateDir = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
