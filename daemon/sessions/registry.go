package sessions

import (
	"hash/maphash"
	"sync"
)

// regShards is the number of independently locked shards of the registry.
const regShards = 64

// The shard is the id's hash modulo regShards, its slot in the shard's
// index the rest of the hash (idIndex.home): regShards is 1<<homeShift.
const (
	_ uint = regShards - 1<<homeShift
	_ uint = 1<<homeShift - regShards
)

// registry is the node's one registry of sessions: every Record, in
// shards of compact id indexes. The Manager owns it; the memory store
// keeps its part of a session in the same Record (Record.mem), so with
// the memory store an idle session is one object and one index slot.
//
// A record is in the registry while the manager holds it (a connection, a
// request, a pending write: Record.releaseLocked lists them) or the
// memory store has the session (mem != nil). Lock order: a record's mu
// before its shard's mu, never the other way round.
type registry struct {
	m      *Manager // nil for a memory store opened alone (NewMemoryStore)
	seed   maphash.Seed
	shards [regShards]regShard
}

type regShard struct {
	mu sync.Mutex
	m  idIndex[Record, *Record] // guarded by mu
}

func newRegistry(m *Manager) *registry {
	r := &registry{m: m, seed: maphash.MakeSeed()}
	for i := range r.shards {
		r.shards[i].m.seed = r.seed // one hash picks the shard and the slot
	}
	return r
}

func (r *registry) shard(id string) *regShard {
	sh, _ := r.lookup(id)
	return sh
}

// lookup returns id's shard and the hash that picked it, with which the
// shard's index finds id (idIndex.getHashed) without hashing it again.
func (r *registry) lookup(id string) (*regShard, uint64) {
	h := maphash.String(r.seed, id)
	return &r.shards[h%regShards], h
}

// releaseLocked forgets l once nothing holds it on this node: no
// connection, request, pending write or kept detach, and not in the memory
// store. l.mu must be held; the caller still unlocks it.
func (r *registry) releaseLocked(l *Record) {
	if l.heldLocked() {
		return // held < 0: dead already
	}
	sh := r.shard(l.id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if l.mem != nil {
		return // the memory store still has the session
	}
	sh.m.del(l)
	l.held = -1 // dead
}

// release is releaseLocked for a caller that does not hold l.mu (the
// memory store, after it dropped the session).
func (r *registry) release(l *Record) {
	l.mu.Lock()
	if !l.dead() {
		r.releaseLocked(l)
	}
	l.mu.Unlock()
}

// all returns the registered records (a snapshot).
func (r *registry) all() []*Record {
	var ls []*Record
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for l := range sh.m.all() {
			ls = append(ls, l)
		}
		sh.mu.Unlock()
	}
	return ls
}

// Len returns the number of registered records.
func (r *registry) Len() int {
	n := 0
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		n += sh.m.Len()
		sh.mu.Unlock()
	}
	return n
}

// heldLocked reports whether this node holds l for more than the memory
// store: a connection, a request, a pending write, a kept detach (or l is
// dead already); l.mu held.
func (l *Record) heldLocked() bool {
	return l.out != nil || len(l.streams) > 0 || len(l.callsLocked()) > 0 || l.held != 0 || l.conns > 0 ||
		l.dlv() != 0 || l.detached() != 0
}
