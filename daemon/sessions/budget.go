package sessions

import (
	"cmp"
	"log/slog"
	"runtime/debug"
	"slices"
	"time"
)

// The memory store's byte budget (sessions.memory_budget_bytes, contract
// 1.1 section 4a): every byte it holds for sessions (replay logs,
// contexts, histories) is counted in MemoryStore.bytes; past the budget
// the sweeper trims replay logs down to 90 % of the budget, in the order
// trimToBudget gives (what peers received first, oldest detached first).
// A session trimmed of what it was owed resumes with recovered:false and
// the count it missed. What an attached session is owed is never
// trimmed: it is bounded by replay_max and replay_bytes.

// sizeOf returns the bytes of e's context and history.
func sizeOf(e *memEntry) int64 {
	x := e.data()
	n := int64(len(x.ctx))
	for _, t := range x.history {
		n += int64(len(t.Role)+len(t.Content)) + 32
	}
	return n
}

// resizeLocked recounts e's context and history bytes.
func (s *MemoryStore) resizeLocked(e *memEntry) {
	n := sizeOf(e)
	if n == e.data().size {
		return
	}
	x := e.dataW()
	s.bytes.Add(n - x.size)
	x.size = n
}

// removeLocked drops the session of record l from the store with its
// bytes; its shard's mu held. The record stays registered until nothing
// else holds it (registry.release, from the sweeper).
func (s *MemoryStore) removeLocked(l *Record) {
	e := l.mem
	l.mem = nil
	if x := e.x; x != nil {
		s.bytes.Add(-(x.logBytes + x.size))
		x.logBytes, x.size = 0, 0
		// e may be in l's object (memRecord), which lives on while the
		// manager holds l: the log, context and history go now, not
		// with it (no longer counted in bytes, they would be held
		// uncounted past the budget).
		e.x = nil
	}
}

// Bytes returns the bytes the store holds for sessions in process memory.
func (s *MemoryStore) Bytes() int64 { return s.bytes.Load() }

func (s *MemoryStore) kickTrim() {
	select {
	case s.trimq <- struct{}{}:
	default:
	}
}

// trimToBudget trims logs until the store holds at most 90 % of its
// budget, and returns the bytes it freed. It drops the oldest entries of
// a log (its positions stay contiguous), no more than needed, in three
// passes, each oldest detached first: (1) the terminals of detached
// sessions that their peer already received (at or below the delivered
// cursor: only a resume with a ?last= below the cursor, a page reload,
// would have asked for them), (2) the rest of the logs of detached
// sessions (what they are owed: their next resume says recovered:false
// with missed), (3) the received terminals of attached sessions. What an attached session is owed is
// never trimmed: it is bounded by replay_max and replay_bytes.
func (s *MemoryStore) trimToBudget() int64 {
	target := s.lim.budget / 10 * 9
	start := s.bytes.Load()
	if start <= s.lim.budget {
		return 0
	}
	type cand struct {
		id       string
		detached int64 // unix nanos; 0: attached (last)
	}
	var cs []cand
	for i := range s.reg.shards {
		sh := &s.reg.shards[i]
		sh.mu.Lock()
		for l := range sh.m.all() {
			if e := l.mem; e != nil && e.x != nil && e.x.logBytes > 0 {
				cs = append(cs, cand{l.id, e.detached})
			}
		}
		sh.mu.Unlock()
	}
	slices.SortFunc(cs, func(a, b cand) int {
		if (a.detached == 0) != (b.detached == 0) {
			if a.detached == 0 {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.detached, b.detached)
	})
	var received, owed, attached int
	for pass := range 3 {
		for _, c := range cs {
			if s.bytes.Load() <= target {
				break
			}
			if (pass < 2) != (c.detached != 0) {
				continue
			}
			sh := s.reg.shard(c.id)
			sh.mu.Lock()
			var e *memEntry
			if l := sh.m.get(c.id); l != nil {
				e = l.mem
			}
			if e != nil && e.x != nil && (e.detached != 0) == (pass < 2) {
				// The oldest entries, only as many as needed; passes 0
				// and 2 stop at the delivered cursor.
				n, over := 0, s.bytes.Load()-target
				log := &e.x.log
				for n < log.len() && over > 0 && (pass == 1 || log.at(n).Pos <= e.dlv) {
					over -= int64(len(log.at(n).Msg))
					n++
				}
				if n > 0 {
					s.dropLocked(e, n)
					switch pass {
					case 0:
						received++
					case 1:
						owed++
					default:
						attached++
					}
				}
			}
			sh.mu.Unlock()
		}
	}
	if owed+received+attached > 0 {
		s.log.Warn("session memory budget reached: replay logs trimmed",
			slog.Int("detached_received", received), slog.Int("detached_owed", owed),
			slog.Int("attached_received", attached),
			slog.Int64("bytes", s.bytes.Load()), slog.Int64("budget", s.lim.budget))
	}
	if s.bytes.Load() > s.lim.budget {
		s.log.Warn("session memory budget exceeded by what attached sessions are owed",
			slog.Int64("bytes", s.bytes.Load()), slog.Int64("budget", s.lim.budget))
	}
	return max(start-s.bytes.Load(), 0)
}

// DetachedInfo is one detached session kept for resume (the admin page).
type DetachedInfo struct {
	ID, User  string
	Since     time.Time
	Owed      int   // terminals after the delivered cursor still in the log
	OwedBytes int64 // and their bytes
}

// detached appends up to limit detached sessions, oldest detached first,
// and returns the number of detached sessions.
func (s *MemoryStore) detached(dst []DetachedInfo, limit int) ([]DetachedInfo, int) {
	start := len(dst)
	n := 0
	for i := range s.reg.shards {
		sh := &s.reg.shards[i]
		sh.mu.Lock()
		for l := range sh.m.all() {
			e := l.mem
			if e == nil || e.detached == 0 {
				continue
			}
			n++
			if dst == nil && limit == 0 {
				continue
			}
			d := DetachedInfo{ID: l.id, User: l.user, Since: time.Unix(0, e.detached)}
			x := e.data()
			for le := range x.log.all() {
				if le.Pos > e.dlv && len(le.Msg) > 0 {
					d.Owed++
					d.OwedBytes += int64(len(le.Msg))
				}
			}
			dst = append(dst, d)
		}
		sh.mu.Unlock()
	}
	part := dst[start:]
	slices.SortFunc(part, func(a, b DetachedInfo) int {
		return cmp.Or(a.Since.Compare(b.Since), cmp.Compare(a.ID, b.ID))
	})
	if limit >= 0 && len(part) > limit {
		dst = dst[:start+limit]
	}
	return dst, n
}

// osReturn gives memory the store freed back to the operating system.
// Go's runtime returns freed heap pages by itself only slowly: the heap
// goal shrinks at the next GC, which an idle daemon runs only every two
// minutes, and the background scavenger then releases the excess at a
// bounded pace. After a large release (the budget trimmed logs, sessions
// expired) the store's sweeper calls debug.FreeOSMemory (a full GC, then
// every free page returned), so the process's RSS comes back near where
// it was instead of staying at its peak. Only on the sweeper goroutine,
// never on a request or connection path; at most once per every, and only
// once at least min bytes were freed since the last return (a release
// that comes too soon waits for the sweeper's next tick).
type osReturn struct {
	min     int64
	every   time.Duration
	pending int64     // bytes freed since the last return
	last    time.Time // the last return
	free    func()    // debug.FreeOSMemory (a test seam)
}

// newOSReturn: a return is worth it from a sixteenth of the budget (at
// least 1 MiB) freed, at most once per 10 s.
func newOSReturn(budget int64) osReturn {
	return osReturn{min: max(budget/16, 1<<20), every: 10 * time.Second, free: debug.FreeOSMemory}
}

// freed records n bytes freed (0: only check a waiting return) and
// returns the memory to the OS if that is due. Sweeper goroutine only.
func (r *osReturn) freed(n int64, now time.Time) bool {
	r.pending += n
	if r.pending < r.min || now.Sub(r.last) < r.every {
		return false
	}
	r.pending, r.last = 0, now
	r.free()
	return true
}
