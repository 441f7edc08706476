package idtoken

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tailgate-dev/tailgate/tsnode"
)

// The signing algorithms a Signer can use, by their JOSE names.
const (
	// EdDSA is Ed25519 (RFC 8037), the default: small keys and tokens,
	// fast, deterministic signatures.
	EdDSA = "EdDSA"
	// ES256 is ECDSA on P-256 with SHA-256, for verifiers whose JWT
	// library has no EdDSA.
	ES256 = "ES256"
)

// Defaults of Options.
const (
	// DefaultTTL is how long a token is valid: long enough for a call
	// (and the cache in Token to save most signatures), short enough that
	// a token leaked from a target's logs is soon worthless.
	DefaultTTL = 5 * time.Minute
	// DefaultRotateEvery is how often the signing key changes. A key read
	// from the state directory (a backup, a snapshot) signs for at most a
	// day and is unpublished TTL plus retireMargin after that. Rotating
	// more often buys little: verifiers never miss a new key, since the
	// next key is published a whole period before it signs, and each
	// rotation rewrites the key file.
	DefaultRotateEvery = 24 * time.Hour
)

// retireMargin is how long past the token TTL a retired key stays in the
// JWKS: room for clock skew between gateway and targets, the verifiers'
// leeway and a token minted at the instant of rotation.
const retireMargin = 10 * time.Minute

// Well-known paths that Handler serves.
const (
	// JWKSPath is where the public keys are, as a JSON Web Key Set.
	JWKSPath = "/.well-known/jwks.json"
	// DiscoveryPath is where the OpenID-style discovery document is.
	DiscoveryPath = "/.well-known/openid-configuration"
)

// jwksMaxAge is the Cache-Control max-age of Handler's documents. Caching
// cannot make a verifier miss a key: a key is published a full rotation
// period before it signs.
const jwksMaxAge = 5 * time.Minute

// tokenCacheSize bounds Token's cache: enough for every caller of a busy
// gateway times its targets, small enough (tokens are a few hundred bytes
// to a few KB with grants) to be harmless.
const tokenCacheSize = 4096

// rotateCheckEvery caps how long Run sleeps between looks at the wall
// clock: timers run on the monotonic clock, which stops while a machine
// is suspended, and rotation is due by wall-clock time.
const rotateCheckEvery = 15 * time.Minute

// rotateRetryAfter is how long Run waits after a rotation failed (the key
// file could not be written) before trying again; the current key keeps
// signing meanwhile.
const rotateRetryAfter = time.Minute

// Options configure a Signer.
type Options struct {
	// Dir is the state directory that holds the key file (made 0700 if
	// missing; the file is 0600). Empty keeps keys in memory only: every
	// Open makes new ones, and tokens from before it no longer verify.
	Dir string
	// Issuer is the gateway's URL as targets reach it on the tailnet,
	// e.g. "https://gw.example.ts.net": the tokens' iss, and the base of
	// the JWKS URL in the discovery document. A trailing slash is dropped.
	Issuer string
	// Algorithm is EdDSA (the default) or ES256. Changing it across a
	// restart rotates to a key of the new algorithm at once; the old key
	// stays published for the tokens it signed.
	Algorithm string
	// TTL is how long a token is valid; DefaultTTL when zero.
	TTL time.Duration
	// RotateEvery is how long a key signs before Run rotates it;
	// DefaultRotateEvery when zero. It must be at least TTL.
	RotateEvery time.Duration
	// Now is the clock; time.Now when nil. For tests.
	Now func() time.Time
	// Log receives key creation, rotation and failures; discarded when
	// nil. It never sees private keys or tokens.
	Log *slog.Logger
}

// Signer mints identity tokens and publishes the keys that verify them.
// It is safe for concurrent use.
type Signer struct {
	dir         string
	issuer      string
	alg         string
	ttl         time.Duration
	rotateEvery time.Duration
	retention   time.Duration
	now         func() time.Time
	log         *slog.Logger

	// rotateMu serializes rotations, so that each reads the ring it
	// replaces and the key file is written by one at a time.
	rotateMu sync.Mutex
	// ring is the current keyring; replaced whole, never changed, so
	// Mint and Handler read it without a lock.
	ring atomic.Pointer[keyring]

	// cacheMu guards cache.
	cacheMu sync.Mutex
	// cache holds Token's tokens by caller and audience.
	cache map[cacheKey]cachedToken
	// cacheSize bounds cache; tokenCacheSize but for tests.
	cacheSize int
}

// Open returns a Signer with the keys in opts.Dir, made there on first
// start. An existing current key of the configured algorithm is kept
// unless it is due for rotation (the gateway was down when it was due), so
// tokens minted before a restart still verify after it. A key file that
// cannot be read is an error, not a reason to make new keys silently.
func Open(opts Options) (*Signer, error) {
	issuer, err := checkIssuer(opts.Issuer)
	if err != nil {
		return nil, err
	}
	s := &Signer{
		dir:         opts.Dir,
		issuer:      issuer,
		alg:         opts.Algorithm,
		ttl:         opts.TTL,
		rotateEvery: opts.RotateEvery,
		now:         opts.Now,
		log:         opts.Log,
		cache:       make(map[cacheKey]cachedToken),
		cacheSize:   tokenCacheSize,
	}
	if s.alg == "" {
		s.alg = EdDSA
	}
	if s.alg != EdDSA && s.alg != ES256 {
		return nil, fmt.Errorf("idtoken: algorithm %q: want %s or %s", s.alg, EdDSA, ES256)
	}
	if s.ttl == 0 {
		s.ttl = DefaultTTL
	}
	if s.rotateEvery == 0 {
		s.rotateEvery = DefaultRotateEvery
	}
	if s.ttl < 0 || s.rotateEvery < s.ttl {
		return nil, fmt.Errorf("idtoken: TTL %v and rotation period %v: want 0 < TTL <= rotation period", s.ttl, s.rotateEvery)
	}
	s.retention = s.ttl + retireMargin
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}

	ring := &keyring{}
	if s.dir != "" {
		loaded, tightened, err := loadRing(s.dir)
		if err != nil {
			return nil, err
		}
		if tightened {
			s.log.Warn("idtoken: key file was readable by others; made it 0600", "dir", s.dir)
		}
		if loaded != nil {
			ring = loaded
		}
	}
	settled, changed, err := ring.settled(s.now(), s.alg, s.rotateEvery, s.retention)
	if err != nil {
		return nil, err
	}
	if changed && s.dir != "" {
		if err := saveRing(s.dir, settled); err != nil {
			return nil, err
		}
	}
	s.ring.Store(settled)
	if ring.current == nil || settled.current.kid() != ring.current.kid() {
		s.log.Info("idtoken: new signing key", "kid", settled.current.kid(), "alg", s.alg, "persisted", s.dir != "")
	} else {
		s.log.Info("idtoken: signing key loaded", "kid", settled.current.kid(), "alg", s.alg)
	}
	return s, nil
}

// checkIssuer returns issuer without a trailing slash if it is an
// absolute http or https URL with a host and no query, fragment or user.
func checkIssuer(issuer string) (string, error) {
	issuer = strings.TrimSuffix(issuer, "/")
	u, err := url.Parse(issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
		u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("idtoken: issuer %q: want an http(s) URL with a host, no query or fragment, like https://gw.example.ts.net", issuer)
	}
	return issuer, nil
}

// Issuer is the tokens' iss, as targets must configure it.
func (s *Signer) Issuer() string { return s.issuer }

// JWKSURL is where targets fetch the keys: the issuer plus JWKSPath.
func (s *Signer) JWKSURL() string { return s.issuer + JWKSPath }

// Mint signs a new token that says id is calling audience (the target,
// in the form the target checks: e.g. its URL). It expires after the TTL,
// at expires.
func (s *Signer) Mint(id *tsnode.Identity, audience string) (token string, expires time.Time, err error) {
	c, err := identityClaims(id)
	if err != nil {
		return "", time.Time{}, err
	}
	return s.mint(c, audience)
}

// mint signs the identity claims c for audience with the current key.
func (s *Signer) mint(c Claims, audience string) (string, time.Time, error) {
	if audience == "" {
		return "", time.Time{}, errors.New("idtoken: no audience")
	}
	now := time.Unix(s.now().Unix(), 0)
	expires := now.Add(s.ttl)
	c.Issuer = s.issuer
	c.Audience = jwt.Audience{audience}
	c.IssuedAt = jwt.NewNumericDate(now)
	c.NotBefore = jwt.NewNumericDate(now)
	c.Expiry = jwt.NewNumericDate(expires)
	c.ID = rand.Text()
	token, err := jwt.Signed(s.ring.Load().current.signer).Claims(c).Serialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("idtoken: sign: %w", err)
	}
	return token, expires, nil
}

// cacheKey names a cached token: the hash of its identity claims (every
// field of the caller that goes into a token) and its audience.
type cacheKey struct {
	identity [sha256.Size]byte
	audience string
}

// cachedToken is a token in Token's cache.
type cachedToken struct {
	token   string
	expires time.Time
}

// Token is Mint with a cache: it returns the token it last minted for the
// same caller (login, node, tags and grants) and audience while that has
// at least half its lifetime left, so a busy caller costs one signature
// per half TTL and a target gets tokens with minutes to run. The cache
// holds at most a few thousand tokens and forgets them on Rotate.
func (s *Signer) Token(id *tsnode.Identity, audience string) (token string, expires time.Time, err error) {
	c, err := identityClaims(id)
	if err != nil {
		return "", time.Time{}, err
	}
	ident, err := json.Marshal(c)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("idtoken: encode claims: %w", err)
	}
	key := cacheKey{identity: sha256.Sum256(ident), audience: audience}
	fresh := func(t cachedToken) bool { return t.expires.Sub(s.now()) >= s.ttl/2 }

	s.cacheMu.Lock()
	t, ok := s.cache[key]
	s.cacheMu.Unlock()
	if ok && fresh(t) {
		return t.token, t.expires, nil
	}
	token, expires, err = s.mint(c, audience)
	if err != nil {
		return "", time.Time{}, err
	}
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if len(s.cache) >= s.cacheSize {
		for k, t := range s.cache {
			if !fresh(t) {
				delete(s.cache, k)
			}
		}
		// Still full of fresh tokens: drop any one (map order is
		// arbitrary); its caller pays one more signature.
		for k := range s.cache {
			if len(s.cache) < s.cacheSize {
				break
			}
			delete(s.cache, k)
		}
	}
	s.cache[key] = cachedToken{token: token, expires: expires}
	return token, expires, nil
}

// Rotate makes the next key the signing key now and a new next key,
// writes them to the key file and forgets cached tokens. The key that
// signed until now stays published for the TTL plus a margin, so the
// tokens it signed still verify. If the key file cannot be written,
// nothing changes and the error says why. Run calls it on schedule; call
// it directly to rotate early. (Rotate promotes the next key, which was in
// the key file already: after a leak of the state directory, stop the
// gateway, remove the key file and start it again.)
func (s *Signer) Rotate() error {
	s.rotateMu.Lock()
	defer s.rotateMu.Unlock()
	old := s.ring.Load()
	ring, err := old.rotated(s.now(), s.alg, s.retention)
	if err != nil {
		return err
	}
	if s.dir != "" {
		if err := saveRing(s.dir, ring); err != nil {
			return err
		}
	}
	s.ring.Store(ring)
	s.cacheMu.Lock()
	clear(s.cache)
	s.cacheMu.Unlock()
	s.log.Info("idtoken: rotated signing key", "kid", ring.current.kid(), "retired", old.current.kid(), "alg", s.alg)
	return nil
}

// Run rotates the signing key every RotateEvery (counted from when the
// current key started signing, across restarts) until ctx is done, and
// then returns nil. A failed rotation is logged and retried a minute
// later; the current key signs meanwhile.
func (s *Signer) Run(ctx context.Context) error {
	for {
		wait := s.ring.Load().current.activated.Add(s.rotateEvery).Sub(s.now())
		if wait <= 0 {
			err := s.Rotate()
			if err == nil {
				continue
			}
			s.log.Error("idtoken: key rotation failed; the current key keeps signing", "err", err)
			wait = rotateRetryAfter
		}
		timer := time.NewTimer(min(wait, rotateCheckEvery))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
	}
}

// Handler serves JWKSPath (the public keys: the signing key, the next
// one and retired ones still valid for tokens in flight) and
// DiscoveryPath (the issuer, jwks_uri and algorithms, OpenID style), to
// GET and HEAD, with Cache-Control for a few minutes. Mount it at both
// paths on the listeners targets reach.
func (s *Signer) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var doc any
		switch r.URL.Path {
		case JWKSPath:
			doc = s.jwks()
		case DiscoveryPath:
			doc = s.discovery()
		default:
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		body, err := json.Marshal(doc)
		if err != nil {
			http.Error(w, "cannot encode keys", http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(jwksMaxAge.Seconds())))
		h.Set("Access-Control-Allow-Origin", "*")
		if r.Method == http.MethodGet {
			w.Write(body)
		}
	})
}

// jwks is the public JWK Set of the keys published now.
func (s *Signer) jwks() jose.JSONWebKeySet {
	var set jose.JSONWebKeySet
	for _, k := range s.ring.Load().published(s.now()) {
		set.Keys = append(set.Keys, k.jwk.Public())
	}
	return set
}

// discoveryDocument is the OpenID-style provider metadata: what a verifier
// needs to find the keys and know the tokens. tailgate is no OpenID
// provider (it has no authorization endpoint: it mints tokens itself, for
// its own calls), so only these members are present.
type discoveryDocument struct {
	Issuer             string   `json:"issuer"`
	JWKSURI            string   `json:"jwks_uri"`
	ResponseTypes      []string `json:"response_types_supported"`
	SubjectTypes       []string `json:"subject_types_supported"`
	IDTokenSigningAlgs []string `json:"id_token_signing_alg_values_supported"`
	ClaimsSupported    []string `json:"claims_supported"`
}

// discovery is the discovery document now.
func (s *Signer) discovery() discoveryDocument {
	ring := s.ring.Load()
	algs := []string{ring.current.alg()}
	if a := ring.next.alg(); !slices.Contains(algs, a) {
		algs = append(algs, a)
	}
	return discoveryDocument{
		Issuer:             s.issuer,
		JWKSURI:            s.JWKSURL(),
		ResponseTypes:      []string{"id_token"},
		SubjectTypes:       []string{"public"},
		IDTokenSigningAlgs: algs,
		ClaimsSupported:    []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "node", "tags", "caps"},
	}
}
