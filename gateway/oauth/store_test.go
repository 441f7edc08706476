package oauth

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

func newKey(t *testing.T) []byte {
	k := make([]byte, KeySize)
	rand.Read(k)
	return k
}

// A record comes back as stored, from a file that names neither the
// login nor the target and holds no token in clear.
func TestStoreSealsRecords(t *testing.T) {
	dir := t.TempDir()
	s, err := NewStore(dir, newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	rec := &Record{Target: "linear", Login: "alice@example.com", ClientID: "c1", Token: &oauth2.Token{AccessToken: "at-secret", RefreshToken: "rt-secret", Expiry: time.Now().Add(time.Hour).UTC()}}
	if err := s.Put("linear", rec); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get("linear", "alice@example.com")
	if err != nil || got == nil || got.Token.AccessToken != "at-secret" || got.Token.RefreshToken != "rt-secret" {
		t.Fatalf("Get: %+v %v", got, err)
	}
	if other, err := s.Get("linear", "bob@example.com"); other != nil || err != nil {
		t.Fatalf("bob's: %+v %v", other, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("files: %v", entries)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, entries[0].Name()))
	for _, clear := range []string{"alice", "linear", "at-secret", "rt-secret"} {
		if strings.Contains(entries[0].Name(), clear) || bytes.Contains(raw, []byte(clear)) {
			t.Errorf("%q readable in the store", clear)
		}
	}
	if err := s.Delete("linear", "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get("linear", "alice@example.com"); got != nil {
		t.Fatal("deleted record still there")
	}
}

// A record does not open with another key, nor in another login's place.
func TestStoreRefusesOthers(t *testing.T) {
	dir := t.TempDir()
	s, _ := NewStore(dir, newKey(t))
	s.Put("linear", &Record{Target: "linear", Login: "alice@example.com", Token: &oauth2.Token{AccessToken: "a"}})
	s.Put("linear", &Record{Target: "linear", Login: "mallory@example.com", Token: &oauth2.Token{AccessToken: "m"}})

	other, _ := NewStore(dir, newKey(t))
	if _, err := other.Get("linear", "alice@example.com"); err == nil || !strings.Contains(err.Error(), "does not open") {
		t.Fatalf("another key: %v", err)
	}
	alice, _ := slot("linear", "alice@example.com")
	mallory, _ := slot("linear", "mallory@example.com")
	b, _ := os.ReadFile(filepath.Join(dir, mallory))
	os.WriteFile(filepath.Join(dir, alice), b, 0o600)
	if got, err := s.Get("linear", "alice@example.com"); err == nil {
		t.Fatalf("mallory's record in alice's place opened: %+v", got)
	}
}

func TestParseKey(t *testing.T) {
	k := newKey(t)
	for name, in := range map[string][]byte{
		"raw":    k,
		"hex":    []byte(hex.EncodeToString(k) + "\n"),
		"base64": []byte(base64.StdEncoding.EncodeToString(k)),
	} {
		got, err := ParseKey(in)
		if err != nil || !bytes.Equal(got, k) {
			t.Errorf("%s: %x %v", name, got, err)
		}
	}
	if _, err := ParseKey([]byte("short")); err == nil {
		t.Error("a short key was taken")
	}
}
