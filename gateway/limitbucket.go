package gateway

import (
	"slices"
	"strings"
	"sync"
	"time"
)

// This file holds what a limit (policies.localRateLimit, limits.go) counts:
// a token bucket and the calls in flight of each key, kept in memory that
// stays bounded however many keys callers make up.

// limitSpec is a limit's numbers: a bucket of maxTokens (0: none) that
// gets perFill tokens back every interval, and a cap of concurrency
// requests of a key in flight (0: none).
type limitSpec struct {
	maxTokens, perFill int64
	interval           time.Duration
	concurrency        int64
}

// defaultMaxKeys bounds the keys one limit keeps (limitKeys.maxKeys).
const defaultMaxKeys = 10_000

// sweepEvery is how often a limit drops the keys that hold nothing (a
// full bucket, no call in flight), as a call passes: such a key is as if
// it had never been seen.
const sweepEvery = time.Minute

// limitKeys is one limit's state: a bucket and an in-flight count per key.
// A key whose bucket is full and that has nothing in flight is dropped (a
// new one would be the same), so memory follows the callers that are
// actually being limited; at maxKeys, the keys used longest ago give way,
// which gives those callers a full bucket again: memory stays bounded even
// under keys a client makes up (a header, a resource URI).
type limitKeys struct {
	spec    limitSpec
	maxKeys int

	mu   sync.Mutex
	keys map[string]*keyState
	// near are the keys that were near their bound when last used, for
	// LimitsStatus: listing them does not walk every key.
	near      map[string]*keyState
	lastSweep time.Time
	// evicted counts keys dropped at maxKeys before their bucket was full.
	evicted uint64
}

// keyState is one key's bucket and calls in flight.
type keyState struct {
	tokens int64
	// filled is when the bucket last got its tokens back (or was seen
	// full): the next fill is one interval later.
	filled   time.Time
	inflight int64
	used     time.Time
}

// newLimitKeys is the state of a limit with spec, empty.
func newLimitKeys(spec limitSpec) *limitKeys {
	return &limitKeys{spec: spec, maxKeys: defaultMaxKeys, keys: make(map[string]*keyState), near: make(map[string]*keyState)}
}

// refusal says why a key may not make a request now, and when to try
// again (0 for a concurrency cap: when one of its calls ends).
type refusal struct {
	concurrency bool
	retryAfter  time.Duration
}

// take counts one request of key at now: a token from its bucket, and a
// place in flight if hold (to be given back with release). A request the
// limit refuses takes nothing.
func (l *limitKeys) take(key string, now time.Time, hold bool) (*keyState, *refusal) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= sweepEvery {
		l.sweepLocked(now)
	}
	k := l.keys[key]
	if k == nil {
		if len(l.keys) >= l.maxKeys {
			l.makeRoomLocked(now)
		}
		k = &keyState{tokens: l.spec.maxTokens, filled: now}
		l.keys[key] = k
	}
	k.used = now
	l.refillLocked(k, now)
	if l.spec.maxTokens > 0 && k.tokens < 1 {
		l.near[key] = k
		return nil, &refusal{retryAfter: k.filled.Add(l.spec.interval).Sub(now)}
	}
	if hold && l.spec.concurrency > 0 && k.inflight >= l.spec.concurrency {
		l.near[key] = k
		return nil, &refusal{concurrency: true}
	}
	if l.spec.maxTokens > 0 {
		k.tokens--
	}
	if hold && l.spec.concurrency > 0 {
		k.inflight++
	}
	if l.nearLocked(k) {
		l.near[key] = k
	}
	return k, nil
}

// giveBack undoes take for a request another limit refused: its token
// comes back, and its place in flight if held.
func (l *limitKeys) giveBack(k *keyState, held bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.spec.maxTokens > 0 && k.tokens < l.spec.maxTokens {
		k.tokens++
	}
	if held && l.spec.concurrency > 0 && k.inflight > 0 {
		k.inflight--
	}
}

// release gives back the place in flight a request held.
func (l *limitKeys) release(k *keyState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if k.inflight > 0 {
		k.inflight--
	}
}

// refillLocked gives k the tokens of the intervals passed since its last
// fill, up to maxTokens.
func (l *limitKeys) refillLocked(k *keyState, now time.Time) {
	if l.spec.maxTokens == 0 {
		return
	}
	if k.tokens >= l.spec.maxTokens {
		k.filled = now
		return
	}
	if n := int64(now.Sub(k.filled) / l.spec.interval); n > 0 {
		k.tokens = min(l.spec.maxTokens, k.tokens+n*l.spec.perFill)
		k.filled = k.filled.Add(time.Duration(n) * l.spec.interval)
	}
}

// tokensAt is what k's bucket holds at now, without changing it.
func (l *limitKeys) tokensAt(k *keyState, now time.Time) int64 {
	if l.spec.maxTokens == 0 || k.tokens >= l.spec.maxTokens {
		return k.tokens
	}
	n := int64(now.Sub(k.filled) / l.spec.interval)
	return min(l.spec.maxTokens, k.tokens+n*l.spec.perFill)
}

// idleLocked reports whether k holds nothing at now: a full bucket and no
// call in flight. Dropping it changes nothing.
func (l *limitKeys) idleLocked(k *keyState, now time.Time) bool {
	return k.inflight == 0 && l.tokensAt(k, now) >= l.spec.maxTokens
}

// nearLocked reports whether k is near its bound: a fifth of its tokens
// or fewer left, or four fifths of its places in flight taken.
func (l *limitKeys) nearLocked(k *keyState) bool { return l.nearWith(k, k.tokens) }

// nearWith is nearLocked with tokens as k's bucket holds.
func (l *limitKeys) nearWith(k *keyState, tokens int64) bool {
	return l.spec.maxTokens > 0 && tokens*5 <= l.spec.maxTokens ||
		l.spec.concurrency > 0 && k.inflight*5 >= l.spec.concurrency*4
}

// sweepLocked drops the keys that hold nothing.
func (l *limitKeys) sweepLocked(now time.Time) {
	l.lastSweep = now
	for key, k := range l.keys {
		if l.idleLocked(k, now) {
			delete(l.keys, key)
			delete(l.near, key)
		}
	}
}

// makeRoomLocked makes room for a new key at maxKeys: the keys that hold
// nothing go, and if that is not an eighth of them, the ones used longest
// ago with nothing in flight (their callers start again with a full
// bucket). Keys with calls in flight stay: those are bounded by the
// gateway's budget.
func (l *limitKeys) makeRoomLocked(now time.Time) {
	l.sweepLocked(now)
	target := l.maxKeys - max(1, l.maxKeys/8)
	if len(l.keys) <= target {
		return
	}
	type aged struct {
		key  string
		used time.Time
	}
	var free []aged
	for key, k := range l.keys {
		if k.inflight == 0 {
			free = append(free, aged{key, k.used})
		}
	}
	slices.SortFunc(free, func(a, b aged) int { return a.used.Compare(b.used) })
	for _, a := range free[:min(len(free), len(l.keys)-target)] {
		delete(l.keys, a.key)
		delete(l.near, a.key)
		l.evicted++
	}
}

// keyStatus is one key's state as LimitsStatus shows it.
type keyStatus struct {
	key              string
	tokens, inflight int64
	// retryAfter is when the next token comes, if the bucket is empty.
	retryAfter time.Duration
}

// nearBound are the keys near their bound at now, by key; keys no longer
// near it leave the list.
func (l *limitKeys) nearBound(now time.Time) []keyStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []keyStatus
	for key, k := range l.near {
		tokens := l.tokensAt(k, now)
		st := keyStatus{key: key, tokens: tokens, inflight: k.inflight}
		if l.spec.maxTokens > 0 && tokens < 1 {
			st.retryAfter = k.filled.Add(l.spec.interval).Sub(now)
		}
		if !l.nearWith(k, tokens) {
			delete(l.near, key)
			continue
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b keyStatus) int { return strings.Compare(a.key, b.key) })
	return out
}

// size is how many keys the limit keeps.
func (l *limitKeys) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}
