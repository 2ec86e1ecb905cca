package sessions

import "iter"

// logRing is a memory store session's replay log, oldest first, in a ring
// of entries: a full log overwrites its oldest slot with the new entry,
// so an append touches one slot of the array (the one it drops and
// refills), where a resliced slice touched the dropped front and the
// appended end and walked through memory until it reallocated. With a
// thousand busy sessions the logs' arrays are megabytes, read back only
// by a resume: those slots are cold on every append (docs/benchmarks.md,
// "The replay log as a ring").
//
// Not safe for concurrent use: the session's shard mu guards it.
type logRing struct {
	buf  []LogEntry // the slots; len is the ring's size; nil while empty
	head uint32     // the oldest entry's slot
	n    uint32     // entries held
}

// len returns the number of entries.
func (r *logRing) len() int { return int(r.n) }

// slot returns the index in buf of the i-th oldest entry (i < len(buf)).
func (r *logRing) slot(i int) int {
	j := int(r.head) + i
	if j >= len(r.buf) {
		j -= len(r.buf)
	}
	return j
}

// at returns the i-th oldest entry, i < r.len().
func (r *logRing) at(i int) *LogEntry { return &r.buf[r.slot(i)] }

// oldest returns the oldest entry; the ring must not be empty.
func (r *logRing) oldest() *LogEntry { return &r.buf[r.head] }

// all yields the entries, oldest first; the ring must not change meanwhile.
func (r *logRing) all() iter.Seq[LogEntry] {
	return func(yield func(LogEntry) bool) {
		for i := range r.len() {
			if !yield(*r.at(i)) {
				return
			}
		}
	}
}

// push appends le as the newest entry. A full ring grows to twice its
// size, at most to bound slots (the caller's replay_max, which it drops
// down to before pushing) unless it holds that many already.
func (r *logRing) push(le LogEntry, bound int) {
	if int(r.n) == len(r.buf) {
		size := max(2*len(r.buf), 4)
		if size > bound {
			size = max(bound, int(r.n)+1)
		}
		buf := make([]LogEntry, size)
		for i := range r.len() {
			buf[i] = *r.at(i)
		}
		r.buf, r.head = buf, 0
	}
	r.buf[r.slot(r.len())] = le
	r.n++
}

// drop removes the n oldest entries (n <= len) and returns their bytes.
// An emptied ring keeps its array (an append that drops the only entry
// refills it); dropLocked gives it back.
func (r *logRing) drop(n int) (freed int64) {
	for range n {
		e := r.oldest()
		freed += int64(len(e.Msg))
		*e = LogEntry{}
		r.head++
		if int(r.head) == len(r.buf) {
			r.head = 0
		}
		r.n--
	}
	return freed
}
