package sessions

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Terminals the store could not take (Redis down) wait here, in order,
// and are logged, numbered and delivered when it is back. A session with
// terminals waiting queues its next ones behind them, so positions keep
// the order in which the terminals were produced. The wait is bounded by
// bytes (a quarter of the memory budget) and count; past either bound the
// oldest waiting terminal is replaced by a gap, which takes its position
// when the store is back and makes the next resume over it say
// recovered:false with missed: a loss is always told, never silent. Past
// the count the oldest entry leaves the queue but not its position: it is
// counted in pendGaps and taken as a gap before the session's next
// waiting terminal (or on its own once the queue is empty).

//
// An attempt that times out may still have run in Redis, its answer lost:
// a retry must not log the terminal a second time (at the next position:
// exactly one terminal per request). Each terminal, and each batch of
// dropped positions, gets a once id (newOnce) used by every attempt of
// it; the append script recognises an attempt whose id it has already
// appended and returns that position instead (RedisStore.appendOnce).

// maxPending bounds the terminals (and gaps) waiting for the store.
const maxPending = 100000

type pendingTerm struct {
	id, req string
	msg     []byte // nil: a gap (the terminal was dropped for memory)
	at      int
	gaps    int
	once    onceKey // the terminal's attempts (a gap's too, when it was one)
}

// onceIDs makes the once ids of this process's appends: field names this
// node's field in a session's hash ("o:<node>"), inc is random per
// process, so that a restarted process never takes the field's id for
// one of its own.
type onceIDs struct {
	field, inc string
	seq        atomic.Uint64
	// gapTry: per session, the gap append of retryGaps under way (its id
	// and count, the same for each attempt); guarded by Manager.pendMu.
	gapTry map[string]gapTry
}

type gapTry struct {
	once onceKey
	n    int
}

func newOnceIDs(node string) onceIDs {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return onceIDs{field: "o:" + node, inc: hex.EncodeToString(b[:]) + ".", gapTry: make(map[string]gapTry)}
}

// onceAppender is a store whose appends are done once per once id
// however often they are attempted (RedisStore; luaAppend2).
type onceAppender interface {
	appendOnce(ctx context.Context, id string, msg []byte, at int, k onceKey) (Appended, error)
	appendGapOnce(ctx context.Context, id string, n int, k onceKey) error
}

var _ onceAppender = (*RedisStore)(nil)

// newOnce returns the once id of a new terminal or gap of this node.
func (m *Manager) newOnce() onceKey {
	if m.onceStore == nil {
		return onceKey{} // the memory store: an attempt is never in doubt
	}
	var d [13]byte
	var id strings.Builder // one allocation per terminal
	id.Grow(len(m.once.inc) + len(d))
	id.WriteString(m.once.inc)
	id.Write(strconv.AppendUint(d[:0], m.once.seq.Add(1), 36))
	return onceKey{field: m.once.field, id: id.String()}
}

// deferring reports whether session id has terminals waiting.
func (m *Manager) deferring(id string) bool {
	if m.retryKick == nil {
		return false // the memory store: nothing ever waits (deferTerminal)
	}
	m.pendMu.Lock()
	defer m.pendMu.Unlock()
	return m.pendBy[id] > 0 || m.pendGaps[id] > 0
}

// deferTerminal queues a terminal for the store; it returns ErrDeferred.
// once is that of the attempt that failed, if any (the retries use it).
func (m *Manager) deferTerminal(id, req string, msg []byte, at int, once onceKey) error {
	if m.retryKick == nil { // the memory store cannot be unavailable
		m.log.Error("terminal lost: session store failed", "session", id, "request", req)
		return ErrClosed
	}
	c := append([]byte(nil), msg...)
	m.pendMu.Lock()
	m.pending = append(m.pending, pendingTerm{id: id, req: req, msg: c, at: at, once: once})
	m.pendBy[id]++
	m.pendBytes.Add(int64(len(c)))
	budget := m.lim.budget / 4
	// Past the bytes, the oldest become gaps (converting one does not
	// lower the count: the count is handled below, by the head alone).
	for i := m.pendHead; i < len(m.pending) && m.pendBytes.Load() > budget; i++ {
		p := &m.pending[i]
		if p.msg == nil {
			continue
		}
		m.pendBytes.Add(-int64(len(p.msg)))
		p.msg, p.gaps = nil, 1
		m.log.Error("terminal dropped while the session store is unavailable: its resume will report it missed",
			"session", p.id, "request", p.req)
	}
	if len(m.pending)-m.pendHead > maxPending {
		p := m.pending[m.pendHead]
		m.pending[m.pendHead] = pendingTerm{}
		m.pendHead++
		m.pendBytes.Add(-int64(len(p.msg)))
		m.pendBy[p.id]--
		if m.pendBy[p.id] == 0 {
			delete(m.pendBy, p.id)
		}
		n := p.gaps
		if p.msg != nil {
			n = 1
		}
		m.pendGaps[p.id] += n
		m.log.Error("terminal dropped: too many waiting for the session store; its resume will report it missed",
			"session", p.id, "request", p.req)
	}
	m.pendMu.Unlock()
	select {
	case m.retryKick <- struct{}{}:
	default:
	}
	return ErrDeferred
}

// retryPending logs the waiting terminals, oldest first, every 250 ms
// until the store takes them. Owned by the Manager (Close stops it; what
// still waits then is logged as lost).
func (m *Manager) retryPending() {
	defer m.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			m.pendMu.Lock()
			if n := len(m.pending) - m.pendHead; n > 0 {
				m.log.Error("terminal messages lost at close: session store unavailable", slog.Int("messages", n))
			}
			m.pending, m.pendHead = nil, 0
			clear(m.pendGaps)
			clear(m.once.gapTry)
			m.pendMu.Unlock()
			return
		case <-m.retryKick:
			continue // the failure was just seen: wait for the next tick
		case <-t.C:
		}
		for m.retryOne() {
		}
	}
}

// retryOne logs the oldest waiting terminal; false when there is none or
// the store still fails.
func (m *Manager) retryOne() bool {
	m.pendMu.Lock()
	if m.pendHead == len(m.pending) {
		m.pending, m.pendHead = m.pending[:0], 0
		for id := range m.pendGaps {
			// Dropped positions of a session with nothing else waiting.
			m.pendMu.Unlock()
			return m.retryGaps(id)
		}
		m.pendMu.Unlock()
		return false
	}
	p := m.pending[m.pendHead]
	gaps := m.pendGaps[p.id]
	m.pendMu.Unlock()
	if gaps > 0 && !m.retryGaps(p.id) {
		return false
	}

	l := m.holdLocal(p.id)
	defer m.unhold(l)
	l.takeTurn(context.Background())
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Redis.OpTimeout)
	var (
		a   Appended
		err error
	)
	if p.msg == nil {
		// A terminal whose attempt ran after all is in the log: the
		// same once takes no gap for it.
		err = m.appendGap(ctx, p.id, p.gaps, p.once)
	} else {
		a, err = m.append(ctx, l, p.msg, p.at, p.once)
	}
	cancel()
	if err != nil && !errors.Is(err, ErrNotFound) {
		l.giveTurn()
		return false
	}
	if err == nil && p.msg != nil {
		m.deliver(l, nil, p.req, a)
		m.log.Info("waiting terminal logged", slog.String("session", p.id), slog.Uint64("pos", a.Pos))
	}
	m.pendMu.Lock()
	// The head is still p: only this goroutine moves it (deferTerminal
	// moves it only past maxPending, then p is gone and its slot reused
	// for a later one; logging it twice is avoided by the compare).
	if m.pendHead < len(m.pending) && m.pending[m.pendHead].id == p.id && m.pending[m.pendHead].req == p.req {
		m.pendBytes.Add(-int64(len(m.pending[m.pendHead].msg)))
		m.pending[m.pendHead] = pendingTerm{}
		m.pendHead++
		if m.pendBy[p.id]--; m.pendBy[p.id] <= 0 {
			delete(m.pendBy, p.id)
		}
	}
	m.pendMu.Unlock()
	l.giveTurn()
	return true
}

// retryGaps logs, as one gap, the positions of session id's terminals
// dropped past maxPending; false if the store still fails.
func (m *Manager) retryGaps(id string) bool {
	l := m.holdLocal(id)
	defer m.unhold(l)
	l.takeTurn(context.Background())
	defer l.giveTurn()
	m.pendMu.Lock()
	try, ok := m.once.gapTry[id]
	if !ok {
		// A new batch: every attempt of it logs the same count under
		// the same once (positions dropped meanwhile go in the next).
		try = gapTry{once: m.newOnce(), n: m.pendGaps[id]}
		m.once.gapTry[id] = try
	}
	m.pendMu.Unlock()
	if try.n == 0 {
		m.pendMu.Lock()
		delete(m.once.gapTry, id)
		m.pendMu.Unlock()
		return true
	}
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Redis.OpTimeout)
	err := m.appendGap(ctx, id, try.n, try.once)
	cancel()
	if err != nil && !errors.Is(err, ErrNotFound) {
		return false
	}
	m.pendMu.Lock()
	delete(m.once.gapTry, id)
	if m.pendGaps[id] -= try.n; m.pendGaps[id] <= 0 {
		delete(m.pendGaps, id)
	}
	m.pendMu.Unlock()
	return true
}

// appendGap is Store.AppendGap, idempotent per once on the Redis store.
func (m *Manager) appendGap(ctx context.Context, id string, n int, once onceKey) error {
	if m.onceStore != nil {
		return m.onceStore.appendGapOnce(ctx, id, n, once)
	}
	return m.store.AppendGap(ctx, id, n)
}

// waitingForStore returns the number of terminals and gaps waiting.
func (m *Manager) waitingForStore() int {
	m.pendMu.Lock()
	defer m.pendMu.Unlock()
	return len(m.pending) - m.pendHead
}

// cursorWritten reports whether session id has no delivered cursor
// waiting to be written (tests).
func (m *Manager) cursorWritten(id string) bool {
	l := m.lockLocal(id, false)
	if l == nil {
		return true
	}
	defer l.mu.Unlock()
	return l.dlv() == 0
}
