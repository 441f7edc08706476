package idtoken

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// keyFileName is the file in the state directory that holds the keys,
// private parts included.
const keyFileName = "idtoken-keys.json"

// signingKey is one key pair of the ring. It is never changed once made:
// a rotation builds new values, so a keyring read by Mint or Handler
// stays consistent while another goroutine rotates.
type signingKey struct {
	// jwk is the private key, with its kid (the RFC 7638 thumbprint, so
	// the same key has the same kid after a restart), alg and use.
	jwk jose.JSONWebKey
	// created is when the key was made.
	created time.Time
	// activated is when the key started signing; zero for the next key.
	activated time.Time
	// publishUntil is when a retired key leaves the JWKS: every token it
	// signed has expired by then.
	publishUntil time.Time
	// signer signs with the key; set on the current key only.
	signer jose.Signer
}

// kid is the key's ID, as in a token's header and the JWKS.
func (k *signingKey) kid() string { return k.jwk.KeyID }

// alg is the key's JOSE algorithm, "EdDSA" or "ES256".
func (k *signingKey) alg() string { return k.jwk.Algorithm }

// keyring is every key the Signer has: the one that signs, the one that
// will sign after the next rotation (published already, so that verifiers
// with a cached JWKS know it before it is used), and the retired ones
// still published for tokens in flight.
type keyring struct {
	current *signingKey
	next    *signingKey
	retired []*signingKey
}

// published are the keys the JWKS lists at now: current, next and the
// retired keys whose tokens may still be unexpired.
func (r *keyring) published(now time.Time) []*signingKey {
	keys := []*signingKey{r.current, r.next}
	for _, k := range r.retired {
		if now.Before(k.publishUntil) {
			keys = append(keys, k)
		}
	}
	return keys
}

// newSigningKey makes a fresh key pair for alg at now.
func newSigningKey(alg string, now time.Time) (*signingKey, error) {
	var priv any
	switch alg {
	case EdDSA:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("idtoken: generate Ed25519 key: %w", err)
		}
		priv = k
	case ES256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("idtoken: generate P-256 key: %w", err)
		}
		priv = k
	default:
		return nil, fmt.Errorf("idtoken: unsupported algorithm %q", alg)
	}
	jwk := jose.JSONWebKey{Key: priv, Algorithm: alg, Use: "sig"}
	kid, err := thumbprint(jwk)
	if err != nil {
		return nil, err
	}
	jwk.KeyID = kid
	return &signingKey{jwk: jwk, created: now}, nil
}

// thumbprint is the RFC 7638 SHA-256 thumbprint of jwk, base64url: the
// key's ID.
func thumbprint(jwk jose.JSONWebKey) (string, error) {
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("idtoken: key thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// activate returns a copy of k that signs from now on.
func (k *signingKey) activate(now time.Time) (*signingKey, error) {
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.SignatureAlgorithm(k.alg()), Key: k.jwk},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("idtoken: signer for key %s: %w", k.kid(), err)
	}
	a := *k
	a.activated = now
	a.signer = signer
	return &a, nil
}

// retire returns a copy of k that no longer signs and stays published
// until publishUntil.
func (k *signingKey) retire(publishUntil time.Time) *signingKey {
	r := *k
	r.signer = nil
	r.publishUntil = publishUntil
	return &r
}

// rotated is the ring after a rotation at now: the current key retires
// (published for retention more), the next key signs, and a new next key
// is made. When the next key is not of alg (the configured algorithm
// changed), a new key of alg signs instead. Retired keys past their time
// are dropped.
func (r *keyring) rotated(now time.Time, alg string, retention time.Duration) (*keyring, error) {
	nr := &keyring{}
	for _, k := range r.retired {
		if now.Before(k.publishUntil) {
			nr.retired = append(nr.retired, k)
		}
	}
	if r.current != nil {
		nr.retired = append(nr.retired, r.current.retire(now.Add(retention)))
	}
	next := r.next
	if next == nil || next.alg() != alg {
		var err error
		if next, err = newSigningKey(alg, now); err != nil {
			return nil, err
		}
	}
	current, err := next.activate(now)
	if err != nil {
		return nil, err
	}
	nr.current = current
	if nr.next, err = newSigningKey(alg, now); err != nil {
		return nil, err
	}
	return nr, nil
}

// settled is a ring loaded at start made ready to sign at now, and
// whether that changed it: a missing current key, one of another
// algorithm than alg or one due for rotation rotates (so a gateway that
// was down through its rotation time rotates as it starts); a missing
// next key, or one of another algorithm, is made; expired retired keys go.
// A current key that is valid is kept: restarts never change the key.
func (r *keyring) settled(now time.Time, alg string, rotateEvery, retention time.Duration) (*keyring, bool, error) {
	if r.current == nil || r.current.alg() != alg || !now.Before(r.current.activated.Add(rotateEvery)) {
		nr, err := r.rotated(now, alg, retention)
		return nr, true, err
	}
	nr := &keyring{current: r.current, next: r.next}
	changed := false
	for _, k := range r.retired {
		if now.Before(k.publishUntil) {
			nr.retired = append(nr.retired, k)
		} else {
			changed = true
		}
	}
	if nr.next == nil || nr.next.alg() != alg {
		next, err := newSigningKey(alg, now)
		if err != nil {
			return nil, false, err
		}
		nr.next = next
		changed = true
	}
	return nr, changed, nil
}

// Roles of a key in the key file.
const (
	roleCurrent = "current"
	roleNext    = "next"
	roleRetired = "retired"
)

// keyFile is the key file's JSON: every key of the ring, private parts
// included, with its role and times.
type keyFile struct {
	Keys []storedKey `json:"keys"`
}

// storedKey is one key in the key file.
type storedKey struct {
	Role         string          `json:"role"`
	Created      time.Time       `json:"created"`
	Activated    time.Time       `json:"activated,omitzero"`
	PublishUntil time.Time       `json:"publishUntil,omitzero"`
	JWK          jose.JSONWebKey `json:"jwk"`
}

// marshalRing is the key file's content for r.
func marshalRing(r *keyring) ([]byte, error) {
	var f keyFile
	add := func(role string, k *signingKey) {
		f.Keys = append(f.Keys, storedKey{Role: role, Created: k.created, Activated: k.activated, PublishUntil: k.publishUntil, JWK: k.jwk})
	}
	add(roleCurrent, r.current)
	add(roleNext, r.next)
	for _, k := range r.retired {
		add(roleRetired, k)
	}
	return json.MarshalIndent(f, "", "  ")
}

// unmarshalRing reads a key file. It refuses anything it does not fully
// understand (a public-only key, an unknown algorithm, a kid that is not
// the key's thumbprint, two current keys) rather than sign with, or
// publish, a key it misread.
func unmarshalRing(data []byte) (*keyring, error) {
	var f keyFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	r := &keyring{}
	for i, sk := range f.Keys {
		k := &signingKey{jwk: sk.JWK, created: sk.Created, activated: sk.Activated, publishUntil: sk.PublishUntil}
		if err := checkPrivateKey(sk.JWK); err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		switch sk.Role {
		case roleCurrent:
			if r.current != nil {
				return nil, errors.New("two current keys")
			}
			a, err := k.activate(sk.Activated)
			if err != nil {
				return nil, err
			}
			r.current = a
		case roleNext:
			if r.next != nil {
				return nil, errors.New("two next keys")
			}
			r.next = k
		case roleRetired:
			r.retired = append(r.retired, k)
		default:
			return nil, fmt.Errorf("key %d: unknown role %q", i, sk.Role)
		}
	}
	return r, nil
}

// checkPrivateKey says whether jwk is a private key this package makes:
// Ed25519 for EdDSA or P-256 for ES256, with its thumbprint as kid.
func checkPrivateKey(jwk jose.JSONWebKey) error {
	switch key := jwk.Key.(type) {
	case ed25519.PrivateKey:
		if jwk.Algorithm != EdDSA {
			return fmt.Errorf("Ed25519 key with algorithm %q", jwk.Algorithm)
		}
	case *ecdsa.PrivateKey:
		if jwk.Algorithm != ES256 || key.Curve != elliptic.P256() {
			return fmt.Errorf("EC key with algorithm %q", jwk.Algorithm)
		}
	default:
		return fmt.Errorf("not an Ed25519 or P-256 private key (%T)", jwk.Key)
	}
	if !jwk.Valid() {
		return errors.New("invalid key")
	}
	kid, err := thumbprint(jwk)
	if err != nil {
		return err
	}
	if kid != jwk.KeyID {
		return fmt.Errorf("kid %q is not the key's thumbprint", jwk.KeyID)
	}
	return nil
}

// loadRing reads the key file in dir; a nil ring when there is none yet.
// A key file that others can read is made private again and tightened
// says so, for the caller to warn about.
func loadRing(dir string) (r *keyring, tightened bool, err error) {
	path := filepath.Join(dir, keyFileName)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("idtoken: read keys: %w", err)
	}
	r, err = unmarshalRing(data)
	if err != nil {
		return nil, false, fmt.Errorf("idtoken: key file %s is unusable (%v); move it away to start with new keys", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, false, fmt.Errorf("idtoken: key file %s is readable by others and cannot be made private: %w", path, err)
		}
		tightened = true
	}
	return r, tightened, nil
}

// saveRing writes r to the key file in dir atomically (a temporary file,
// synced, renamed over the old one), readable by the owner only, in a
// directory made 0700 if missing.
func saveRing(dir string, r *keyring) error {
	data, err := marshalRing(r)
	if err != nil {
		return fmt.Errorf("idtoken: encode keys: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("idtoken: state directory: %w", err)
	}
	if err := writeFileAtomic(dir, keyFileName, data); err != nil {
		return fmt.Errorf("idtoken: save keys: %w", err)
	}
	return nil
}

// writeFileAtomic replaces the file name in dir with data, mode 0600, so
// that a crash leaves either the old file or the new one, never a partial
// one.
func writeFileAtomic(dir, name string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	// The rename is durable once the directory is synced; a failure here
	// leaves the new file in place, so it is not reported.
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
