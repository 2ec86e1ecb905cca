package auth

import (
	"math"
	"sync/atomic"
	"time"
)

// Bucket is a token bucket of rate tokens per second holding at most burst
// tokens, cheap enough to keep one per session or per source address: 24
// bytes, no goroutine, no timer. It is refilled lazily when Allow is called
// (the generic cell rate algorithm: one atomic theoretical arrival time).
//
// Allow is safe for concurrent use. A new Bucket is full. Init must not run
// concurrently with Allow.
type Bucket struct {
	interval int64 // ns per token; 0: unlimited
	tau      int64 // interval*burst: how far ahead of now tat may run
	tat      atomic.Int64
}

// NewBucket returns a full Bucket of rate tokens per second and the given
// burst. rate <= 0 means unlimited; burst < 1 counts as 1.
func NewBucket(rate float64, burst int) *Bucket {
	b := new(Bucket)
	b.Init(rate, burst)
	return b
}

// Init (re)configures b, for a Bucket embedded in another struct, and fills
// it. It must not run concurrently with Allow.
func (b *Bucket) Init(rate float64, burst int) {
	b.tat.Store(0)
	if rate <= 0 || math.IsNaN(rate) || math.IsInf(rate, 0) {
		b.interval, b.tau = 0, 0
		return
	}
	if burst < 1 {
		burst = 1
	}
	iv := float64(time.Second) / rate
	if iv < 1 {
		iv = 1
	}
	b.interval = int64(iv)
	b.tau = b.interval * int64(burst)
}

// Allow takes one token at time now and reports whether there was one. A
// clock that jumps backwards resets the bucket to full rather than blocking.
func (b *Bucket) Allow(now time.Time) bool { return b.AllowAt(&b.tat, now) }

// AllowAt is Allow with b as the rate and the state kept elsewhere: tat,
// one word per limited thing (a session's record keeps it), so that a
// reload changes the rate of every session without touching them.
func (b *Bucket) AllowAt(tat *atomic.Int64, now time.Time) bool {
	if b.interval == 0 {
		return true
	}
	n := now.UnixNano()
	for {
		old := tat.Load()
		t := old
		if t < n || t-n > b.tau {
			t = n
		}
		next := t + b.interval
		if next-n > b.tau {
			return false
		}
		if tat.CompareAndSwap(old, next) {
			return true
		}
	}
}

// Full reports whether the bucket holds its whole burst at time now, that is,
// whether forgetting it would change nothing.
func (b *Bucket) Full(now time.Time) bool {
	return b.tat.Load() <= now.UnixNano()
}

// Slots is a counting semaphore without waiting: a cap on things in flight
// (connections, requests). Safe for concurrent use; the zero value is
// unlimited.
type Slots struct {
	limit atomic.Int64 // <= 0: unlimited
	used  atomic.Int64
}

// NewSlots returns Slots with the given limit; limit <= 0 means unlimited.
func NewSlots(limit int) *Slots {
	s := new(Slots)
	s.limit.Store(int64(limit))
	return s
}

// TryAcquire takes a slot if one is free. Two callers racing for the last
// slot may both be refused; neither is ever let in over the limit.
func (s *Slots) TryAcquire() bool {
	n := s.used.Add(1)
	if l := s.limit.Load(); l > 0 && n > l {
		s.used.Add(-1)
		return false
	}
	return true
}

// Release gives back a slot taken by a successful TryAcquire.
func (s *Slots) Release() { s.used.Add(-1) }

// InUse returns the number of slots taken.
func (s *Slots) InUse() int { return int(s.used.Load()) }

// SetLimit changes the limit; slots already taken are kept even when over
// the new limit, and new ones are refused until enough are released.
func (s *Slots) SetLimit(limit int) { s.limit.Store(int64(limit)) }
