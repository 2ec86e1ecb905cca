package main

import (
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// heapSettler returns a burst's heap to the OS once the burst has gone
// quiet: one collection, then every free page returned
// (debug.FreeOSMemory; docs/deploy.md, "Go's garbage collector and idle
// memory").
//
// Why: the runtime's background scavenger returns free heap pages down to a
// goal it computes at the end of each collection, about 1.1× the heap in
// use at that moment. The last collection of a connect burst ends while
// the burst still allocates, so its goal is the burst's peak; and what the
// burst allocated after it (up to half the live heap at gc_percent 50) is
// garbage no collection has freed yet. An idle daemon keeps all of it
// resident until its next collection, which Go runs only every two
// minutes when nothing allocates. Measured at 19,000 connections: the
// scavenger returned nothing in the two seconds after the burst (RSS flat
// at the peak); after one collection it returned 4.4 MB within 1.5 s on a
// quiet machine, and over ten seconds or only in part on a loaded one
// (its pace is a share of the CPU time). The settler does both at once as
// soon as the heap is quiet (docs/benchmarks.md, "The heap a connect
// burst leaves"), like the memory store's sweeper after a large release
// (sessions.osReturn).
//
// Due when all of these hold:
//   - quiet: no collection and less than a 32nd of the heap in use
//     allocated during the last tick;
//   - worth it: the garbage not yet collected and the free pages not yet
//     returned are at least an eighth of the heap in use and at least
//     minFree;
//   - the heap grew since the last settling collection: the live heap
//     by an eighth (more sessions: a connect burst, perhaps resumed after
//     a lull), or what the heap keeps (in use and free, not returned) by
//     half (a burst of anything else). Without this, the garbage of every
//     metrics scrape of an idle daemon would bring a collection;
//   - the last settling collection is at least every ago.
//
// It never runs on a request or connection path: its own goroutine, owned
// by the node.
type heapSettler struct {
	every   time.Duration   // least time between two settling collections
	minFree uint64          // less than this to free is not worth a collection
	gc      func()          // debug.FreeOSMemory (a test seam)
	read    func() heapStat // the runtime's figures (a test seam)

	samples []metrics.Sample // read without allocating
	prev    heapStat
	last    time.Time // the last settling collection
	base    uint64    // the heap kept (in use and free) right after it
	live    uint64    // the live heap right after it
	runs    int       // settling collections so far
}

// heapStat is what the settler reads from runtime/metrics on each tick.
type heapStat struct {
	cycles  uint64 // collections completed
	allocs  uint64 // bytes allocated since the start
	objects uint64 // bytes of heap objects, live or not yet collected
	live    uint64 // bytes the last collection found live
	unused  uint64 // the unused parts of the spans in use
	free    uint64 // free heap pages not yet returned to the OS
}

// inUse is the heap in use: objects and the unused parts of their spans.
func (h heapStat) inUse() uint64 { return h.objects + h.unused }

// kept is the heap the process keeps: in use, and free but not returned.
func (h heapStat) kept() uint64 { return h.inUse() + h.free }

// spare is what a collection and the scavenger could give back: garbage
// not yet collected and free pages not yet returned.
func (h heapStat) spare() uint64 { return h.objects - min(h.live, h.objects) + h.free }

const (
	settleTick    = 500 * time.Millisecond
	settleEvery   = time.Second
	settleMinFree = 2 << 20
)

func newHeapSettler() *heapSettler {
	names := []string{
		"/gc/cycles/total:gc-cycles",
		"/gc/heap/allocs:bytes",
		"/memory/classes/heap/objects:bytes",
		"/gc/heap/live:bytes",
		"/memory/classes/heap/unused:bytes",
		"/memory/classes/heap/free:bytes",
	}
	s := &heapSettler{every: settleEvery, minFree: settleMinFree, gc: debug.FreeOSMemory, samples: make([]metrics.Sample, len(names))}
	for i, n := range names {
		s.samples[i].Name = n
	}
	s.read = s.readRuntime
	return s
}

// readRuntime samples the runtime's heap figures.
func (s *heapSettler) readRuntime() heapStat {
	metrics.Read(s.samples)
	u := func(i int) uint64 {
		if s.samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s.samples[i].Value.Uint64()
	}
	return heapStat{cycles: u(0), allocs: u(1), objects: u(2), live: u(3), unused: u(4), free: u(5)}
}

// due reports whether a settling collection is due at now, given the
// previous tick's figures and the current ones.
func (s *heapSettler) due(prev, cur heapStat, now time.Time) bool {
	quiet := cur.cycles == prev.cycles && cur.allocs-prev.allocs < cur.inUse()/32
	worth := cur.spare() >= s.minFree && cur.spare() >= cur.inUse()/8
	grew := s.runs == 0 || cur.live >= s.live+s.live/8 || cur.kept() >= s.base+s.base/2
	return quiet && worth && grew && (s.runs == 0 || now.Sub(s.last) >= s.every)
}

// tick reads the heap and collects if due; it reports whether it did.
func (s *heapSettler) tick(now time.Time) bool {
	cur := s.read()
	prev := s.prev
	s.prev = cur
	if prev == (heapStat{}) || !s.due(prev, cur, now) {
		return false
	}
	s.gc()
	s.prev = s.read() // the collection itself is not activity
	s.last, s.base, s.live, s.runs = now, s.prev.kept(), s.prev.live, s.runs+1
	return true
}

// run ticks until stop is closed.
func (s *heapSettler) run(stop <-chan struct{}) {
	t := time.NewTicker(settleTick)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			s.tick(now)
		}
	}
}
