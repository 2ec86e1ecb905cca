package sessions

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/orchestratord/orchestratord/daemon/events"
)

// Delivery (contract 1.1, section 4a). Every terminal of a session goes
// through Terminal, the one place where it is numbered, logged and
// delivered:
//
//   - the store numbers it and appends it to the session's replay log in
//     one step (memory: a map write; Redis: one Lua round trip);
//   - it is then sent, tagged with its position, to the session's live
//     connection on this node, or relayed to the holder's node.
//
// The session's turn (turn.go) orders numbering and delivery of the
// terminals produced on this node, and Bind takes it around its claim, so
// a resume's replay and live terminals never cross: a terminal is either
// in the claim's replay or sent live after it, never both, never neither.
// The turn is a per-session FIFO queue, not a lock: a caller waits for it
// on a channel of its own, and no lock is held across the store round
// trip that a turn makes. It is asked for only by Terminal, the node-loss
// sweeper, the retries of terminals that waited for the store, Restore,
// Bind, the bus's attach handling and a stream's switch to a holder it
// looked up (Stream.Chunk), which run on request goroutines, the
// sweeper, the retry goroutine, the attach goroutine and, for an attach
// message, the bus goroutine only when the turn is free (else a
// goroutine of its own waits for it): never by a connection worker or
// the poller (with the Redis store dispatch sends even an inline echo
// answer through a goroutine). l.mu, which workers take, is never held
// across a round trip.

// ErrDeferred reports a terminal that the store could not take now: it is
// kept in memory (bounded) and logged, numbered and delivered, in order,
// when the store is back.
var ErrDeferred = errors.New("terminal kept in memory until the session store is back")

// Terminal numbers a terminal message of request requestID (encoded by
// the events package, without position), appends it to the session's
// replay log and delivers it to the session's connection wherever it is.
// It returns the position. With ErrDeferred the terminal waits in memory
// for the store; with ErrNotFound the session has expired and the
// terminal is dropped. msg may be reused after return.
func (m *Manager) Terminal(ctx context.Context, sessionID, requestID string, msg []byte) (uint64, error) {
	l := m.holdLocal(sessionID)
	defer m.unhold(l)
	if benchNoLog { // false, and compiled out, except in make bench-positions
		return 0, m.sendUnlogged(l, msg)
	}
	return m.terminal(ctx, l, requestID, msg, nil, nil)
}

// sendUnlogged sends a terminal to the session's connection on this node
// as it is: no position, no log. Only the benchnolog build calls it (see
// benchnolog_on.go); there is no such path in the product.
func (m *Manager) sendUnlogged(l *Record, msg []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.out == nil {
		return ErrNotFound
	}
	return l.out.Send(msg)
}

// runTerm says that a terminal settles a node-loss run in the same store
// script (luaRunTerm): the normal end of this process's run (take false,
// token: this process's), or a survivor's takeover of a dead process's
// run (take true, token: the dead one's).
type runTerm struct {
	token string
	take  bool
	// maybeDone: an earlier attempt of this end failed in a way that may
	// have left the script executed (a timeout, not a refused dial): a
	// marker found gone then means that attempt settled the run.
	maybeDone bool
}

// errRunHeld: a recorded run's end could not be settled now (the store
// failed, or the session's terminals wait for it): the caller holds the
// terminal and retries; its stream stays registered.
var errRunHeld = errors.New("request end held until the session store settles it")

// terminal is Terminal on a held local; s, if set, is the request's
// stream, unregistered in the same turn (so a resume sees either its
// chunks and then its terminal live, or its terminal in the replay). rt,
// if set, settles a node-loss run in the same script: then it may also
// return errRunHeld, errRunDropped, errRunNotTaken or errRunSettled, or,
// for a take, the store's error (nothing was done: the sweeper retries).
func (m *Manager) terminal(ctx context.Context, l *Record, req string, msg []byte, s *Stream, rt *runTerm) (uint64, error) {
	at := events.PosIndex(msg)
	l.takeTurn(context.Background()) // a terminal always gets its turn
	defer l.giveTurn()
	var (
		a    Appended
		err  error
		once onceKey
	)
	switch {
	case rt != nil && !rt.take && m.deferring(l.id):
		// Behind terminals waiting for the store: settled (and logged)
		// after them, by the node-loss retry.
		return 0, errRunHeld
	case rt == nil && m.deferring(l.id):
		m.unregister(l, s)
		return 0, m.deferTerminal(l.id, req, msg, at, m.newOnce())
	case rt != nil:
		a, err = m.appendRun(ctx, l, msg, at, req, rt)
	default:
		once = m.newOnce()
		a, err = m.append(ctx, l, msg, at, once)
	}
	switch {
	case err == nil:
	case errors.Is(err, errRunDropped), errors.Is(err, errRunNotTaken), errors.Is(err, errRunSettled):
		m.unregister(l, s)
		return 0, err
	case errors.Is(err, ErrNotFound):
		m.unregister(l, s)
		m.log.Debug("terminal for an expired session dropped", slog.String("session", l.id), slog.String("request", req))
		return 0, err
	case rt != nil && rt.take:
		return 0, err // nothing done: the run's record stays for the next sweep
	case errors.Is(err, ErrClosed) || m.ctx.Err() != nil:
		m.unregister(l, s)
		m.log.Error("terminal lost: session manager closed", slog.String("session", l.id), slog.String("request", req))
		return 0, fmt.Errorf("terminal of %s: %w", req, ErrClosed)
	case rt != nil:
		m.warn("request end not settled in the session store; terminal held until it answers",
			slog.String("session", l.id), slog.String("request", req), slog.Any("err", err))
		return 0, fmt.Errorf("%w: %w", errRunHeld, err)
	default:
		m.unregister(l, s)
		m.warn("session store unavailable, terminal kept in memory", slog.String("session", l.id), slog.Any("err", err))
		// Retried with the same once: if this attempt ran with its
		// answer lost, the retry finds it rather than logging it twice.
		return 0, m.deferTerminal(l.id, req, msg, at, once)
	}
	m.deliver(l, s, req, a) // removes s
	return a.Pos, nil
}

// unregister removes stream s (nil: none) from l.
func (m *Manager) unregister(l *Record, s *Stream) {
	if s == nil {
		return
	}
	l.mu.Lock()
	s.unregisterLocked()
	l.mu.Unlock()
}

// appendRun is append for a terminal that settles a node-loss run
// (RedisStore.appendRun); a session the store lost is restored as in
// append (normal end only: a survivor's take of an expired session has
// nothing to answer).
func (m *Manager) appendRun(ctx context.Context, l *Record, msg []byte, at int, req string, rt *runTerm) (Appended, error) {
	rs, ok := m.store.(*RedisStore) // set before the sweeper starts (m.nl is not yet)
	if !ok {
		return Appended{}, errors.New("node-loss run settled on a store without runs")
	}
	a, err := rs.appendRun(ctx, l.id, msg, at, req, rt.token, rt.take, rt.maybeDone)
	if errors.Is(err, ErrNotFound) && !rt.take {
		l.mu.Lock()
		user := l.user
		l.mu.Unlock()
		// The store lost the session, and the run's marker with it.
		if user != "" && m.restore(ctx, l, user) == nil {
			a, err = rs.appendRun(ctx, l.id, msg, at, req, rt.token, false, false)
		}
	}
	return a, err
}

// append is Store.Append, done once per once (see newOnce) however many
// times it is attempted; when the store lost the session (a Redis that
// restarted empty) while this node still serves it, the session is
// re-created, so the terminal is logged rather than dropped. The
// re-created log first takes, as a gap, the positions this node already
// numbered for the connection: positions keep growing (a terminal at or
// below l.sent would be taken for one already sent and never delivered),
// and a resume over the lost ones says recovered:false with missed.
func (m *Manager) append(ctx context.Context, l *Record, msg []byte, at int, once onceKey) (Appended, error) {
	a, err := m.storeAppend(ctx, l, msg, at, once)
	if errors.Is(err, ErrNotFound) {
		l.mu.Lock()
		user := l.user
		l.mu.Unlock()
		if user != "" && m.restore(ctx, l, user) == nil {
			a, err = m.storeAppend(ctx, l, msg, at, once)
		}
	}
	return a, err
}

// storeAppend is Store.Append of l's session, idempotent per once on the
// Redis store; the memory store appends to l itself (appendRecord).
func (m *Manager) storeAppend(ctx context.Context, l *Record, msg []byte, at int, once onceKey) (Appended, error) {
	switch {
	case m.onceStore != nil:
		return m.onceStore.appendOnce(ctx, l.id, msg, at, once)
	case m.memStore != nil:
		return m.memStore.appendRecord(l, msg, at)
	}
	return m.store.Append(ctx, l.id, msg, at)
}

// restore re-creates a session the store lost (Manager.Restore, append);
// the new log first takes the positions this node numbered for the
// session's connection as a gap. The session's turn held, so that two
// restores of the session on this node do not both add the gap.
func (m *Manager) restore(ctx context.Context, l *Record, user string) error {
	if _, err := m.store.Get(ctx, l.id); err == nil || !errors.Is(err, ErrNotFound) {
		return err
	}
	if err := m.store.Restore(ctx, l.id, user); err != nil {
		return err
	}
	l.mu.Lock()
	sent := l.sent
	if a := l.ahead(); a != nil && len(*a) > 0 {
		sent = max(sent, (*a)[len(*a)-1])
	}
	l.mu.Unlock()
	return m.store.AppendGap(ctx, l.id, int(sent))
}

// deliver sends a logged terminal to the session's connection: here, or
// relayed to the holder's node. Not delivered, it stays in the log for the
// next resume. s, if set, is the terminal's stream, removed in the same
// critical section. Called in the session's turn.
//
// The holder the append returned may be a claim this node has not heard
// of yet (its attach message is on the way, or never comes: this node was
// not among the session's nodes). The node then switches to it as the
// attach would (switchLocked: the connection here, older, is kicked, and
// the streams' chunks, s's included, are replayed to the new holder before
// the terminal), rather than sending the terminal to the older connection
// here or relaying it alone: the claim came before this append, so the
// terminal is not in the claim's replay and the request was listed as in
// flight.
func (m *Manager) deliver(l *Record, s *Stream, req string, a Appended) {
	var (
		to    Holder
		r     *remote
		outs  []busOut
		older Outlet
	)
	h := a.Holder
	other := m.bus != nil && h.Node != "" && h.Node != m.node
	l.mu.Lock()
	if other && h.Epoch > uint64(l.epoch) {
		r, outs, older = m.switchLocked(l, h)
	}
	if s != nil {
		s.unregisterLocked()
	}
	switch {
	case l.out != nil:
		m.sendLocked(l, a.Msg, a.Pos)
	case other && h.Epoch == uint64(l.epoch):
		if cur := l.remote(); cur == nil || cur.Holder != h {
			l.setRemote(&remote{Holder: h})
		}
		to = h
		if l.relayLocked(req, a.Pos, a.Msg) {
			to = Holder{} // queued behind a replay under way
		}
	}
	l.mu.Unlock()
	if older != nil {
		older.Kick()
	}
	if r != nil {
		m.bus.publishReplay(l, r, outs)
	}
	if to.Node != "" {
		m.bus.relay(to, l.id, req, a.Pos, a.Msg)
	}
}

// outMsg is a message waiting behind a paced replay; pos 0: not a terminal.
type outMsg struct {
	msg []byte
	pos uint64
}

// backlog holds what a connection is owed beyond what its socket queue
// should take at once: a replay, and what came live meanwhile, in order.
type backlog struct {
	msgs  []outMsg
	head  int
	live  int // bytes queued behind the replay after it began
	total int
	// older, on a takeover on this node, is the connection taken over:
	// nothing is sent until its Detach, which drops from msgs the
	// terminals its peer acknowledged (up to capAt: where the older
	// connection's hole was, never past a resume's ?last=), so that none
	// arrives on both connections.
	older Outlet
	capAt uint64
}

// sendLocked sends one message to l's connection, behind a paced replay
// if one is under way. A terminal already sent (in the replay, or relayed
// twice) is not sent again. l.mu held.
func (m *Manager) sendLocked(l *Record, msg []byte, pos uint64) {
	if pos != 0 && !l.markSentLocked(pos) {
		return
	}
	if bl := l.bl(); bl != nil {
		if pos != 0 {
			// A logged terminal's bytes are the store's until the
			// session's next Append (Appended.Msg): the backlog keeps
			// its own copy.
			msg = slices.Clone(msg)
		}
		bl.msgs = append(bl.msgs, outMsg{msg, pos})
		bl.live += len(msg)
		if bl.live > m.opts.maxBacklog() {
			m.log.Warn("slow consumer: live messages behind a replay passed their bound",
				slog.String("session", l.id), slog.Int("bytes", bl.live))
			l.setBl(nil)
			l.out.Cut()
		}
		return
	}
	if pos != 0 {
		_ = l.out.SendTerminal(msg, pos)
	} else {
		_ = l.out.Send(msg)
	}
}

// replayLocked queues msgs on l's connection paced by its socket: at most
// about Options.PaceBytes wait in the connection's queue, the rest follows
// as it drains (never a 4008 for what a resume is owed). l.mu held.
func (m *Manager) replayLocked(l *Record, msgs []outMsg) {
	if len(msgs) == 0 {
		return
	}
	bl := l.bl()
	if bl == nil {
		bl = &backlog{}
		l.setBl(bl)
	}
	for _, o := range msgs {
		bl.msgs = append(bl.msgs, o)
		bl.total += len(o.msg)
	}
	m.pumpLocked(l)
}

// pumpLocked moves the backlog to the connection while its queue is under
// the pace, then waits for it to drain. l.mu held.
func (m *Manager) pumpLocked(l *Record) {
	bl, out := l.bl(), l.out
	if bl == nil || out == nil || bl.older != nil {
		return
	}
	pace := m.opts.paceBytes()
	for bl.head < len(bl.msgs) && out.Queued() < pace {
		o := bl.msgs[bl.head]
		bl.msgs[bl.head] = outMsg{}
		bl.head++
		var err error
		if o.pos != 0 {
			err = out.SendTerminal(o.msg, o.pos)
		} else {
			err = out.Send(o.msg)
		}
		if err != nil {
			l.setBl(nil) // the connection is gone; the log keeps the terminals
			return
		}
	}
	if bl.head == len(bl.msgs) {
		l.setBl(nil)
		return
	}
	// The callback runs on the connection's goroutine, maybe at once:
	// never under l.mu, so it only starts a goroutine.
	out.NotifyDrained(pace/2, func() { go m.pump(l, out) })
}

// takeoverWait bounds how long a resume's replay waits for the Detach of
// the connection it took over on this node (netpoll closes a kicked
// connection within its CloseWait, 2 s by default).
const takeoverWait = 3 * time.Second

// stopWaiting sends bl's replay if it still waits for the older
// connection's Detach after takeoverWait.
func (m *Manager) stopWaiting(l *Record, bl *backlog) {
	l.mu.Lock()
	if l.bl() == bl && bl.older != nil {
		bl.older = nil
		m.pumpLocked(l)
	}
	l.mu.Unlock()
}

func (m *Manager) pump(l *Record, out Outlet) {
	l.mu.Lock()
	if l.out == out {
		m.pumpLocked(l)
	}
	l.mu.Unlock()
}

// Detach tells the manager that out's connection closed; out is never used
// again. acked is the highest position the connection's peer is known to
// have received (netpoll's Conn.Acked: every tagged frame up to it was
// written and acknowledged by the peer's TCP): the session's delivered
// cursor moves there, so that a resume without ?last= replays what came
// after. No-op if out was already replaced. The store write is made off
// the caller's goroutine with the Redis store.
func (m *Manager) Detach(id string, out Outlet, acked uint64) {
	l := m.lockLocal(id, false)
	if l == nil {
		return
	}
	write, gone := false, false
	if l.conns > 0 {
		l.conns--
	}
	if l.out == out {
		gone = true
		// The delivered cursor never passes a position out did not get.
		acked = min(acked, l.sent)
		l.out, l.conn = nil, 0
		l.setBl(nil)
		l.setAhead(nil)
		if acked > l.dlv() {
			l.setDlv(acked)
			write = true
		}
		if m.bus != nil && l.conns == 0 {
			// Redis: kept for resume in Redis; this node remembers it
			// held the session (Counts, Detached) until another node
			// claims it or its TTL passes.
			l.setDetached(time.Now().UnixNano())
		}
	} else if bl := l.bl(); bl != nil && bl.older == out {
		// The connection a resume on this node took over: its final
		// Acked decides what the new connection's replay still owes.
		acked = min(acked, bl.capAt)
		k := bl.head
		for _, o := range bl.msgs[bl.head:] {
			if o.pos != 0 && o.pos <= acked {
				bl.total -= len(o.msg)
				continue
			}
			bl.msgs[k] = o
			k++
		}
		clear(bl.msgs[k:])
		bl.msgs, bl.older = bl.msgs[:k], nil
		if acked > l.dlv() {
			l.setDlv(acked)
			write = true
		}
		m.pumpLocked(l)
	}
	if ms, ok := m.store.(*MemoryStore); ok && gone {
		// Under l.mu (record before shard), like the attach's clear in
		// Bind: else a resume on this node that claims the session between
		// this unlock and the write is left marked detached.
		ms.SetDetached(id, time.Now())
	}
	m.releaseLocked(l)
	l.mu.Unlock()
	if !write {
		return
	}
	m.async(asyncOp{kind: opDelivered, id: id, pos: acked, l: l})
}

// Ack is the client's ack (contract 1.1 section 4a): the log drops the
// terminals up to pos. It never blocks: with Redis the write is queued.
func (m *Manager) Ack(id string, pos uint64) {
	m.async(asyncOp{kind: opAck, id: id, pos: pos})
}

// Async store writes: the delivered cursor and acks. The memory store
// writes at once; Redis writes go to one goroutine through a bounded
// queue (a full queue drops an ack, which only trims early, or a cursor,
// which only makes a v1 resume replay more).

type asyncKind uint8

const (
	opDelivered asyncKind = iota + 1
	opAck
)

type asyncOp struct {
	kind asyncKind
	id   string
	pos  uint64
	l    *Record // opDelivered: whose l.dlv to clear once written
}

func (m *Manager) async(op asyncOp) {
	if m.asyncq == nil {
		m.doAsync(m.ctx, op)
		return
	}
	select {
	case m.asyncq <- op:
	default:
		m.warn("session write queue full: cursor or ack dropped", slog.String("session", op.id))
	}
}

// doAsync writes op within parent and one OpTimeout.
func (m *Manager) doAsync(parent context.Context, op asyncOp) {
	ctx, cancel := context.WithTimeout(parent, m.opts.Redis.OpTimeout)
	defer cancel()
	var err error
	switch op.kind {
	case opDelivered:
		err = m.store.Delivered(ctx, op.id, op.pos)
		if l := op.l; l != nil {
			l.mu.Lock()
			if err == nil && l.dlv() <= op.pos {
				l.setDlv(0)
				m.releaseLocked(l)
			}
			l.mu.Unlock()
		}
	case opAck:
		err = m.store.Ack(ctx, op.id, op.pos)
	}
	if err != nil && !errors.Is(err, ErrNotFound) && parent.Err() == nil {
		m.warn("session cursor write failed", slog.String("session", op.id), slog.Any("err", err))
	}
}

func (m *Manager) asyncWriter() {
	defer m.wg.Done()
	for {
		select {
		case <-m.ctx.Done():
			m.flushAsync()
			return
		case op := <-m.asyncq:
			// Not under m.ctx: a write under way when the manager
			// closes is finished (Close waits for it), not cancelled.
			m.doAsync(context.Background(), op)
		}
	}
}

// flushAsync writes what is still queued when the manager closes, within
// one OpTimeout in all. A drain's connections detach just before: their
// delivered cursors must reach the store, else the next resume without
// ?last= replays terminals their clients already have (duplicates).
func (m *Manager) flushAsync() {
	ctx, cancel := context.WithTimeout(context.Background(), m.opts.Redis.OpTimeout)
	defer cancel()
	for ctx.Err() == nil {
		select {
		case op := <-m.asyncq:
			m.doAsync(ctx, op)
		default:
			return
		}
	}
	if n := len(m.asyncq); n > 0 {
		m.log.Warn("session cursor writes dropped at close: the store did not take them in time", slog.Int("writes", n))
	}
}

// Counts returns the sessions attached on this node, the detached ones it
// keeps for resume, and the bytes it holds for sessions in process memory.
// Memory store: every detached session in the store. Redis store: the
// sessions whose last connection was on this node, not claimed by another
// node since, within their TTL (their state is in Redis: bytes counts only
// what waits here for the store).
func (m *Manager) Counts() (attached, detached int, bytes int64) {
	ms, mem := m.store.(*MemoryStore)
	for _, l := range m.records() {
		l.mu.Lock()
		if l.out != nil {
			attached++
		} else if l.detached() != 0 {
			detached++
		}
		l.mu.Unlock()
	}
	if mem {
		_, detached = ms.detached(nil, 0)
		bytes = ms.Bytes()
	}
	bytes += m.pendBytes.Load()
	return attached, detached, bytes
}

// Detached appends to dst up to limit detached sessions kept for resume,
// oldest detached first, with what they are owed (the scope of Counts).
// With Redis, Owed and OwedBytes are 0: what a session is owed is in
// Redis, and listing it would cost a round trip per session.
func (m *Manager) Detached(dst []DetachedInfo, limit int) []DetachedInfo {
	if ms, ok := m.store.(*MemoryStore); ok {
		dst, _ = ms.detached(dst, limit)
		return dst
	}
	start := len(dst)
	for _, l := range m.records() {
		l.mu.Lock()
		if l.out == nil && l.detached() != 0 {
			dst = append(dst, DetachedInfo{ID: l.id, User: l.user, Since: time.Unix(0, l.detached())})
		}
		l.mu.Unlock()
	}
	part := dst[start:]
	slices.SortFunc(part, func(a, b DetachedInfo) int {
		return cmp.Or(a.Since.Compare(b.Since), cmp.Compare(a.ID, b.ID))
	})
	if limit >= 0 && len(part) > limit {
		dst = dst[:start+limit]
	}
	return dst
}

// markSentLocked records that position pos goes to l's connection; false
// if it went already. Terminals relayed from several replicas may come out
// of position order: sent is the contiguous mark (what the delivered cursor
// may reach), ahead the positions sent beyond a gap. l.mu held.
func (l *Record) markSentLocked(pos uint64) bool {
	if pos <= l.sent {
		return false
	}
	if pos > l.sent+1 {
		var a []uint64
		if p := l.ahead(); p != nil {
			a = *p
		}
		i, found := slices.BinarySearch(a, pos)
		if found {
			return false
		}
		a = slices.Insert(a, i, pos)
		l.setAhead(&a)
		return true
	}
	l.sent = pos
	if p := l.ahead(); p != nil {
		a := *p
		for len(a) > 0 && a[0] == l.sent+1 {
			l.sent++
			a = a[1:]
		}
		if len(a) == 0 {
			l.setAhead(nil)
		} else {
			*p = a
		}
	}
	return true
}
