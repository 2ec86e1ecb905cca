package sessions

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/events"
)

// MemoryStore is the single-node Store. A session's state is a part of
// its Record (Record.mem) in the Manager's registry, so an idle session is
// one object and one index slot, not a record and an entry in two
// registries. Expired sessions are removed by one sweeper goroutine that
// the store owns (Close stops it).
type MemoryStore struct {
	lim limits
	log *slog.Logger
	reg *registry // the Manager's, or the store's own (NewMemoryStore)
	now func() time.Time

	bytes atomic.Int64 // process memory held: logs, contexts, histories
	trimq chan struct{}
	ret   osReturn // the sweeper's: freed memory back to the OS (budget.go)

	nodesMu sync.Mutex
	nodes   map[string]*[]string // one read-only []string{node} per node name (Claim)

	stop      chan struct{}
	closed    atomic.Bool // set before stop is closed: the append path reads it, not the channel
	done      chan struct{}
	closeOnce sync.Once
}

// memEntry is the memory store's part of a session, in its Record (the
// id and the owner are the record's); guarded by the record's shard's mu.
// An idle session (empty context, no history, empty log) adds these 80
// bytes to its record: times are unix nanos, the node list is shared, the
// holder's node is an index into it, and what only a session with content
// needs is in x, made on first use.
type memEntry struct {
	created  int64  // unix nanos
	updated  int64  // unix nanos
	expires  int64  // unix nanos
	detached int64  // unix nanos its last connection went; zero while attached
	pos      uint64 // the newest position
	dlv      uint64 // the delivered cursor
	hConn    uint64 // the holder's connection
	// hEpoch is the holder's claim epoch, 0 while never claimed: 32 bits
	// are 136 years of a claim per second.
	hEpoch uint32
	hNode  uint32    // the holder's node: its index in *nodes
	nodes  *[]string // the nodes that held it; shared, read-only (oneNode)
	x      *memData  // nil while the context is empty and history and log are
}

// holder returns the session's holder (zero if never claimed).
func (e *memEntry) holder() Holder {
	if e.hEpoch == 0 {
		return Holder{}
	}
	return Holder{Node: (*e.nodes)[e.hNode], Conn: e.hConn, Epoch: uint64(e.hEpoch)}
}

// memRecord is a session of the memory store: its record and the store's
// part in one allocation (Record.mem points at e), 224 bytes.
type memRecord struct {
	Record
	e memEntry
}

// memData is the part of a memEntry that only a session with a context,
// a history or a replay log needs.
type memData struct {
	ctx      json.RawMessage // nil: emptyContext
	history  []events.Turn
	log      logRing // the replay log, oldest first, contiguous positions
	logBytes int64
	// lent is the newest position whose message Claim or ReadLog handed
	// out: those entries may be read after the lock is released (a
	// replay), so their buffers are never reused (Append, spareLocked).
	lent uint64
	size int64 // context and history bytes, counted in MemoryStore.bytes
}

// data returns a copy of e's memData for reading (empty when none).
func (e *memEntry) data() memData {
	if e.x == nil {
		return memData{}
	}
	return *e.x
}

// dataW returns e's memData for writing, made on first use.
func (e *memEntry) dataW() *memData {
	if e.x == nil {
		e.x = new(memData)
	}
	return e.x
}

// compact drops e's memData once it holds nothing.
func (e *memEntry) compact() {
	if x := e.x; x != nil && x.ctx == nil && len(x.history) == 0 && x.log.len() == 0 && x.logBytes == 0 && x.size == 0 {
		e.x = nil
	}
}

// context returns the session's context ("{}" when empty).
func (e *memEntry) context() json.RawMessage {
	if e.x == nil || e.x.ctx == nil {
		return emptyContext
	}
	return e.x.ctx
}

// session returns a copy of the session of record l (Store.Get).
func (e *memEntry) session(l *Record) *Session {
	x := e.data()
	return &Session{ID: l.id, User: l.user, Created: time.Unix(0, e.created), Updated: time.Unix(0, e.updated),
		Context: append(json.RawMessage(nil), e.context()...), History: append([]events.Turn(nil), x.history...)}
}

// newEntry returns the store's part of a new session, created now.
func (s *MemoryStore) newEntry() memEntry {
	now := s.now().UnixNano()
	return memEntry{created: now, updated: now, expires: now + int64(s.lim.ttl)}
}

// newRecord returns the record of a new session id of user, with the
// store's part in the same object.
func (s *MemoryStore) newRecord(id, user string) *Record {
	r := &memRecord{e: s.newEntry()}
	r.m, r.id, r.user = s.reg.m, id, user
	r.mem = &r.e
	return &r.Record
}

// NewMemoryStore returns a memory store with a registry of its own and
// starts its sweeper.
func NewMemoryStore(cfg config.Sessions, log *slog.Logger) *MemoryStore {
	return newMemoryStore(cfg, log, newRegistry(nil))
}

// newMemoryStore returns a memory store that keeps its sessions in reg's
// records (the Manager's) and starts its sweeper.
func newMemoryStore(cfg config.Sessions, log *slog.Logger, reg *registry) *MemoryStore {
	s := &MemoryStore{
		lim:   limitsOf(cfg),
		log:   log,
		reg:   reg,
		now:   time.Now,
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
		trimq: make(chan struct{}, 1),
		ret:   newOSReturn(limitsOf(cfg).budget),
	}
	go s.sweep(sweepEvery(s.lim.ttl))
	return s
}

// sweepEvery is the sweeper's period: a tenth of the TTL, between 10 ms
// and one minute, so an expired session lingers at most that long (Get
// checks the expiry itself, so it is never served late).
func sweepEvery(ttl time.Duration) time.Duration {
	return min(max(ttl/10, 10*time.Millisecond), time.Minute)
}

func (s *MemoryStore) sweep(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.trimq:
			s.ret.freed(s.trimToBudget(), time.Now())
			continue
		case <-t.C:
		}
		now := s.now()
		before := s.bytes.Load()
		var gone []*Record
		for i := range s.reg.shards {
			sh := &s.reg.shards[i]
			sh.mu.Lock()
			for l := range sh.m.all() {
				if l.mem != nil && now.UnixNano() > l.mem.expires {
					s.removeLocked(l)
				}
				if l.mem == nil {
					gone = append(gone, l)
				}
			}
			sh.mu.Unlock()
		}
		// Outside the shard locks (a record's mu comes first): forget
		// the records of dropped sessions that nothing else holds.
		for _, l := range gone {
			s.reg.release(l)
		}
		clear(gone)
		s.ret.freed(max(before-s.bytes.Load(), 0), time.Now())
	}
}

// entryLocked returns the record of id with its live store part; its
// shard's mu must be held. An expired session's part is dropped here (the
// sweeper forgets its record).
func (s *MemoryStore) entryLocked(sh *regShard, id string, h uint64) (*Record, error) {
	l := sh.m.getHashed(id, h)
	if l == nil || l.mem == nil {
		return nil, fmt.Errorf("session %s: %w", id, ErrNotFound)
	}
	if s.now().UnixNano() > l.mem.expires {
		s.removeLocked(l)
		return nil, fmt.Errorf("session %s: %w", id, ErrNotFound)
	}
	return l, nil
}

// with runs fn on the live session id (its record and the store's part)
// under its shard's lock.
func (s *MemoryStore) with(id string, fn func(l *Record, e *memEntry) error) error {
	if s.isClosed() {
		return ErrClosed
	}
	sh, h := s.reg.lookup(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	l, err := s.entryLocked(sh, id, h)
	if err != nil {
		return err
	}
	return fn(l, l.mem)
}

func (s *MemoryStore) isClosed() bool { return s.closed.Load() }

// Get implements Store.
func (s *MemoryStore) Get(_ context.Context, id string) (*Session, error) {
	var out *Session
	err := s.with(id, func(l *Record, e *memEntry) error { out = e.session(l); return nil })
	return out, err
}

// Owner implements Store.
func (s *MemoryStore) Owner(_ context.Context, id string) (string, error) {
	var user string
	err := s.with(id, func(l *Record, _ *memEntry) error { user = l.user; return nil })
	return user, err
}

// Create implements Store.
func (s *MemoryStore) Create(_ context.Context, user string) (*Session, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	for {
		id := NewID()
		sh := s.reg.shard(id)
		sh.mu.Lock()
		if sh.m.get(id) != nil { // never for random ids
			sh.mu.Unlock()
			continue
		}
		l := s.newRecord(id, user)
		sh.m.put(l)
		out := l.mem.session(l)
		sh.mu.Unlock()
		return out, nil
	}
}

// Restore implements Store.
func (s *MemoryStore) Restore(_ context.Context, id, user string) error {
	if s.isClosed() {
		return ErrClosed
	}
	sh := s.reg.shard(id)
	for {
		sh.mu.Lock()
		l := sh.m.get(id)
		switch {
		case l == nil:
			sh.m.put(s.newRecord(id, user))
		case l.mem == nil && l.user == user:
			// A record without the store's part (held by the
			// manager after the session expired): the part is
			// made again, in its own object.
			e := s.newEntry()
			l.mem = &e
		case l.mem == nil:
			// Its user changes: that takes the record's mu too, which
			// comes before the shard's.
			sh.mu.Unlock()
			if s.restoreAs(sh, l, user) {
				return nil
			}
			continue
		}
		sh.mu.Unlock()
		return nil
	}
}

// restoreAs gives record l, registered without the store's part, a new
// part owned by user; false if l left the registry meanwhile.
func (s *MemoryStore) restoreAs(sh *regShard, l *Record, user string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if l.dead() || sh.m.get(l.id) != l {
		return false
	}
	if l.mem == nil {
		e := s.newEntry()
		l.mem, l.user = &e, user
	}
	return true
}

// PatchContext implements Store.
func (s *MemoryStore) PatchContext(_ context.Context, id string, patch json.RawMessage) error {
	return s.with(id, func(_ *Record, e *memEntry) error {
		c, err := MergePatch(e.context(), patch)
		if err != nil {
			return fmt.Errorf("patch context of %s: %w", id, err)
		}
		e.dataW().ctx = c
		s.resizeLocked(e)
		s.activeLocked(e)
		return nil
	})
}

// AppendHistory implements Store.
func (s *MemoryStore) AppendHistory(_ context.Context, id string, turns []events.Turn) error {
	return s.with(id, func(_ *Record, e *memEntry) error {
		x := e.dataW()
		h := append(x.history, turns...)
		if over := len(h) - s.lim.historyMax; over > 0 {
			h = slices.Clone(h[over:])
		}
		x.history = h
		s.resizeLocked(e)
		e.compact()
		s.activeLocked(e)
		return nil
	})
}

// Append implements Store: the position is assigned in memory. A full log
// drops its oldest entry on every append, and the new message is written
// into that entry's buffer when it fits (makeRoomLocked): in the steady
// state of a busy session an append allocates nothing, where it used to
// allocate and zero one message-sized buffer per terminal, the daemon's
// largest source of garbage (docs/benchmarks.md, "The replay log's
// buffers"). Appended.Msg is therefore valid only until the session's
// next Append: the Manager numbers and delivers a terminal in one turn of
// the session and copies what it keeps longer (a paced replay's backlog,
// a relay queue).
func (s *MemoryStore) Append(_ context.Context, id string, msg []byte, at int) (Appended, error) {
	var a Appended
	err := s.with(id, func(_ *Record, e *memEntry) error {
		a = s.appendLocked(e, msg, at, s.now().UnixNano())
		return nil
	})
	if err == nil && s.bytes.Load() > s.lim.budget {
		s.kickTrim()
	}
	return a, err
}

// appendRecord is Append for the session of record l, which the caller
// (the Manager) holds registered in the store's registry: the record is
// not looked up again by id, and one clock reading both checks the expiry
// and renews it.
func (s *MemoryStore) appendRecord(l *Record, msg []byte, at int) (Appended, error) {
	if s.closed.Load() {
		return Appended{}, ErrClosed
	}
	sh := s.reg.shard(l.id)
	sh.mu.Lock()
	e := l.mem
	if e == nil {
		sh.mu.Unlock()
		return Appended{}, fmt.Errorf("session %s: %w", l.id, ErrNotFound)
	}
	now := s.now().UnixNano()
	if now > e.expires {
		s.removeLocked(l)
		sh.mu.Unlock()
		return Appended{}, fmt.Errorf("session %s: %w", l.id, ErrNotFound)
	}
	a := s.appendLocked(e, msg, at, now)
	sh.mu.Unlock()
	if s.bytes.Load() > s.lim.budget {
		s.kickTrim()
	}
	return a, nil
}

// appendLocked logs msg with the session's next position at at and
// renews its expiry from now (unix nanos); its shard's mu held.
func (s *MemoryStore) appendLocked(e *memEntry, msg []byte, at int, now int64) Appended {
	e.pos++
	size := events.PosLen(msg, at, e.pos)
	x := e.dataW()
	buf, freed := s.makeRoomLocked(x, size)
	if buf == nil {
		// The slack (24 bytes, and the size class's) lets a later
		// message of about the same size reuse this buffer.
		buf = make([]byte, 0, size+24)
	}
	m := events.AppendPos(buf, msg, at, e.pos)
	x.log.push(LogEntry{Pos: e.pos, Msg: m}, s.lim.replayMax)
	x.logBytes += int64(len(m))
	s.bytes.Add(int64(len(m)) - freed)
	e.expires = now + int64(s.lim.ttl)
	return Appended{Pos: e.pos, Msg: m, Holder: e.holder()}
}

// makeRoomLocked drops the oldest entries of x's log so that one more of
// size bytes keeps it within replay_max and replay_bytes (the new entry
// itself is always kept), and returns the bytes dropped (the caller
// counts them out of MemoryStore.bytes with what it adds) and, empty, the
// buffer of the oldest dropped entry when the new message may be written
// into it: nobody was lent it (Claim, ReadLog) and it fits without being
// more than twice the size; else nil.
func (s *MemoryStore) makeRoomLocked(x *memData, size int) (spare []byte, freed int64) {
	n, b, drop := x.log.len()+1, x.logBytes+int64(size), 0
	for n-drop > s.lim.replayMax || b > s.lim.replayBytes && n-drop > 1 {
		b -= int64(len(x.log.at(drop).Msg))
		drop++
	}
	if drop == 0 {
		return nil, 0
	}
	if old := x.log.oldest(); old.Pos > x.lent && cap(old.Msg) >= size && cap(old.Msg) <= 2*size {
		spare = old.Msg[:0]
	}
	freed = x.log.drop(drop)
	x.logBytes -= freed
	return spare, freed
}

// AppendGap implements Store.
func (s *MemoryStore) AppendGap(_ context.Context, id string, n int) error {
	return s.with(id, func(_ *Record, e *memEntry) error {
		x := e.dataW()
		for range n {
			e.pos++
			_, freed := s.makeRoomLocked(x, 0)
			x.log.push(LogEntry{Pos: e.pos}, s.lim.replayMax)
			s.bytes.Add(-freed)
		}
		return nil
	})
}

// dropLocked removes the n oldest log entries (at most all of them).
func (s *MemoryStore) dropLocked(e *memEntry, n int) {
	x := e.x
	if n <= 0 || x == nil {
		return
	}
	freed := x.log.drop(min(n, x.log.len()))
	x.logBytes -= freed
	s.bytes.Add(-freed)
	if x.log.len() == 0 {
		x.log = logRing{} // its array goes
		e.compact()
	}
}

// ReadLog implements Store.
func (s *MemoryStore) ReadLog(_ context.Context, id string, after uint64) ([]LogEntry, error) {
	var out []LogEntry
	err := s.with(id, func(_ *Record, e *memEntry) error {
		if e.x != nil {
			for le := range e.x.log.all() {
				if le.Pos > after {
					out = append(out, le)
				}
			}
		}
		if len(out) > 0 {
			e.x.lent = max(e.x.lent, out[len(out)-1].Pos)
		}
		return nil
	})
	return out, err
}

// Delivered implements Store.
func (s *MemoryStore) Delivered(_ context.Context, id string, pos uint64) error {
	return s.with(id, func(_ *Record, e *memEntry) error {
		e.dlv = max(e.dlv, min(pos, e.pos))
		return nil
	})
}

// Ack implements Store.
func (s *MemoryStore) Ack(_ context.Context, id string, pos uint64) error {
	return s.with(id, func(_ *Record, e *memEntry) error {
		pos = min(pos, e.pos)
		e.dlv = max(e.dlv, pos)
		if x := e.x; x != nil {
			n := 0
			for n < x.log.len() && x.log.at(n).Pos <= pos {
				n++
			}
			s.dropLocked(e, n)
		}
		return nil
	})
}

// Claim implements Store.
func (s *MemoryStore) Claim(_ context.Context, id, user, node string, conn uint64, from Resume) (Claim, error) {
	var c Claim
	err := s.with(id, func(l *Record, e *memEntry) error {
		if l.user != user {
			return fmt.Errorf("claim session %s: %w", id, ErrForbidden)
		}
		var nodes []string
		if e.nodes != nil {
			nodes = *e.nodes
		}
		for _, n := range nodes {
			if n != node {
				c.Nodes = append(c.Nodes, n)
			}
		}
		i := slices.Index(nodes, node)
		switch {
		case len(nodes) == 0:
			e.nodes, i = s.oneNode(node), 0 // shared, read-only
		case i < 0:
			ns := append(slices.Clip(nodes), node) // copies: nodes may be shared
			e.nodes, i = &ns, len(nodes)
		}
		e.hConn, e.hEpoch, e.hNode = conn, e.hEpoch+1, uint32(i)
		c.Epoch = uint64(e.hEpoch)
		e.dlv = max(e.dlv, min(from.Delivered, e.pos))
		after := e.dlv
		if from.HasLast {
			after = min(from.Last, e.pos)
			e.dlv = max(e.dlv, after)
		}
		c.Pos, c.After = e.pos, after
		x := e.data()
		c.Log, c.Missed = replayOf(x.log.all(), after, e.pos)
		if len(c.Log) > 0 {
			e.x.lent = max(e.x.lent, c.Log[len(c.Log)-1].Pos)
		}
		e.detached = 0
		s.activeLocked(e)
		return nil
	})
	return c, err
}

// SetDetached records when the session's last connection went (zero: one
// is attached): the memory budget trims the oldest detached sessions
// first.
func (s *MemoryStore) SetDetached(id string, at time.Time) {
	var ns int64
	if !at.IsZero() {
		ns = at.UnixNano()
	}
	_ = s.with(id, func(_ *Record, e *memEntry) error { e.detached = ns; return nil })
	if ns != 0 && s.bytes.Load() > s.lim.budget {
		s.kickTrim() // now trimmable: no need to wait for the next append
	}
}

// Holder implements Store.
func (s *MemoryStore) Holder(_ context.Context, id string) (Holder, error) {
	var h Holder
	err := s.with(id, func(_ *Record, e *memEntry) error { h = e.holder(); return nil })
	return h, err
}

// Touch implements Store.
func (s *MemoryStore) Touch(_ context.Context, id string) error {
	return s.with(id, func(_ *Record, e *memEntry) error { s.activeLocked(e); return nil })
}

// activeLocked records activity: updated time and TTL.
func (s *MemoryStore) activeLocked(e *memEntry) {
	now := s.now().UnixNano()
	e.updated = now
	e.expires = now + int64(s.lim.ttl)
}

// Ping implements Store: the memory store is always reachable until closed.
func (s *MemoryStore) Ping(context.Context) error {
	if s.isClosed() {
		return ErrClosed
	}
	return nil
}

// Len returns the number of sessions held (expired ones not yet swept
// included).
func (s *MemoryStore) Len() int {
	n := 0
	for i := range s.reg.shards {
		sh := &s.reg.shards[i]
		sh.mu.Lock()
		for l := range sh.m.all() {
			if l.mem != nil {
				n++
			}
		}
		sh.mu.Unlock()
	}
	return n
}

// Close stops the sweeper. Idempotent.
func (s *MemoryStore) Close() error {
	s.closeOnce.Do(func() { s.closed.Store(true); close(s.stop) })
	<-s.done
	return nil
}

// emptyContext is the context of a new session, shared: contexts are
// replaced (MergePatch returns a new slice), never changed in place, and
// Get returns copies.
var emptyContext = json.RawMessage("{}")

// oneNode returns a shared, read-only &[]string{node}, so that the
// sessions that only ever had this node share it.
func (s *MemoryStore) oneNode(node string) *[]string {
	s.nodesMu.Lock()
	defer s.nodesMu.Unlock()
	ns, ok := s.nodes[node]
	if !ok {
		if s.nodes == nil {
			s.nodes = make(map[string]*[]string)
		}
		ns = &[]string{node}
		s.nodes[node] = ns
	}
	return ns
}
