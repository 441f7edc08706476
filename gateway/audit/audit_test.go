package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

func record(i int) Record {
	return Record{Event: "mcp.call", Caller: Caller{Login: "alice@example.com", Node: "alice-laptop"}, Route: "mcp",
		Target: "gh", Method: "tools/call", Kind: "tool", Name: "create_issue", Decision: "allow", Rule: "rules[0]",
		Outcome: "ok", Duration: float64(i) / 10, Session: "s1"}
}

func writeTrail(t *testing.T, file string, n int) {
	t.Helper()
	l, err := Open(Options{File: file, Gateway: "tailgate.example.ts.net"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := l.Write(record(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// A trail verifies as written, across a restart; a line edited, removed,
// inserted or reordered is found, and the line named.
func TestVerifyFindsTampering(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	writeTrail(t, file, 5)
	writeTrail(t, file, 5) // a restart: the chain goes on
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := Verify(bytes.NewReader(data), ""); err != nil || res.Records != 10 || res.First != genesis {
		t.Fatalf("the trail as written: %+v %v", res, err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(data), "\n"), "\n")
	for _, tc := range []struct {
		name  string
		edit  func([]string) []string
		wants string
	}{
		{"a field edited", func(l []string) []string {
			l[3] = strings.Replace(l[3], `"decision":"allow"`, `"decision":"deny"`, 1)
			return l
		}, "line 4: the record was changed"},
		{"a line removed", func(l []string) []string { return append(l[:4:4], l[5:]...) }, "line 5: does not follow"},
		{"a line inserted", func(l []string) []string {
			return append(append(append([]string{}, l[:2]...), l[7]), l[2:]...)
		}, "line 3: does not follow"},
		{"the hash removed", func(l []string) []string {
			l[0] = l[0][:strings.Index(l[0], `,"hash"`)] + "}\n"
			return l
		}, "line 1: the record has no hash"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			edited := strings.Join(tc.edit(append([]string{}, lines...)), "")
			if _, err := Verify(strings.NewReader(edited), ""); err == nil || !strings.Contains(err.Error(), tc.wants) {
				t.Errorf("verify: %v, want %q", err, tc.wants)
			}
		})
	}
}

// Rotated files chain on: each file verifies against the last hash of the
// one before, and a missing file breaks the chain.
func TestVerifyAcrossRotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "audit.jsonl")
	l, err := Open(Options{File: file, MaxSizeMB: 1, Now: func() time.Time { return time.Unix(1e9, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	big := record(0)
	big.Reason = strings.Repeat("x", 2000)
	for range 1200 { // 2.4 MB: at least two rotations
		if err := l.Write(big); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "audit-*.jsonl"))
	sort.Strings(files) // lumberjack names backups by time
	files = append(files, file)
	if len(files) < 3 {
		t.Fatalf("%d files, want rotation", len(files))
	}
	prev, total := "", 0
	for _, f := range files {
		data, _ := os.ReadFile(f)
		res, err := Verify(bytes.NewReader(data), prev)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		prev, total = res.Last, total+res.Records
	}
	if total != 1200 {
		t.Errorf("%d records across the files, want 1200", total)
	}
	data, _ := os.ReadFile(files[2])
	first, _ := os.ReadFile(files[0])
	firstRes, _ := Verify(bytes.NewReader(first), "")
	if _, err := Verify(bytes.NewReader(data), firstRes.Last); err == nil {
		t.Error("a file verified after the one two before it: a removed file goes unseen")
	}
}
