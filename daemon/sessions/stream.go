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
	l     *local // the session's local state, alive while the stream is registered
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
func (s *Stream) Chunk(msg []byte) {
	c := slices.Clone(msg)
	l := s.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if s.ended {
		return
	}
	s.chunks = append(s.chunks, c)
	s.bytes += len(c)
	for len(s.chunks) > 1 && (len(s.chunks) > replayMaxChunks || s.bytes > replayMaxBytes) {
		s.bytes -= len(s.chunks[0])
		s.chunks[0] = nil
		s.chunks = s.chunks[1:]
	}
	s.deliverLocked(c, false)
}

// End delivers the encoded terminal message: on the session's live
// connection when one can take it, else into the session's outbox (the
// terminal alone: it carries the request's final value; see
// docs/sessions.md). Later calls are ignored.
func (s *Stream) End(msg []byte) {
	// NODELOSS HOOK (keep at merge, in front of Manager.Terminal): a run a
	// surviving replica already ended with node_lost gets no second
	// terminal; one whose check cannot reach the store is held and retried.
	if !s.m.settleRun(s, msg) {
		return
	}
	c := slices.Clone(msg)
	l, m := s.l, s.m
	l.mu.Lock()
	defer l.mu.Unlock()
	if s.ended {
		return
	}
	s.ended = true
	if l.streams[s.req] == s {
		delete(l.streams, s.req)
		if len(l.streams) == 0 {
			l.streams = nil
		}
	}
	if !s.deliverLocked(c, true) {
		m.toOutboxLocked(l, c)
	}
	m.releaseLocked(l)
}

// replay returns the recorded chunks, oldest first; l.mu held.
func (s *Stream) replay() [][]byte { return s.chunks }

// deliverLocked sends msg to the session's connection: directly when it is
// on this node, else relayed to the holder's node. It reports whether the
// message was handed to a connection (or, for a relay, to the holder's
// node, which then owns a terminal). l.mu held.
func (s *Stream) deliverLocked(msg []byte, final bool) bool {
	l, m := s.l, s.m
	if l.out != nil {
		return l.out.Send(msg) == nil
	}
	if m.bus == nil {
		return false
	}
	if l.remote.Epoch == 0 && !s.looked {
		// The session was never claimed elsewhere as far as this node
		// knows: ask the store once per stream (the rare case of a request
		// begun after its connection moved away).
		s.looked = true
		ctx, cancel := context.WithTimeout(m.ctx, m.opts.Redis.OpTimeout)
		h, err := m.store.Holder(ctx, l.id)
		cancel()
		if err == nil && h.Epoch > l.epoch {
			l.epoch = h.Epoch
			if h.Node != m.node {
				l.remote = h
			}
		}
	}
	if l.remote.Epoch == 0 || l.remote.Node == m.node {
		return false
	}
	return m.bus.relay(l.remote, l.id, s.req, final, msg)
}
