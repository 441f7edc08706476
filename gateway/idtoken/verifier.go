package idtoken

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/modelcontextprotocol/go-sdk/auth"
)

// Leeway is the clock skew Verifier tolerates between gateway and target
// on exp, nbf and iat. auth.RequireBearerToken checks the expiry once
// more, strictly unless its ClockSkew option is set: set it to Leeway for
// the same tolerance there.
const Leeway = 30 * time.Second

// Timings of a Verifier's key cache.
const (
	// keysMaxAge is how long fetched keys are used before they are
	// fetched again (a retired key leaves the cache at most this long
	// after it leaves the JWKS).
	keysMaxAge = 5 * time.Minute
	// keysMinRefetch is the least time between two fetches, however many
	// tokens with unknown key IDs arrive: someone sending made-up tokens
	// cannot make a target hammer the gateway.
	keysMinRefetch = 10 * time.Second
	// maxJWKSBytes bounds a JWKS response.
	maxJWKSBytes = 1 << 20
	// fetchTimeout bounds a fetch with the default HTTP client.
	fetchTimeout = 10 * time.Second
)

// supportedAlgs are the algorithms a token may be signed with; anything
// else (none, HMAC, RSA) is refused before any key is looked at.
var supportedAlgs = []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256}

// Verifier returns the token verifier a target uses with go-sdk's
// auth.RequireBearerToken to accept tailgate's identity tokens:
//
//	verify := idtoken.Verifier("", "https://gw.example.ts.net", "https://notes.example.ts.net/mcp", nil)
//	http.Handle("/mcp", auth.RequireBearerToken(verify, nil)(mcpHandler))
//
// A token is accepted if a key from jwksURL (the issuer plus JWKSPath when
// empty) signed it with EdDSA or ES256, its iss is issuer, its one
// audience is audience (the string the gateway is configured to send to
// this target), and it is within exp/nbf/iat, with Leeway. The TokenInfo
// has UserID = sub (the caller's login, or a tagged node's name),
// Expiration = exp, and Extra = every claim, decoded; [ClaimsFrom] gives
// them typed.
//
// Keys are fetched with client (a 10 s timeout client when nil; on a
// tsnet target, its node's HTTPClient), cached for a few minutes, and
// fetched again when a token names a key not in the cache, at most every
// ten seconds. A token that fails a check is refused with an error
// wrapping auth.ErrInvalidToken (401); when the keys cannot be fetched at
// all, the error does not wrap it (500), since the token may be fine.
//
// Verifier panics if issuer or audience is empty: that is a target's
// configuration error, best found when it starts.
func Verifier(jwksURL, issuer, audience string, client *http.Client) auth.TokenVerifier {
	if issuer == "" || audience == "" {
		panic("idtoken.Verifier: issuer and audience must not be empty")
	}
	issuer = strings.TrimSuffix(issuer, "/")
	if jwksURL == "" {
		jwksURL = issuer + JWKSPath
	}
	if client == nil {
		client = &http.Client{Timeout: fetchTimeout}
	}
	keys := &remoteKeys{url: jwksURL, client: client}
	return func(ctx context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
		return verify(ctx, keys, issuer, audience, token)
	}
}

// invalid is an error that refuses a token: it wraps auth.ErrInvalidToken,
// which the middleware answers with 401 and the message.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", auth.ErrInvalidToken, fmt.Sprintf(format, args...))
}

// verify checks token as Verifier documents.
func verify(ctx context.Context, keys *remoteKeys, issuer, audience, token string) (*auth.TokenInfo, error) {
	tok, err := jwt.ParseSigned(token, supportedAlgs)
	if err != nil {
		return nil, invalid("not a JWT signed with EdDSA or ES256")
	}
	if len(tok.Headers) != 1 {
		return nil, invalid("want one signature")
	}
	header := tok.Headers[0]
	if header.KeyID == "" {
		return nil, invalid("no key ID")
	}
	key, err := keys.key(ctx, header.KeyID)
	if err != nil {
		return nil, err
	}
	if key.Algorithm != "" && key.Algorithm != header.Algorithm {
		return nil, invalid("algorithm %s is not the key's", header.Algorithm)
	}
	var claims Claims
	var extra map[string]any
	if err := tok.Claims(key.Key, &claims, &extra); err != nil {
		return nil, invalid("bad signature or claims")
	}
	if claims.Issuer != issuer {
		return nil, invalid("issuer %q is not %q", claims.Issuer, issuer)
	}
	if len(claims.Audience) != 1 || claims.Audience[0] != audience {
		return nil, invalid("token is not for this target")
	}
	if claims.Expiry == nil {
		return nil, invalid("no expiry")
	}
	if claims.Subject == "" {
		return nil, invalid("no subject")
	}
	switch err := claims.Claims.ValidateWithLeeway(jwt.Expected{Time: time.Now()}, Leeway); {
	case errors.Is(err, jwt.ErrExpired):
		return nil, invalid("token expired")
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return nil, invalid("token not valid yet")
	case err != nil:
		return nil, invalid("%v", err)
	}
	return &auth.TokenInfo{
		UserID:     claims.Subject,
		Expiration: claims.Expiry.Time(),
		Extra:      extra,
	}, nil
}

// remoteKeys is a Verifier's cache of the gateway's public keys by key ID.
type remoteKeys struct {
	url    string
	client *http.Client

	// fetchMu lets one fetch run at a time; callers that wait for it use
	// its result.
	fetchMu sync.Mutex

	// mu guards the fields below.
	mu sync.RWMutex
	// keys are the signing keys of the last good fetch.
	keys map[string]jose.JSONWebKey
	// fetched is when keys were fetched.
	fetched time.Time
	// tried is when the last fetch was tried, good or not.
	tried time.Time
	// fetchErr is why the last fetch failed; nil if it did not.
	fetchErr error
}

// key returns the public key named kid: from the cache while it is
// fresh, else from a new fetch (rate limited). A key that is cached but
// stale is still used when the fetch fails or is not yet allowed.
func (k *remoteKeys) key(ctx context.Context, kid string) (jose.JSONWebKey, error) {
	if key, ok, fresh := k.cached(kid); ok && fresh {
		return key, nil
	}
	k.fetchMu.Lock()
	defer k.fetchMu.Unlock()
	key, ok, fresh := k.cached(kid)
	if ok && fresh {
		return key, nil
	}
	k.mu.RLock()
	tried := k.tried
	k.mu.RUnlock()
	if tried.IsZero() || time.Since(tried) >= keysMinRefetch {
		keys, err := k.fetch(ctx)
		k.mu.Lock()
		if ctx.Err() == nil || err == nil {
			// A fetch cut short by this caller's context says
			// nothing about the gateway: it does not count.
			k.tried = time.Now()
			k.fetchErr = err
		}
		if err == nil {
			k.keys, k.fetched = keys, k.tried
		}
		k.mu.Unlock()
		if err != nil && !ok {
			return jose.JSONWebKey{}, err
		}
		key, ok, _ = k.cached(kid)
	}
	if ok {
		return key, nil
	}
	k.mu.RLock()
	fetchErr := k.fetchErr
	k.mu.RUnlock()
	if fetchErr != nil {
		return jose.JSONWebKey{}, fetchErr
	}
	return jose.JSONWebKey{}, invalid("unknown signing key %q", kid)
}

// cached returns the cached key named kid, whether there is one, and
// whether the cache is fresh.
func (k *remoteKeys) cached(kid string) (key jose.JSONWebKey, ok, fresh bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	key, ok = k.keys[kid]
	return key, ok, !k.fetched.IsZero() && time.Since(k.fetched) < keysMaxAge
}

// fetch gets the JWKS and returns its public signing keys by key ID.
// Members it cannot use (other key types, encryption keys, keys without
// an ID) are skipped, so the gateway can add kinds of key later without
// breaking verifiers.
func (k *remoteKeys) fetch(ctx context.Context) (map[string]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, fmt.Errorf("idtoken: JWKS URL %q: %w", k.url, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("idtoken: fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("idtoken: fetch JWKS %s: %s", k.url, resp.Status)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJWKSBytes)).Decode(&set); err != nil {
		return nil, fmt.Errorf("idtoken: JWKS from %s: %w", k.url, err)
	}
	keys := make(map[string]jose.JSONWebKey, len(set.Keys))
	for _, raw := range set.Keys {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(raw); err != nil || jwk.KeyID == "" || (jwk.Use != "" && jwk.Use != "sig") {
			continue
		}
		if pub := jwk.Public(); pub.Valid() {
			keys[jwk.KeyID] = pub
		}
	}
	return keys, nil
}
