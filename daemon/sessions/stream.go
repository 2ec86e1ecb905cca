package sessions

import (
	"context"
	"slices"
)

// Replay bounds: what a Stream keeps of its chunks for a client that resumes
// before the request ends. Past either bound the oldest chunks are
// forgotten, and a replay starts at the oldest kept one.
const (
	replayMaxChunks = 4096
	replayMaxBytes  = 4 << 20
)

// Stream is the output of one request in flight on this node. Its methods
// are called from the request's goroutine, in order: Chunk zero or more
// times, then End exactly once.
type Stream struct {
	m     *Manager
	l     *Record // the session's local state, alive while the stream is registered
	req   string
	order uint64
	run   *runRec // node-loss record (nodeloss.go); nil unless begun by BeginRoute on Redis

	// guarded by l.mu
	chunks [][]byte
	bytes  int
	ended  bool
	looked bool // the holder was looked up in the store once
}

// Begin registers a request in flight on this replica and returns its
// stream. Its output reaches the session's live connection wherever it is
// (this replica: Outlet.Send; another replica: relayed over the bus), and is
// recorded (in memory, bounded) for replay to a client that resumes before
// the request ends.
func (m *Manager) Begin(id, reqID string) *Stream {
	l := m.lockLocal(id, true)
	s := &Stream{m: m, l: l, req: reqID, order: m.begun.Add(1)}
	if old := l.streams[reqID]; old != nil {
		old.ended = true // dispatch never reuses an id in flight; be safe anyway
	}
	if l.streams == nil {
		l.streams = make(map[string]*Stream, 1)
	}
	l.streams[reqID] = s
	l.mu.Unlock()
	return s
}

// Chunk delivers an encoded chunk message and records it for replay. msg
// may be reused by the caller after return (it is copied).
//
// The chunk is recorded and routed (sent here, queued behind a bus replay
// under way, or picked for a relay) in one critical section of l.mu. A
// resume takes l.mu to replay what is recorded (Bind on this node,
// bus.onAttach for another one) and re-points the route in the same
// section, so the chunk is either in that replay or routed to the new
// connection after it, never both (a duplicated seq) and never neither.
// A newer holder found by the lookup is switched to as its attach would
// be (switchLocked), in the session's turn.
func (s *Stream) Chunk(msg []byte) {
	c := slices.Clone(msg)
	l, m := s.l, s.m
	l.mu.Lock()
	if s.ended {
		l.mu.Unlock()
		return
	}
	var (
		turn  bool // the session's turn is held: give it back at the end
		r     *remote
		outs  []busOut
		older Outlet
	)
	if l.out == nil && m.bus != nil && l.remote() == nil && !s.looked {
		// The session was never claimed elsewhere as far as this node
		// knows: ask the store once per stream (the rare case of a request
		// begun after its connection moved away), off the session's lock
		// and before the chunk is recorded.
		s.looked = true
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(m.ctx, m.opts.Redis.OpTimeout)
		h, err := m.store.Holder(ctx, l.id)
		cancel()
		// A newer holder elsewhere is switched to as its attach would
		// be (switchLocked: every stream's chunks replayed to it, this
		// one's before this chunk), in the session's turn, so that the
		// switch is ordered with this node's terminals (deliver).
		turn = err == nil && h.Node != m.node
		if turn {
			l.takeTurn(context.Background())
		}
		l.mu.Lock()
		if s.ended {
			l.mu.Unlock()
			if turn {
				l.giveTurn()
			}
			return
		}
		if err == nil && h.Epoch > uint64(l.epoch) {
			if h.Node != m.node {
				r, outs, older = m.switchLocked(l, h)
			} else {
				l.epoch = uint32(h.Epoch)
			}
		}
	}
	s.chunks = append(s.chunks, c)
	s.bytes += len(c)
	for len(s.chunks) > 1 && (len(s.chunks) > replayMaxChunks || s.bytes > replayMaxBytes) {
		s.bytes -= len(s.chunks[0])
		s.chunks[0] = nil
		s.chunks = s.chunks[1:]
	}
	var to Holder
	if l.out != nil {
		m.sendLocked(l, c, 0)
	} else if rm := l.remote(); m.bus != nil && rm != nil && rm.Epoch != 0 && rm.Node != m.node && !l.relayLocked(s.req, 0, c) {
		to = rm.Holder // not queued behind a replay under way: relayed now
	}
	l.mu.Unlock()
	if turn {
		l.giveTurn()
	}
	if older != nil {
		older.Kick()
	}
	if r != nil {
		m.bus.publishReplay(l, r, outs)
	}
	if to.Epoch != 0 {
		m.bus.relay(to, l.id, s.req, 0, c)
	}
}

// End writes the request's terminal message through Manager.Terminal
// (numbered, logged, delivered) and unregisters the stream. Later calls
// are ignored. For a request recorded for node loss (BeginRoute), the
// same store script settles the record: a run a surviving replica already
// ended with node_lost gets no second terminal; one the store cannot
// settle now is held and retried (nodeloss.go).
func (s *Stream) End(msg []byte) {
	l, m := s.l, s.m
	l.mu.Lock()
	if s.ended {
		l.mu.Unlock()
		return
	}
	s.ended = true
	l.held++ // the stream's hold passes to the terminal
	l.mu.Unlock()
	defer m.unhold(l)
	rt := m.runEnd(s) // NODELOSS HOOK
	_, err := m.terminal(m.ctx, l, s.req, msg, s, rt)
	m.endRunDone(s, msg, rt, err)
}

// unregisterLocked removes the stream from its session; l.mu held.
func (s *Stream) unregisterLocked() {
	l := s.l
	if l.streams[s.req] == s {
		delete(l.streams, s.req)
		if len(l.streams) == 0 {
			l.streams = nil
		}
	}
}

// replay returns the recorded chunks, oldest first; l.mu held.
func (s *Stream) replay() [][]byte { return s.chunks }
