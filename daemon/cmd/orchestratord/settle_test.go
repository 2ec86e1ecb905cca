package main

import (
	"runtime"
	"testing"
	"time"
)

// TestHeapSettlerDue: a settling collection is due only when the last tick
// was quiet (no collection, little allocated), what a collection and the
// scavenger could give back is worth it (at least minFree and an eighth of
// the heap in use), the live heap grew by an eighth or the heap kept by
// half since the last settling one, and that one is at least every ago.
func TestHeapSettlerDue(t *testing.T) {
	const mb = 1 << 20
	now := time.Unix(1000, 0)
	// After a burst: 10 MB live, 4 MB of garbage not yet collected, 1 MB
	// free; 1 MB of unused span space.
	prev := heapStat{cycles: 50, allocs: 500 * mb, objects: 14 * mb, live: 10 * mb, unused: 1 * mb, free: 1 * mb}
	quiet := prev
	quiet.allocs += 100 << 10
	with := func(f func(*heapStat)) heapStat { h := quiet; f(&h); return h }
	for _, tc := range []struct {
		name string
		cur  heapStat
		last time.Time
		base uint64 // kept right after the last one
		live uint64 // live right after the last one
		runs int
		want bool
	}{
		{"after a burst, quiet", quiet, time.Time{}, 0, 0, 0, true},
		{"free pages alone", with(func(h *heapStat) { h.objects = 10 * mb; h.free = 3 * mb }), time.Time{}, 0, 0, 0, true},
		{"a collection ran in the tick", with(func(h *heapStat) { h.cycles++ }), time.Time{}, 0, 0, 0, false},
		{"still allocating", with(func(h *heapStat) { h.allocs += mb }), time.Time{}, 0, 0, 0, false},
		{"little to give back", with(func(h *heapStat) { h.objects = 10*mb + 512<<10; h.free = 1 * mb }), time.Time{}, 0, 0, 0, false},
		{"under an eighth of the heap", with(func(h *heapStat) { h.objects, h.live, h.free = 60*mb, 57*mb, 3*mb }), time.Time{}, 0, 0, 0, false},
		{"the last one too recent", quiet, now.Add(-9 * time.Second), 16 * mb, 8 * mb, 1, false},
		{"the last one long enough ago", quiet, now.Add(-10 * time.Second), 16 * mb, 8 * mb, 1, true},
		{"the heap did not grow since", quiet, now.Add(-time.Minute), 15 * mb, 10 * mb, 1, false},
		{"the live heap grew by an eighth", quiet, now.Add(-time.Minute), 16 * mb, 8*mb + 800<<10, 1, true},
		{"the heap kept grew by half", quiet, now.Add(-time.Minute), 10 * mb, 10 * mb, 1, true},
	} {
		s := &heapSettler{every: 10 * time.Second, minFree: 2 * mb, last: tc.last, base: tc.base, live: tc.live, runs: tc.runs}
		if got := s.due(prev, tc.cur, now); got != tc.want {
			t.Errorf("%s: due = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestHeapSettlerTick: the first tick only takes figures; a due tick
// collects once and takes the figures after the collection as the next
// tick's previous ones (its own collection is not activity) and its
// live heap and heap kept as the base; the heap is collected again only
// once it grew past the base and every passed.
func TestHeapSettlerTick(t *testing.T) {
	const mb = 1 << 20
	burst := heapStat{cycles: 10, allocs: 100 * mb, objects: 14 * mb, live: 10 * mb, unused: mb, free: mb}
	settled := heapStat{cycles: 11, allocs: 100 * mb, objects: 10 * mb, live: 10 * mb, unused: mb, free: 5 * mb} // kept 16 MB
	scraped := heapStat{cycles: 12, allocs: 104 * mb, objects: 10 * mb, live: 10 * mb, unused: mb, free: 3 * mb} // the scavenger left 3 MB
	burst2 := heapStat{cycles: 20, allocs: 140 * mb, objects: 16 * mb, live: 12 * mb, unused: mb, free: 2 * mb}  // kept 19 MB
	stats := []heapStat{
		burst,   // first tick: figures only
		burst,   // quiet, worth: collect
		settled, // read after the collection
		scraped, // a collection ran (a scrape): not quiet
		scraped, // quiet, worth, but the heap did not grow: no collection
		burst2,  // a new burst: not quiet
		burst2,  // quiet, grew by more than an eighth, 30 s later: collect
		settled, // read after it
	}
	i, gcs := 0, 0
	s := &heapSettler{every: 10 * time.Second, minFree: 2 * mb, gc: func() { gcs++ },
		read: func() heapStat { i++; return stats[i-1] }}
	t0 := time.Unix(1000, 0)
	for _, step := range []struct {
		at   time.Duration
		want bool
	}{{0, false}, {250 * time.Millisecond, true}, {time.Second, false}, {20 * time.Second, false}, {30 * time.Second, false}, {31 * time.Second, true}} {
		if got := s.tick(t0.Add(step.at)); got != step.want {
			t.Fatalf("tick at %v: collected %v, want %v", step.at, got, step.want)
		}
	}
	if gcs != 2 || i != len(stats) {
		t.Fatalf("%d collections, %d reads; want 2 and %d", gcs, i, len(stats))
	}
}

// TestHeapSettlerReads: the runtime/metrics names exist with the kind the
// settler reads (a renamed metric would read as zero and never settle).
func TestHeapSettlerReads(t *testing.T) {
	runtime.GC()
	s := newHeapSettler()
	st := s.read()
	if st.cycles == 0 || st.allocs == 0 || st.objects == 0 || st.live == 0 {
		t.Fatalf("read %+v: want collections, allocated bytes, objects and a live heap", st)
	}
	for _, smp := range s.samples {
		if smp.Value.Kind() == 0 {
			t.Errorf("%s: not a metric of this runtime", smp.Name)
		}
	}
}
