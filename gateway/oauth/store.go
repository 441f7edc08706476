package oauth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// Record is what tailgate holds for one login at one target: the client
// it is registered as at the target's authorization server, and the
// login's token. It is stored encrypted (Store).
type Record struct {
	Target string `json:"target"`
	Login  string `json:"login"`
	// Resource is the target's resource URL (RFC 8707); Issuer its
	// authorization server as of the connection, and RevocationURL that
	// server's revocation endpoint (RFC 7009), if it has one.
	Resource      string `json:"resource"`
	Issuer        string `json:"issuer,omitempty"`
	RevocationURL string `json:"revocation_url,omitempty"`
	// ClientID, ClientSecret and AuthStyle are the client tailgate is at
	// the authorization server (pre-registered, registered dynamically,
	// or a client ID metadata document URL).
	ClientID     string           `json:"client_id"`
	ClientSecret string           `json:"client_secret,omitempty"`
	AuthStyle    oauth2.AuthStyle `json:"auth_style"`
	AuthURL      string           `json:"auth_url"`
	TokenURL     string           `json:"token_url"`
	Scopes       []string         `json:"scopes,omitempty"`
	Token        *oauth2.Token    `json:"token"`
	Connected    time.Time        `json:"connected"`
}

// Store keeps Records in a directory, one file per login and target, each
// sealed with AES-256-GCM under a key that is not in the directory (a key
// file or a setec secret the config names), bound to its login and
// target: a file copied into another's place does not open. Replicas
// that share the directory (and the key) share the connections.
type Store struct {
	dir  string
	aead cipher.AEAD
	mu   sync.Mutex
}

// KeySize is the size of a Store's key: 32 bytes, given raw, hex or
// base64.
const KeySize = 32

// ParseKey reads a Store key: 32 bytes raw, or 64 hex digits, or base64
// of 32 bytes (surrounding space ignored).
func ParseKey(b []byte) ([]byte, error) {
	if len(b) == KeySize {
		return b, nil
	}
	s := strings.TrimSpace(string(b))
	if k, err := hex.DecodeString(s); err == nil && len(k) == KeySize {
		return k, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil && len(k) == KeySize {
			return k, nil
		}
	}
	return nil, fmt.Errorf("a connection store key is %d bytes, raw, hex or base64 (`openssl rand -hex 32`)", KeySize)
}

// NewStore is a store in dir (made if missing, mode 0700) sealed with key.
func NewStore(dir string, key []byte) (*Store, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("connection store key: %d bytes, want %d", len(key), KeySize)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("connection store: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("connection store: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Store{dir: dir, aead: aead}, nil
}

// slot names the file of login at target (no login or target in clear
// in the directory's listing), and is the data each file is bound to.
func slot(target, login string) (name string, ad []byte) {
	ad = []byte("tailgate-oauth\x00" + target + "\x00" + login)
	sum := sha256.Sum256(ad)
	return hex.EncodeToString(sum[:]) + ".conn", ad
}

// Get is login's record at target; nil if there is none.
func (s *Store) Get(target, login string) (*Record, error) {
	name, ad := slot(target, login)
	s.mu.Lock()
	sealed, err := os.ReadFile(filepath.Join(s.dir, name))
	s.mu.Unlock()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("connection store: %w", err)
	}
	ns := s.aead.NonceSize()
	if len(sealed) < ns {
		return nil, fmt.Errorf("connection store: %s is truncated", name)
	}
	plain, err := s.aead.Open(nil, sealed[:ns], sealed[ns:], ad)
	if err != nil {
		return nil, fmt.Errorf("connection store: %s does not open with this key (another key, or not this login's)", name)
	}
	var r Record
	if err := json.Unmarshal(plain, &r); err != nil {
		return nil, fmt.Errorf("connection store: %s: %w", name, err)
	}
	return &r, nil
}

// Put stores r as its login's record at target (a connector's slot
// name), replacing what it had.
func (s *Store) Put(target string, r *Record) error {
	plain, err := json.Marshal(r)
	if err != nil {
		return err
	}
	name, ad := slot(target, r.Login)
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	sealed := s.aead.Seal(nonce, nonce, plain, ad)
	s.mu.Lock()
	defer s.mu.Unlock()
	tmp, err := os.CreateTemp(s.dir, ".conn-*")
	if err != nil {
		return fmt.Errorf("connection store: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(sealed); err != nil {
		tmp.Close()
		return fmt.Errorf("connection store: %w", err)
	}
	// On disk before it replaces the old one: a crash leaves one or the
	// other, never an empty file in its place.
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("connection store: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("connection store: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(s.dir, name)); err != nil {
		return fmt.Errorf("connection store: %w", err)
	}
	return nil
}

// Delete removes login's record at target.
func (s *Store) Delete(target, login string) error {
	name, _ := slot(target, login)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("connection store: %w", err)
	}
	return nil
}
