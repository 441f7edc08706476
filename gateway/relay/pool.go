package relay

import (
	"context"
	"strconv"
	"sync"
	"time"
)

// pool keeps a target's children started and initialized ahead of
// demand, so that a session's initialize does not wait for a spawn. A
// child taken from the pool is replaced in the background.
type pool struct {
	b     *Backend
	t     *Target
	ready chan *child
	// slots holds a token per child started and not yet taken, so that
	// the pool never holds more than t.Pool children.
	slots chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func startPool(b *Backend, t *Target) *pool {
	ctx, cancel := context.WithCancel(context.Background())
	p := &pool{b: b, t: t, ready: make(chan *child, t.Pool), slots: make(chan struct{}, t.Pool), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go p.fill()
	return p
}

// fill starts children until the pool is full, and again whenever one is
// taken. Failures back off up to 30s, so a broken command does not spin.
func (p *pool) fill() {
	defer close(p.done)
	backoff := time.Second
	for n := 0; ; n++ {
		select {
		case p.slots <- struct{}{}:
		case <-p.ctx.Done():
			return
		}
		c, err := p.b.startChild(p.ctx, p.t, nil, nil, "pool-"+p.t.Name+"-"+strconv.Itoa(n), false)
		if err != nil {
			if p.ctx.Err() != nil {
				return
			}
			p.b.log.Warn("pool: child failed to start", "target", p.t.Name, "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-p.ctx.Done():
				return
			}
			backoff = min(2*backoff, 30*time.Second)
			<-p.slots
			continue
		}
		backoff = time.Second
		p.ready <- c // never blocks: a slot is held for it
	}
}

// take returns a ready child, or nil if none is ready.
func (p *pool) take() *child {
	for {
		select {
		case c, ok := <-p.ready:
			if !ok {
				return nil // closed
			}
			<-p.slots // fill starts another
			if c.alive() {
				return c
			}
			c.stop(p.b.opts.StopGrace)
		default:
			return nil
		}
	}
}

// close stops filling and stops the waiting children.
func (p *pool) close() {
	p.once.Do(func() {
		p.cancel()
		<-p.done
		close(p.ready)
		var wg sync.WaitGroup
		for c := range p.ready {
			wg.Go(func() { c.stop(p.b.opts.StopGrace) })
		}
		wg.Wait()
	})
}
