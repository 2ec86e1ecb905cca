package auth

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	b := NewBucket(10, 3) // one token per 100 ms, burst 3
	for i := range 3 {
		if !b.Allow(t0) {
			t.Fatalf("burst token %d refused", i)
		}
	}
	if b.Allow(t0) {
		t.Fatal("fourth token at once allowed")
	}
	if b.Full(t0) {
		t.Fatal("Full after spending the burst")
	}
	if b.Allow(t0.Add(99 * time.Millisecond)) {
		t.Fatal("token before the refill interval")
	}
	if !b.Allow(t0.Add(100 * time.Millisecond)) {
		t.Fatal("token after the refill interval refused")
	}
	t1 := t0.Add(time.Hour)
	if !b.Full(t1) {
		t.Fatal("not Full after an hour idle")
	}
	n := 0
	for b.Allow(t1) {
		n++
	}
	if n != 3 {
		t.Fatalf("after idling: got %d tokens at once, want the burst 3", n)
	}
	// A clock that jumps back an hour does not block the bucket for an hour.
	if !b.Allow(t0) {
		t.Fatal("backward clock jump blocked the bucket")
	}
}

func TestBucketUnlimitedAndInit(t *testing.T) {
	var b Bucket // zero value: unlimited
	for range 1000 {
		if !b.Allow(time.Unix(0, 0)) {
			t.Fatal("zero Bucket refused")
		}
	}
	b.Init(1, 0) // burst < 1 counts as 1
	now := time.Now()
	if !b.Allow(now) || b.Allow(now) {
		t.Fatal("Init(1, 0): want exactly one token")
	}
	b.Init(0, 5)
	if !b.Allow(now) || !b.Allow(now) {
		t.Fatal("Init(0, 5): want unlimited")
	}
}

// TestBucketConcurrent: however many goroutines race at one instant, exactly
// burst tokens are handed out.
func TestBucketConcurrent(t *testing.T) {
	b := NewBucket(1, 50)
	now := time.Now()
	var got atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if b.Allow(now) {
					got.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got.Load() != 50 {
		t.Fatalf("got %d tokens, want 50", got.Load())
	}
}

func TestBucketAllowNoAlloc(t *testing.T) {
	b := NewBucket(1e9, 1<<20)
	now := time.Now()
	if n := testing.AllocsPerRun(1000, func() { b.Allow(now) }); n != 0 {
		t.Fatalf("Allow allocates %v times, want 0", n)
	}
}

func TestSlots(t *testing.T) {
	s := NewSlots(2)
	if !s.TryAcquire() || !s.TryAcquire() {
		t.Fatal("under the limit: refused")
	}
	if s.TryAcquire() {
		t.Fatal("over the limit: allowed")
	}
	if s.InUse() != 2 {
		t.Fatalf("got InUse %d, want 2", s.InUse())
	}
	s.SetLimit(1)
	s.Release()
	if s.TryAcquire() {
		t.Fatal("lowered limit: allowed while at it")
	}
	s.Release()
	if !s.TryAcquire() {
		t.Fatal("lowered limit: refused under it")
	}
	s.SetLimit(0)
	for range 100 {
		if !s.TryAcquire() {
			t.Fatal("unlimited: refused")
		}
	}
	var z Slots
	if !z.TryAcquire() {
		t.Fatal("zero Slots refused")
	}
}
