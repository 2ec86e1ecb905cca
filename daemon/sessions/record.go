package sessions

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Record is the one record of a session on this node: everything the node
// knows and does for it lives here, in one object, in one sharded registry
// (the Manager's shards), reachable from the connection (the gateway keeps
// it in the netpoll Conn's value).
//
//   - connection binding: the live Outlet, its connection number, and how
//     many gateway connections still hold the record (conns);
//   - delivery (delivery.go): the turn (turn.go), the positions sent (a contiguous mark
//     and those sent ahead of a gap), a paced replay's backlog, a delivered cursor
//     not yet written, the holder on another node as last learnt;
//   - requests: their streams (output kept for a resume) and dispatch's
//     in-flight registry (request id → cancel func, in req with the trace
//     id) with its rate limiter state, used by dispatch through the
//     Session interface it declares;
//   - with the Redis store, when its last connection here went (Counts);
//   - with the memory store, the session's state itself (mem: owner,
//     times, position, cursor, holder, context, history, replay log),
//     which the store reads and writes under the record's shard lock.
//
// An idle attached session is this struct (144 bytes) and its index slot;
// with the memory store the record and the store's part are one 224-byte
// object (memRecord). No map is made until a request runs, no goroutine,
// no timer. A record is removed from the registry (dead set) once nothing
// holds it: no connection, no request, no pending write, not kept as
// detached, and not in the memory store.
type Record struct {
	m  *Manager // nil for a record of a memory store opened alone
	mu sync.Mutex

	id string
	// user is the session's user: its owner in the memory store, else
	// set once attached here (to restore a lost session). Written with
	// both mu and the shard's mu held (or before the record is
	// registered); read under either.
	user string
	mem  *memEntry // the memory store's part of the session; nil if none (Redis, or dropped); guarded by the shard's mu

	// guarded by mu
	out     Outlet             // the live connection on this node, nil if none
	conn    uint64             // out's connection number
	streams map[string]*Stream // nil while no request runs: idle sessions stay small
	sent    uint64             // every position up to this one was sent to out (or came before its claim)
	dx      *recDelivery       // nil while all of it is zero: idle sessions stay small (its accessors below)
	held    int32              // Terminal calls and retries using l; -1 once forgotten (dead)
	conns   int32              // gateway connections holding l (Bind .. Detach)

	req     atomic.Pointer[recReq] // dispatch's requests in flight and the trace id; nil while neither
	touched atomic.Int64           // when the last TTL refresh was sent: nanos since Manager.clock0
	tat     atomic.Int64           // dispatch's message rate limiter (GCRA theoretical arrival time)
	turn    atomic.Int32           // the session's turn: turnFree, turnHeld, turnQueued (turn.go)
	// epoch is the newest claim epoch seen for the session; guarded by
	// mu. 32 bits (next to turn, in what was padding) are 136 years of a
	// claim per second.
	epoch uint32
}

// recDelivery is the part of a record that only a session with output in
// flight or callers waiting for its turn, a delivered cursor not yet
// written, or a Redis store needs: made
// on first use by a setter below, dropped once all of it is zero again.
// Guarded by the record's mu, like the fields it holds.
type recDelivery struct {
	turnQ    *[]chan struct{} // the session's turn (turn.go): callers waiting for it, oldest first; nil: none
	remote   *remote          // the holder on another node, as last learnt (nil: unknown)
	ahead    *[]uint64        // positions above sent+1 sent to out already, ascending; nil: none
	bl       *backlog         // a paced replay under way on out, nil if none
	dlv      uint64           // a delivered cursor not written to the store yet
	detached int64            // Redis store: unix nanos its last connection here went (0: attached or not kept)
	binding  *pendingBind     // a claim under way in Bind: relays for its connection wait here until it is bound
}

// pendingBind is the connection of a Bind whose claim is under way: a node
// that learnt of the claim from the store (a terminal's append, a chunk's
// lookup) may relay to it before Bind bound it; those messages wait here
// and follow the claim's replay.
type pendingBind struct {
	conn uint64
	q    []outMsg
}

// The getters return the zero value while l has no recDelivery; l.mu held.
func (l *Record) remote() *remote {
	if l.dx == nil {
		return nil
	}
	return l.dx.remote
}

func (l *Record) turnQ() *[]chan struct{} {
	if l.dx == nil {
		return nil
	}
	return l.dx.turnQ
}

func (l *Record) ahead() *[]uint64 {
	if l.dx == nil {
		return nil
	}
	return l.dx.ahead
}

func (l *Record) bl() *backlog {
	if l.dx == nil {
		return nil
	}
	return l.dx.bl
}

func (l *Record) dlv() uint64 {
	if l.dx == nil {
		return 0
	}
	return l.dx.dlv
}

func (l *Record) binding() *pendingBind {
	if l.dx == nil {
		return nil
	}
	return l.dx.binding
}

func (l *Record) detached() int64 {
	if l.dx == nil {
		return 0
	}
	return l.dx.detached
}

// delivery returns l's recDelivery, made if none; l.mu held.
func (l *Record) delivery() *recDelivery {
	if l.dx == nil {
		l.dx = &recDelivery{}
	}
	return l.dx
}

// trimDelivery drops l's recDelivery once all of it is zero; l.mu held.
func (l *Record) trimDelivery() {
	if d := l.dx; d != nil && *d == (recDelivery{}) {
		l.dx = nil
	}
}

// The setters make the recDelivery on first use and drop it once empty
// again; setting a zero value on a record without one makes nothing.
func (l *Record) setRemote(r *remote) {
	if r == nil && l.dx == nil {
		return
	}
	l.delivery().remote = r
	l.trimDelivery()
}

func (l *Record) setTurnQ(q *[]chan struct{}) {
	if q == nil && l.dx == nil {
		return
	}
	l.delivery().turnQ = q
	l.trimDelivery()
}

func (l *Record) setAhead(a *[]uint64) {
	if a == nil && l.dx == nil {
		return
	}
	l.delivery().ahead = a
	l.trimDelivery()
}

func (l *Record) setBl(bl *backlog) {
	if bl == nil && l.dx == nil {
		return
	}
	l.delivery().bl = bl
	l.trimDelivery()
}

func (l *Record) setDlv(pos uint64) {
	if pos == 0 && l.dx == nil {
		return
	}
	l.delivery().dlv = pos
	l.trimDelivery()
}

func (l *Record) setBinding(b *pendingBind) {
	if b == nil && l.dx == nil {
		return
	}
	l.delivery().binding = b
	l.trimDelivery()
}

func (l *Record) setDetached(at int64) {
	if at == 0 && l.dx == nil {
		return
	}
	l.delivery().detached = at
	l.trimDelivery()
}

// recReq is what a record keeps for dispatch beyond its limiter state,
// made when a request registers or a trace id is set: an idle session
// without a trace id has none.
type recReq struct {
	trace string                             // the attached connection's trusted trace id; never changed once stored (SetTraceID stores a new recReq)
	calls map[string]context.CancelCauseFunc // requests in flight; nil while none; guarded by the record's mu
}

// dead reports whether l was forgotten by the registry; l.mu held.
func (l *Record) dead() bool { return l.held < 0 }

// callsLocked returns dispatch's requests in flight; l.mu held.
func (l *Record) callsLocked() map[string]context.CancelCauseFunc {
	if r := l.req.Load(); r != nil {
		return r.calls
	}
	return nil
}

func (l *Record) indexID() string { return l.id }

// lockLocal returns the session's record, locked, creating it when create
// is set; nil if it does not exist and create is not set.
func (m *Manager) lockLocal(id string, create bool) *Record {
	sh, h := m.reg.lookup(id)
	for {
		sh.mu.Lock()
		l := sh.m.getHashed(id, h)
		if l == nil {
			if !create {
				sh.mu.Unlock()
				return nil
			}
			l = &Record{m: m, id: id} // maps are made by the first request
			sh.m.put(l)
		}
		sh.mu.Unlock()
		l.mu.Lock()
		if !l.dead() {
			return l
		}
		l.mu.Unlock()
	}
}

// releaseLocked forgets l once nothing holds it on this node (the
// registry's releaseLocked). l.mu must be held; the caller still unlocks
// it.
func (m *Manager) releaseLocked(l *Record) { m.reg.releaseLocked(l) }

// setUserLocked sets l's user; l.mu held (user is written with the shard's
// mu too: the memory store reads it under that one).
func (m *Manager) setUserLocked(l *Record, user string) {
	if l.user == user {
		return
	}
	sh := m.reg.shard(l.id)
	sh.mu.Lock()
	l.user = user
	sh.mu.Unlock()
}

// holdLocal returns the session's record and keeps it registered until
// unhold.
func (m *Manager) holdLocal(id string) *Record {
	l := m.lockLocal(id, true)
	l.held++
	l.mu.Unlock()
	return l
}

func (m *Manager) unhold(l *Record) {
	l.mu.Lock()
	l.held--
	m.releaseLocked(l)
	l.mu.Unlock()
}

// Hold returns the record of session id, kept registered until release
// is called (dispatch registers a request taken over from a lost replica
// on it in between); user is recorded if the record has none yet.
func (m *Manager) Hold(id, user string) (rec *Record, release func()) {
	l := m.lockLocal(id, true)
	l.held++
	if l.user == "" {
		m.setUserLocked(l, user)
	}
	l.mu.Unlock()
	return l, func() { m.unhold(l) }
}

// records returns the registered records (a snapshot).
func (m *Manager) records() []*Record { return m.reg.all() }

// Each calls fn for every record this node holds (not under any lock).
func (m *Manager) Each(fn func(*Record)) {
	for _, l := range m.records() {
		fn(l)
	}
}

// EachAttached calls fn with the live connection of every session attached
// on this node (not under any lock).
func (m *Manager) EachAttached(fn func(Outlet)) {
	for _, l := range m.records() {
		l.mu.Lock()
		out := l.out
		l.mu.Unlock()
		if out != nil {
			fn(out)
		}
	}
}

// Outlet returns the live connection of session id on this node, or nil.
func (m *Manager) Outlet(id string) Outlet {
	l := m.lockLocal(id, false)
	if l == nil {
		return nil
	}
	defer l.mu.Unlock()
	return l.out
}

// ID returns the session id.
func (l *Record) ID() string { return l.id }

// User returns the session's user ("" until a connection attached it here).
func (l *Record) User() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.user
}

// Touch records activity on the session (Manager.Touch without the lookup).
func (l *Record) Touch() { l.m.touch(l.id, l) }

// SetTraceID sets the trace id the session's requests carry (from the
// attached connection's trusted traceparent; "" for a new one per
// request).
func (l *Record) SetTraceID(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.req.Load()
	if r == nil && id == "" || r != nil && r.trace == id {
		return
	}
	var calls map[string]context.CancelCauseFunc
	if r != nil {
		calls = r.calls
	}
	if id == "" && calls == nil {
		l.req.Store(nil)
		return
	}
	l.req.Store(&recReq{trace: id, calls: calls})
}

// TraceID returns the session's trace id, or "".
func (l *Record) TraceID() string {
	if r := l.req.Load(); r != nil {
		return r.trace
	}
	return ""
}

// RateState returns the state of the session's message rate limiter
// (auth.Bucket.AllowAt); dispatch owns its rate.
func (l *Record) RateState() *atomic.Int64 { return &l.tat }

// Register adds request req with its cancel func to the session's
// requests in flight, unless req is in flight already (dup) or max are
// (full).
func (l *Record) Register(req string, cancel context.CancelCauseFunc, max int) (dup, full bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	calls := l.callsLocked()
	if _, ok := calls[req]; ok {
		return true, false
	}
	if len(calls) >= max {
		return false, true
	}
	if calls == nil {
		r := l.req.Load()
		if r == nil {
			r = new(recReq)
			l.req.Store(r)
		}
		r.calls = make(map[string]context.CancelCauseFunc, 2)
		calls = r.calls
	}
	calls[req] = cancel
	return false, false
}

// Unregister removes request req and returns how many remain in flight.
func (l *Record) Unregister(req string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.req.Load()
	if r == nil {
		return 0
	}
	delete(r.calls, req)
	n := len(r.calls)
	if n == 0 {
		r.calls = nil
		if r.trace == "" {
			l.req.Store(nil)
		}
		l.m.releaseLocked(l)
	}
	return n
}

// Cancel stops request req with cause; false when it is not in flight.
func (l *Record) Cancel(req string, cause error) bool {
	l.mu.Lock()
	c, ok := l.callsLocked()[req]
	l.mu.Unlock()
	if ok {
		c(cause)
	}
	return ok
}

// CancelAll stops every request of the session in flight with cause.
func (l *Record) CancelAll(cause error) {
	l.mu.Lock()
	calls := l.callsLocked()
	cs := make([]context.CancelCauseFunc, 0, len(calls))
	for _, c := range calls {
		cs = append(cs, c)
	}
	l.mu.Unlock()
	for _, c := range cs {
		c(cause)
	}
}

// InFlight returns the number of requests of the session in flight.
func (l *Record) InFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.callsLocked())
}

// sweepDetached forgets the detached records (Redis store) whose session
// expired since their detach, as far as this node can tell (TTL).
func (m *Manager) sweepDetached(now time.Time) {
	cut := now.Add(-m.lim.ttl).UnixNano()
	for _, l := range m.records() {
		l.mu.Lock()
		if d := l.detached(); d != 0 && d < cut {
			l.setDetached(0)
			m.releaseLocked(l)
		}
		l.mu.Unlock()
	}
}

// remote is the holder of a session on another node, as last learnt, and
// what waits to be relayed to it while the bus goroutine publishes the
// replay of an attach (bus.onAttach): live messages queue behind it, so
// none overtakes the replay, and no publish happens under l.mu.
type remote struct {
	Holder
	replaying bool
	q         []relayMsg // guarded by the record's mu
	// acks are the nonces of attach messages of this holder that came
	// while its replay, started on the store's word, was being published:
	// acked once it is (publishReplay). Guarded by the record's mu.
	acks []uint64
}

type relayMsg struct {
	req string
	pos uint64
	msg []byte
}

// relayLocked reports whether a message for the remote holder must wait
// behind a replay under way; if so it is queued. l.mu held.
func (l *Record) relayLocked(req string, pos uint64, msg []byte) (queued bool) {
	if r := l.remote(); r != nil && r.replaying {
		if pos != 0 {
			msg = slices.Clone(msg) // Appended.Msg: the store's until the next Append
		}
		r.q = append(r.q, relayMsg{req, pos, msg})
		return true
	}
	return false
}
