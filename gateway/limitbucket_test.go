package gateway

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// A bucket of 3 tokens, 1 back every 10s: three requests pass at once,
// the fourth is refused with the wait until the next fill; tokens come
// back one per interval, never past 3; other keys are not touched.
func TestLimitRefill(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimitKeys(limitSpec{maxTokens: 3, perFill: 1, interval: 10 * time.Second})
		take := func(key string) *refusal {
			t.Helper()
			_, ref := l.take(key, time.Now(), true)
			return ref
		}
		for i := range 3 {
			if ref := take("alice"); ref != nil {
				t.Fatalf("request %d refused: %+v", i+1, ref)
			}
		}
		time.Sleep(4 * time.Second)
		ref := take("alice")
		if ref == nil || ref.concurrency || ref.retryAfter != 6*time.Second {
			t.Fatalf("fourth request: %+v, want refused for 6s", ref)
		}
		if ref := take("bob"); ref != nil {
			t.Fatalf("bob refused by alice's bucket: %+v", ref)
		}
		time.Sleep(6 * time.Second) // the first fill: one token
		if ref := take("alice"); ref != nil {
			t.Fatalf("after a fill: %+v", ref)
		}
		if ref := take("alice"); ref == nil || ref.retryAfter != 10*time.Second {
			t.Fatalf("a fill gives one token: %+v", ref)
		}
		time.Sleep(time.Hour) // many fills: no more than maxTokens
		for i := range 3 {
			if ref := take("alice"); ref != nil {
				t.Fatalf("after an hour, request %d: %+v", i+1, ref)
			}
		}
		if ref := take("alice"); ref == nil {
			t.Fatal("a bucket holds no more than maxTokens")
		}
	})
}

// tokensPerFill tokens come back each interval, several intervals at once.
func TestLimitTokensPerFill(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimitKeys(limitSpec{maxTokens: 10, perFill: 4, interval: time.Minute})
		for range 10 {
			l.take("k", time.Now(), false)
		}
		time.Sleep(2*time.Minute + 30*time.Second)
		passed := 0
		for {
			if _, ref := l.take("k", time.Now(), false); ref != nil {
				if ref.retryAfter != 30*time.Second {
					t.Errorf("retry after %v, want 30s (the third fill)", ref.retryAfter)
				}
				break
			}
			passed++
		}
		if passed != 8 {
			t.Errorf("two fills of 4 let %d requests through, want 8", passed)
		}
	})
}

// A concurrency cap counts requests in flight per key: past it a request
// is refused until one ends; a listen (place false) takes no place; a
// request another limit refused gives its token and place back.
func TestLimitConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimitKeys(limitSpec{concurrency: 2})
		a, _ := l.take("alice", time.Now(), true)
		b, _ := l.take("alice", time.Now(), true)
		if _, ref := l.take("alice", time.Now(), true); ref == nil || !ref.concurrency {
			t.Fatalf("third in flight: %+v, want a concurrency refusal", ref)
		}
		if _, ref := l.take("alice", time.Now(), false); ref != nil {
			t.Fatalf("a listen is refused by the cap: %+v", ref)
		}
		if _, ref := l.take("bob", time.Now(), true); ref != nil {
			t.Fatalf("bob refused: %+v", ref)
		}
		l.release(a)
		c, ref := l.take("alice", time.Now(), true)
		if ref != nil {
			t.Fatalf("after one ended: %+v", ref)
		}
		l.giveBack(c, true)
		if _, ref := l.take("alice", time.Now(), true); ref != nil {
			t.Fatalf("a place given back is free: %+v", ref)
		}
		l.release(b)

		both := newLimitKeys(limitSpec{maxTokens: 2, perFill: 1, interval: time.Minute, concurrency: 1})
		k, _ := both.take("x", time.Now(), true)
		both.giveBack(k, true)
		for i := range 2 {
			k, ref := both.take("x", time.Now(), true)
			if ref != nil {
				t.Fatalf("after a give-back, request %d: %+v", i+1, ref)
			}
			both.release(k)
		}
	})
}

// Memory stays bounded: a key that holds nothing (a full bucket, nothing
// in flight) is dropped as time passes; at maxKeys the keys used longest
// ago give way, never one with a call in flight.
func TestLimitKeysBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimitKeys(limitSpec{maxTokens: 2, perFill: 1, interval: time.Second, concurrency: 5})
		l.maxKeys = 100
		busy, _ := l.take("busy", time.Now(), true)
		for i := range 1000 {
			if _, ref := l.take(fmt.Sprint("caller-", i), time.Now(), false); ref != nil {
				t.Fatalf("a new key refused: %+v", ref)
			}
			time.Sleep(time.Millisecond)
		}
		if n := l.size(); n > 100 {
			t.Errorf("%d keys kept, want at most 100", n)
		}
		if l.evicted == 0 {
			t.Error("no key gave way at maxKeys")
		}
		l.mu.Lock()
		_, kept := l.keys["busy"]
		l.mu.Unlock()
		if !kept {
			t.Error("a key with a call in flight was dropped")
		}
		l.release(busy)
		time.Sleep(2 * sweepEvery)
		l.take("late", time.Now(), false)
		if n := l.size(); n != 1 {
			t.Errorf("after the buckets filled, %d keys kept, want 1 (the last one)", n)
		}
	})
}

// nearBound lists the keys near their bound, and only those, with what
// they have left; a key whose bucket filled again leaves the list.
func TestLimitNearBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimitKeys(limitSpec{maxTokens: 5, perFill: 5, interval: time.Minute, concurrency: 5})
		for range 5 {
			l.take("alice", time.Now(), false)
		}
		l.take("bob", time.Now(), false)
		var held []*keyState
		for range 4 {
			k, _ := l.take("carol", time.Now(), true)
			held = append(held, k)
		}
		time.Sleep(10 * time.Second)
		got := l.nearBound(time.Now())
		if len(got) != 2 || got[0].key != "alice" || got[0].tokens != 0 || got[0].retryAfter != 50*time.Second ||
			got[1].key != "carol" || got[1].inflight != 4 {
			t.Fatalf("near bound: %+v, want alice (no tokens, 50s) and carol (4 in flight)", got)
		}
		for _, k := range held {
			l.release(k)
		}
		time.Sleep(time.Minute)
		if got := l.nearBound(time.Now()); len(got) != 0 {
			t.Errorf("after a fill and the calls' end: %+v", got)
		}
	})
}
