package sessions

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"
)

// maxPending bounds the terminals kept in memory while the store cannot
// take them (Redis down); past it the oldest is dropped with an error log.
const maxPending = 10000

// pendingPush is a terminal waiting for the store to come back.
type pendingPush struct {
	seq uint64
	id  string
	msg []byte
}

// toOutboxLocked keeps a terminal that no connection took, and tells the
// session's current holder, if any, to drain the outbox. When the store
// fails, the terminal waits in memory and is pushed again when the store is
// back (see retryPending). l.mu held.
func (m *Manager) toOutboxLocked(l *local, msg []byte) {
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Redis.OpTimeout)
	defer cancel()
	h, err := m.store.PushOutbox(ctx, l.id, msg)
	switch {
	case err == nil:
		m.pokeHolder(l, h)
	case errors.Is(err, ErrNotFound):
		m.log.Debug("terminal for an expired session dropped", slog.String("session", l.id))
	case errors.Is(err, ErrClosed) || m.ctx.Err() != nil:
		m.log.Error("terminal message lost: session manager closed", slog.String("session", l.id))
	default:
		m.warn("session outbox unavailable, terminal kept in memory for retry",
			slog.String("session", l.id), slog.Any("err", err))
		m.pendMu.Lock()
		if len(m.pending) >= maxPending {
			m.log.Error("terminal message lost: too many waiting for the session store",
				slog.String("session", m.pending[0].id))
			m.pending = m.pending[1:]
		}
		m.pendSeq++
		m.pending = append(m.pending, pendingPush{seq: m.pendSeq, id: l.id, msg: msg})
		m.pendMu.Unlock()
		select {
		case m.pendKick <- struct{}{}:
		default:
		}
	}
}

// retryPending pushes the waiting terminals to the store, oldest first,
// every 250 ms until it takes them. Owned by the Manager (Close stops it;
// what is still waiting then is logged as lost).
func (m *Manager) retryPending() {
	defer m.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			m.pendMu.Lock()
			if n := len(m.pending); n > 0 {
				m.log.Error("terminal messages lost at close: session store unavailable", slog.Int("messages", n))
			}
			m.pending = nil
			m.pendMu.Unlock()
			return
		case <-m.pendKick:
			continue // the failure was just seen: wait for the next tick
		case <-t.C:
		}
		for {
			m.pendMu.Lock()
			if len(m.pending) == 0 {
				m.pendMu.Unlock()
				break
			}
			p := m.pending[0]
			m.pendMu.Unlock()
			if !m.pushPending(p) {
				break
			}
			m.pendMu.Lock()
			if len(m.pending) > 0 && m.pending[0].seq == p.seq {
				m.pending = m.pending[1:]
			}
			m.pendMu.Unlock()
		}
	}
}

// pushPending pushes one waiting terminal; false if the store still fails.
func (m *Manager) pushPending(p pendingPush) bool {
	l := m.lockLocal(p.id, true)
	defer l.mu.Unlock()
	defer m.releaseLocked(l)
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Redis.OpTimeout)
	defer cancel()
	h, err := m.store.PushOutbox(ctx, p.id, p.msg)
	switch {
	case err == nil:
		m.log.Info("waiting terminal pushed to the session outbox", slog.String("session", p.id))
		m.pokeHolder(l, h)
	case errors.Is(err, ErrNotFound):
	default:
		return false
	}
	return true
}

// pokeHolder makes the holder h of l's session drain its outbox: on this
// node at once when the holder is l's live connection, else over the bus.
// l.mu held.
func (m *Manager) pokeHolder(l *local, h Holder) {
	switch {
	case h.Node == "" || h.Conn == 0:
	case h.Node == m.node:
		if l.out != nil && l.conn == h.Conn {
			m.drainToLocked(l)
		}
	case m.bus != nil:
		m.bus.poke(h.Node, l.id)
	}
}

// drainToLocked sends the session's outbox to its live connection on this
// node. l.mu held.
func (m *Manager) drainToLocked(l *local) {
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Redis.OpTimeout)
	defer cancel()
	msgs, err := m.store.DrainOutbox(ctx, l.id)
	if err != nil {
		m.warn("drain session outbox", slog.String("session", l.id), slog.Any("err", err))
		return
	}
	for i, msg := range msgs {
		if l.out == nil || l.out.Send(msg) != nil {
			if _, err := m.store.PushOutbox(ctx, l.id, msgs[i:]...); err != nil {
				m.log.Error("session outbox lost", slog.String("session", l.id), slog.Any("err", err))
			}
			return
		}
	}
}

// Undelivered keeps terminals that an Outlet accepted but could not write
// before its connection closed (a slow reader cut after 4008): they go to
// the session's outbox, like a terminal no connection took, and reach the
// session's current connection if one is attached by now.
func (m *Manager) Undelivered(id string, msgs [][]byte) {
	if len(msgs) == 0 {
		return
	}
	l := m.lockLocal(id, true)
	defer l.mu.Unlock()
	for _, msg := range msgs {
		m.toOutboxLocked(l, slices.Clone(msg))
	}
	m.releaseLocked(l)
}
