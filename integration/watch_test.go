package integration

import (
	"encoding/binary"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fileOpens counts the opens of path by any process during d (inotify).
func fileOpens(t *testing.T, path string, d time.Duration) int {
	t.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		t.Skipf("inotify: %v", err)
	}
	defer syscall.Close(fd)
	if _, err := syscall.InotifyAddWatch(fd, path, syscall.IN_OPEN); err != nil {
		t.Fatal(err)
	}
	opens := 0
	buf := make([]byte, 4096)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		n, err := syscall.Read(fd, buf)
		for off := 0; err == nil && off+16 <= n; {
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			if mask&syscall.IN_OPEN != 0 {
				opens++
			}
			off += 16 + int(binary.NativeEndian.Uint32(buf[off+12:]))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return opens
}

// The config watcher of the binary stats its file and reads it only when
// it changed: an unchanged file is not opened at every tick, and a file
// touched without a change is read once and not reloaded. Before, the
// watcher read the whole file at every tick (10 opens a second here).
func TestConfigWatcherLeavesAnUnchangedFileAlone(t *testing.T) {
	tn := gatewaytest.NewTailnet(t)
	base := tailscaleBlock(tn.ControlURL, "") + "config: {adminAddr: \"127.0.0.1:0\"}\n"
	cfgFile := writeConfig(t, base+seedLike("true", t.TempDir()))
	p := startTailgateArgs(t, []string{"-f", cfgFile, "--watch", "100ms"})
	p.waitLine(t, "tailgate ready", 45*time.Second)

	if n := fileOpens(t, cfgFile, time.Second); n != 0 {
		t.Errorf("an unchanged config file was opened %d times in a second", n)
	}
	now := time.Now()
	os.Chtimes(cfgFile, now, now)
	if n := fileOpens(t, cfgFile, time.Second); n != 1 {
		t.Errorf("a touched config file was opened %d times, want once", n)
	}
	if out := p.output(); strings.Contains(out, "config file changed") {
		t.Errorf("a touched, unchanged config file was reloaded:\n%s", out)
	}

	// A real change is still found.
	data, _ := os.ReadFile(cfgFile)
	os.WriteFile(cfgFile, []byte(strings.Replace(string(data), "config: {", "config: {statsAddr: \"127.0.0.1:0\", ", 1)), 0o600)
	p.waitLine(t, "config file changed: reloading", 10*time.Second)
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 15*time.Second)
}
