package auth

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"
)

const (
	// ipShards spreads the per-IP table over this many locks, so that
	// handshakes from different addresses rarely contend.
	ipShards = 64
	// ipSweepEvery is how often a shard forgets its idle entries (no
	// connection, full bucket). The sweep runs lazily, on the handshake that
	// finds it due, under that shard's lock only.
	ipSweepEvery = 10 * time.Second
)

// ipKey returns the accounting key of a source address: the address itself
// for IPv4 (and IPv4-mapped IPv6), its /64 for IPv6, since one IPv6 host
// usually owns a whole /64 and would otherwise get unlimited addresses.
func ipKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, err := a.Prefix(64)
		if err == nil {
			return p.Addr()
		}
	}
	return a
}

// ipEntry is the state of one source address. Guarded by its shard's mu.
type ipEntry struct {
	conns  int    // connections admitted and not yet released
	gen    uint64 // the limits generation the bucket was built for
	bucket Bucket // handshake rate
}

type ipShard struct {
	mu        sync.Mutex
	m         map[netip.Addr]*ipEntry // guarded by mu
	lastSweep int64                   // unix ns, guarded by mu
	_         [40]byte                // keep shards on separate cache lines
}

// ipTable is the per-IP accounting: connections held and the handshake
// rate bucket of each source address.
type ipTable struct {
	shards [ipShards]ipShard
}

func (t *ipTable) shard(k netip.Addr) *ipShard {
	b := k.As16()
	h := binary.LittleEndian.Uint64(b[:8]) ^ binary.LittleEndian.Uint64(b[8:])
	h *= 0x9E3779B97F4A7C15
	return &t.shards[h>>(64-6)]
}

// acquire counts a new connection from a, or returns the refusal code:
// CodeTooManyConnections when a holds st.perIP connections already,
// CodeRateLimited when its handshake bucket is empty. A refused handshake
// holds nothing; one refused for the rate has spent no token.
func (t *ipTable) acquire(a netip.Addr, now time.Time, st *gateState) string {
	k := ipKey(a)
	s := t.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[netip.Addr]*ipEntry)
	}
	e := s.m[k]
	if e == nil {
		e = &ipEntry{gen: st.gen}
		e.bucket.Init(st.rate, st.burst)
		s.m[k] = e
	}
	if n := now.UnixNano(); n-s.lastSweep > int64(ipSweepEvery) {
		s.sweepLocked(now, e)
		s.lastSweep = n
	}
	if st.perIP > 0 && e.conns >= st.perIP {
		return CodeTooManyConnections
	}
	if st.rate > 0 {
		if e.gen != st.gen {
			e.bucket.Init(st.rate, st.burst)
			e.gen = st.gen
		}
		if !e.bucket.Allow(now) {
			return CodeRateLimited
		}
	}
	e.conns++
	return ""
}

// release gives back a connection counted by acquire. An address that was
// not counted (admitted while no per-IP limit was configured) is ignored.
func (t *ipTable) release(a netip.Addr, now time.Time) {
	k := ipKey(a)
	s := t.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[k]
	if e == nil {
		return
	}
	if e.conns > 0 {
		e.conns--
	}
	if e.conns == 0 && e.bucket.Full(now) {
		delete(s.m, k)
	}
}

// sweepLocked forgets idle entries except keep.
func (s *ipShard) sweepLocked(now time.Time, keep *ipEntry) {
	for k, e := range s.m {
		if e != keep && e.conns == 0 && e.bucket.Full(now) {
			delete(s.m, k)
		}
	}
}

// len returns the number of addresses tracked (tests, metrics).
func (t *ipTable) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
