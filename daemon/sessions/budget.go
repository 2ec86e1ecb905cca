package sessions

import (
	"cmp"
	"log/slog"
	"slices"
	"time"
)

// The memory store's byte budget (sessions.memory_budget_bytes, contract
// 1.1 section 4a): every byte it holds for sessions (replay logs,
// contexts, histories) is counted in MemoryStore.bytes; past the budget
// the sweeper trims the logs of the detached sessions, oldest detached
// first, down to 90 % of the budget. A trimmed session's next resume says
// recovered:false with the count it missed. Attached sessions are never
// trimmed: their logs are bounded by replay_max and replay_bytes each.

// entryOverhead approximates what one session costs beyond its bytes.
const entryOverhead = 64

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

// removeLocked deletes the entry and its bytes; sh.mu held.
func (s *MemoryStore) removeLocked(sh *memShard, id string, e *memEntry) {
	sh.m.del(e)
	if x := e.x; x != nil {
		s.bytes.Add(-(x.logBytes + x.size))
		x.logBytes, x.size = 0, 0
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

// trimToBudget trims the logs of detached sessions, oldest detached first,
// until the store holds at most 90 % of its budget.
func (s *MemoryStore) trimToBudget() {
	target := s.lim.budget / 10 * 9
	if s.bytes.Load() <= s.lim.budget {
		return
	}
	type cand struct {
		id    string
		since time.Time
	}
	var cs []cand
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for e := range sh.m.all() {
			if e.detached != 0 && e.data().logBytes > 0 {
				cs = append(cs, cand{e.id, time.Unix(0, e.detached)})
			}
		}
		sh.mu.Unlock()
	}
	slices.SortFunc(cs, func(a, b cand) int { return a.since.Compare(b.since) })
	trimmed := 0
	for _, c := range cs {
		if s.bytes.Load() <= target {
			break
		}
		sh := s.shard(c.id)
		sh.mu.Lock()
		if e := sh.m.get(c.id); e != nil && e.detached != 0 {
			s.dropLocked(e, len(e.data().log))
			trimmed++
		}
		sh.mu.Unlock()
	}
	if trimmed > 0 {
		s.log.Warn("session memory budget reached: replay logs of detached sessions trimmed",
			slog.Int("sessions", trimmed), slog.Int64("bytes", s.bytes.Load()), slog.Int64("budget", s.lim.budget))
	}
	if s.bytes.Load() > s.lim.budget {
		s.log.Warn("session memory budget exceeded by attached sessions",
			slog.Int64("bytes", s.bytes.Load()), slog.Int64("budget", s.lim.budget))
	}
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
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for e := range sh.m.all() {
			if e.detached == 0 {
				continue
			}
			n++
			if dst == nil && limit == 0 {
				continue
			}
			d := DetachedInfo{ID: e.id, User: e.user, Since: time.Unix(0, e.detached)}
			for _, le := range e.data().log {
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
