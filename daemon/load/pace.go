package load

import (
	"context"
	"sync"
	"time"
)

// pacer spaces the starts of the connection phase's handshakes: at most one
// every interval, shared by all of a shard's dialers. It does not catch up:
// a start that comes late (the dialers were all busy) moves the next slot
// after it, so a stalled client or server is never answered with a burst.
// A nil *pacer does not pace.
type pacer struct {
	interval time.Duration

	mu   sync.Mutex
	next time.Time // the earliest start of the next handshake
}

// newPacer returns a pacer for perSecond starts per second, or nil (no
// pacing) when perSecond is 0 or less.
func newPacer(perSecond float64) *pacer {
	if perSecond <= 0 {
		return nil
	}
	return &pacer{interval: time.Duration(float64(time.Second) / perSecond)}
}

// reserve takes the next slot at or after now and returns when it starts.
func (p *pacer) reserve(now time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.next
	if t.Before(now) {
		t = now
	}
	p.next = t.Add(p.interval)
	return t
}

// wait blocks until the caller's slot starts; it returns ctx's error when
// ctx ends first.
func (p *pacer) wait(ctx context.Context) error {
	if p == nil {
		return ctx.Err()
	}
	d := time.Until(p.reserve(time.Now()))
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
