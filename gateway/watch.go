package gateway

import (
	"crypto/sha256"
	"os"
	"syscall"
	"time"
)

// ConfigFile watches a config file for hot reload. It stats the file
// first and reads it only when its size, times or identity changed (an
// editor's write, a rename over it, a ConfigMap's symlink swap), and it
// reports a change only when the contents differ from the last contents
// it handed out: a touched or rewritten-as-before file is read once and
// not reloaded, and an unchanged one is not read at all.
type ConfigFile struct {
	path  string
	stamp fileStamp
	sum   [32]byte

	// stat and read are os.Stat and os.ReadFile; tests count calls.
	stat func(string) (os.FileInfo, error)
	read func(string) ([]byte, error)
}

// fileStamp is what a stat says about a file's version.
type fileStamp struct {
	size         int64
	mtime, ctime time.Time
	dev, ino     uint64
}

func stampOf(fi os.FileInfo) fileStamp {
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.dev, st.ino = uint64(sys.Dev), uint64(sys.Ino)
		st.ctime = time.Unix(int64(sys.Ctim.Sec), int64(sys.Ctim.Nsec))
	}
	return st
}

// WatchConfigFile reads the config file at path and watches it from
// there: it returns the watcher and the contents, to be parsed.
func WatchConfigFile(path string) (*ConfigFile, []byte, error) {
	w := &ConfigFile{path: path, stat: os.Stat, read: os.ReadFile}
	data, err := w.Read()
	if err != nil {
		return nil, nil, err
	}
	return w, data, nil
}

// Changed reports whether the file's contents changed since they were last
// handed out, and returns the new contents if so. A file that cannot be
// stat'ed or read (being replaced) is not a change.
func (w *ConfigFile) Changed() ([]byte, bool) {
	fi, err := w.stat(w.path)
	if err != nil {
		return nil, false
	}
	stamp := stampOf(fi)
	if stamp == w.stamp {
		return nil, false
	}
	data, err := w.read(w.path)
	if err != nil {
		return nil, false
	}
	// The stamp is of before the read: a write racing with it changes the
	// stamp again and is read on the next check.
	w.stamp = stamp
	sum := sha256.Sum256(data)
	if sum == w.sum {
		return nil, false
	}
	w.sum = sum
	return data, true
}

// Read reads the file whatever its stamp (a SIGHUP asks for a reload) and
// records it as handed out.
func (w *ConfigFile) Read() ([]byte, error) {
	fi, err := w.stat(w.path)
	if err != nil {
		return nil, err
	}
	data, err := w.read(w.path)
	if err != nil {
		return nil, err
	}
	w.stamp, w.sum = stampOf(fi), sha256.Sum256(data)
	return data, nil
}

// Path is the watched file.
func (w *ConfigFile) Path() string { return w.path }
