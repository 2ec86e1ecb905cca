package netpoll

import (
	"sync"
	"sync/atomic"
	"time"
)

// Timer kinds a connection may have armed on the wheel.
const (
	tmState   uint8 = 1 << iota // handshake deadline, or the close wait
	tmCloseAt                   // scheduled close (token expiry)
	tmBeat                      // next heartbeat check
)

// wheel is the engine's one hashed timing wheel. It drives handshake
// deadlines, heartbeats, close waits and CloseAt without a timer per
// connection: each Conn sits in at most one slot (an intrusive doubly linked
// list through Conn.wnext/wprev) at the tick of its earliest armed deadline.
// Ticks are counted in uint32 from the engine's start and compared
// wrap-safely; deadlines are never more than 2^31 ticks ahead.
//
// All timer fields of Conn are guarded by mu. fire is called without mu held,
// on the wheel goroutine, for every connection whose slot came due; it must
// not block (the engine hands the connection to its poller).
type wheel struct {
	mu    sync.Mutex
	slots []*Conn
	mask  uint32
	now   atomic.Uint32
	tick  time.Duration
	start time.Time
	due   []*Conn // scratch for run, used only by the wheel goroutine
}

// newWheel returns a wheel of tick resolution with enough slots to cover
// horizon without wrapping (at most 4096).
func newWheel(tick, horizon time.Duration) *wheel {
	n := uint32(64)
	for time.Duration(n)*tick < horizon && n < 4096 {
		n *= 2
	}
	return &wheel{slots: make([]*Conn, n), mask: n - 1, tick: tick, start: time.Now()}
}

// tickBefore reports whether tick a is before tick b, wrap-safely.
func tickBefore(a, b uint32) bool { return int32(a-b) < 0 }

// ticks converts d to a number of ticks, rounding up.
func (w *wheel) ticks(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	return uint32((d + w.tick - 1) / w.tick)
}

// after returns the tick at which d from now falls due. It reads the clock
// rather than w.now, which lags it while the wheel goroutine waits for the
// CPU: a deadline must not fire early on a loaded machine.
func (w *wheel) after(d time.Duration) uint32 { return w.at(time.Now().Add(d)) }

// at returns the tick at which t falls due.
func (w *wheel) at(t time.Time) uint32 {
	d := t.Sub(w.start)
	if d < 0 {
		return 0
	}
	return uint32((d + w.tick - 1) / w.tick)
}

// set arms timer kind on c for tick at, replacing an earlier value.
func (w *wheel) set(c *Conn, kind uint8, at uint32) {
	w.mu.Lock()
	if c.wflags&wfDead != 0 {
		w.mu.Unlock()
		return
	}
	switch kind {
	case tmState:
		c.tState = at
	case tmCloseAt:
		c.tCloseAt = at
	case tmBeat:
		c.tBeat = at
	}
	c.tKinds |= kind
	w.reschedLocked(c)
	w.mu.Unlock()
}

// setCloseAt arms the scheduled close of c.
func (w *wheel) setCloseAt(c *Conn, at uint32, code CloseCode, reason string) {
	w.mu.Lock()
	if c.wflags&wfDead != 0 {
		w.mu.Unlock()
		return
	}
	c.tCloseAt = at
	c.closeAt = &closeAtArgs{code: code, reason: reason}
	c.tKinds |= tmCloseAt
	w.reschedLocked(c)
	w.mu.Unlock()
}

// clear disarms timer kind on c.
func (w *wheel) clear(c *Conn, kind uint8) {
	w.mu.Lock()
	c.tKinds &^= kind
	if kind&tmCloseAt != 0 {
		c.closeAt = nil
	}
	w.reschedLocked(c)
	w.mu.Unlock()
}

// remove disarms every timer of c for good: later sets are ignored, so that
// a racing CloseAt cannot keep a finalized connection on the wheel.
func (w *wheel) remove(c *Conn) {
	w.mu.Lock()
	c.tKinds, c.closeAt = 0, nil
	c.wflags |= wfDead
	w.unlinkLocked(c)
	w.mu.Unlock()
}

// take disarms and returns the kinds of c that are due now, with the
// scheduled close's code and reason.
func (w *wheel) take(c *Conn) (kinds uint8, code CloseCode, reason string) {
	now := w.now.Load()
	w.mu.Lock()
	if c.tKinds&tmState != 0 && !tickBefore(now, c.tState) {
		kinds |= tmState
	}
	if c.tKinds&tmCloseAt != 0 && !tickBefore(now, c.tCloseAt) {
		kinds |= tmCloseAt
		if a := c.closeAt; a != nil {
			code, reason = a.code, a.reason
		}
		c.closeAt = nil
	}
	if c.tKinds&tmBeat != 0 && !tickBefore(now, c.tBeat) {
		kinds |= tmBeat
	}
	c.tKinds &^= kinds
	w.reschedLocked(c)
	w.mu.Unlock()
	return kinds, code, reason
}

// reschedLocked moves c to the slot of its earliest armed deadline.
func (w *wheel) reschedLocked(c *Conn) {
	if c.tKinds == 0 {
		w.unlinkLocked(c)
		return
	}
	var at uint32
	first := true
	for _, k := range [...]struct {
		kind uint8
		at   uint32
	}{{tmState, c.tState}, {tmCloseAt, c.tCloseAt}, {tmBeat, c.tBeat}} {
		if c.tKinds&k.kind != 0 && (first || tickBefore(k.at, at)) {
			at, first = k.at, false
		}
	}
	if now := w.now.Load(); !tickBefore(now, at) {
		at = now + 1
	}
	if c.wflags&wfIn != 0 && c.wat == at {
		return
	}
	w.unlinkLocked(c)
	s := &w.slots[at&w.mask]
	c.wat = at
	c.wflags |= wfIn
	c.wprev, c.wnext = nil, *s
	if *s != nil {
		(*s).wprev = c
	}
	*s = c
}

// unlinkLocked takes c out of its slot, if any.
func (w *wheel) unlinkLocked(c *Conn) {
	if c.wflags&wfIn == 0 {
		return
	}
	if c.wprev != nil {
		c.wprev.wnext = c.wnext
	} else {
		w.slots[c.wat&w.mask] = c.wnext
	}
	if c.wnext != nil {
		c.wnext.wprev = c.wprev
	}
	c.wnext, c.wprev = nil, nil
	c.wflags &^= wfIn
}

// advance moves the wheel up to the tick for time now, calling fire for each
// connection that comes due. It runs on the wheel goroutine only.
func (w *wheel) advance(now time.Time, fire func(*Conn)) {
	target := uint32(now.Sub(w.start) / w.tick)
	for t := w.now.Load(); tickBefore(t, target); t = w.now.Load() {
		t++
		w.mu.Lock()
		w.now.Store(t)
		for c := w.slots[t&w.mask]; c != nil; {
			next := c.wnext
			if !tickBefore(t, c.wat) {
				w.unlinkLocked(c)
				w.due = append(w.due, c)
			}
			c = next
		}
		w.mu.Unlock()
		for i, c := range w.due {
			fire(c)
			w.due[i] = nil
		}
		w.due = w.due[:0]
	}
}
