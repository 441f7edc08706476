package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tailgate-dev/tailgate/gateway/audit"
)

// tailgate audit verify says ok for a trail as written, and names the file
// and line of a record edited after.
func TestAuditVerifyCommand(t *testing.T) {
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := audit.Open(audit.Options{File: file})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"echo", "add", "env"} {
		if err := l.Write(audit.Record{Event: "mcp.call", Name: name, Decision: "allow", Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"audit", "verify", file}, &out, &errOut, nil); code != exitOK || !strings.Contains(out.String(), "ok: 3 records") {
		t.Fatalf("verify of the trail as written: %d %s %s", code, out.String(), errOut.String())
	}
	data, _ := os.ReadFile(file)
	if err := os.WriteFile(file, bytes.Replace(data, []byte(`"name":"add"`), []byte(`"name":"ADD"`), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errOut.Reset()
	if code := run(t.Context(), []string{"audit", "verify", file}, &out, &errOut, nil); code == exitOK || !strings.Contains(errOut.String(), "line 2: the record was changed") {
		t.Errorf("verify of an edited trail: %d %s %s", code, out.String(), errOut.String())
	}
}
