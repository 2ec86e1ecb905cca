package sessions

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Node loss (contract v1.1 section 4a; docs/sessions.md "Node loss"): every
// replica on the Redis store keeps a liveness key, records the requests it
// runs where a survivor can find them, and sweeps the records of replicas
// whose liveness lapsed: each orphaned request gets exactly one node_lost
// terminal, written by the one survivor whose compare-and-delete of the
// request's marker (in the session's slot) succeeded, in the same script
// that appends the terminal to the session's log (luaRunTerm). The normal
// end of a request goes through the same script, so a replica that was
// only cut off and comes back cannot add a second terminal, and no
// process can die between settling a run and logging its answer. A
// request counts as accepted once recorded (Stream.Recorded, waited for
// by dispatch before the backend call).
//
// The memory store serves one node: there is no survivor and nothing to
// record, so m.nl is nil and every hook below is a no-op.

// CodeNodeLost is the error code of the terminal a survivor writes for a
// request of a replica that stopped without draining (dispatch's table
// lists it too).
const CodeNodeLost = "node_lost"

const nodeLostMessage = "the replica running this request stopped without draining"

// Run record states (runRec.state).
const (
	runQueued  int32 = iota // begun, waiting for the recorder
	runSending              // the recorder is writing it
	runSent                 // the write was attempted (see runRec.sent)
	runEnded                // End was called
)

// runRec is a request begun on this node through BeginRoute.
type runRec struct {
	seq             uint64 // unique in the process (the inflight field)
	sid, req, route string
	data            []byte // the request's data when its route retries on node loss
	started         time.Time
	state           atomic.Int32
	sent            chan struct{} // closed once the recorder's write returned
	stored          bool          // the write was confirmed; set before sent is closed
}

// swapping is a rerun being handed over to this node (luaRunSwap): its
// record, written to this node's inflight hash before the swap, and
// whether an attempt may have run with its answer lost.
type swapping struct {
	rec   *runRec
	maybe bool
}

// owedEnd is a run this node took over for a rerun that was refused: it
// ends with node_lost through the normal end's script (the marker names
// this node's token).
type owedEnd struct {
	rec   *runRec
	maybe bool
}

// heldEnd is a terminal whose check could not reach the store: it waits,
// and is retried, so that it is neither lost nor doubled.
type heldEnd struct {
	s     *Stream
	msg   []byte
	maybe bool // an attempt may have run (runTerm.maybeDone)
}

// nodeLoss is the node-loss machinery of a Manager on the Redis store. It
// owns three goroutines (liveness, recorder, sweeper), stopped by close.
type nodeLoss struct {
	m     *Manager
	rs    *RedisStore
	token string // "<node>/<incarnation>"

	// The split of node_loss_after (docs/sessions.md, "Delay"): a crash
	// is seen when the dead node's key lapses, at most ttl after it, by a
	// sweep timed for that moment; the other half is left for the
	// sweep's writes and for scheduling on a loaded machine.
	after   time.Duration // sessions.node_loss_after
	ttl     time.Duration // liveness key TTL: after/2
	refresh time.Duration // liveness refresh period: after/10 (a key lapses only after five refreshes in a row failed or came late)
	sweep   time.Duration // sweep period: after/10 (besides the sweep timed for a key's lapse)

	mu    sync.Mutex
	queue []*runRec // begun, not yet written; guarded by mu
	ended []string  // inflight fields of settled runs, to remove; guarded by mu
	held  []heldEnd // guarded by mu
	// unsure: runs whose record write failed (it may still have landed)
	// and that ended: their marker is removed once the store answers.
	unsure []*runRec // guarded by mu
	kick   chan struct{}

	seq   atomic.Uint64         // run numbers
	rerun atomic.Pointer[Rerun] // set by SetRerun (dispatch), read by the sweeper

	// adopt: reruns this node took over (their marker names its token,
	// their inflight entry is written), waiting for the BeginRoute of the
	// Rerun hook; key "<sid> <req>"; guarded by mu.
	adopt map[string]*runRec

	sweepMu sync.Mutex           // one sweep at a time; guards seen, swaps and owing
	seen    map[string]string    // node -> live token whose records were read
	swaps   map[string]*swapping // reruns being handed over to this node, key "<sid> <req>"
	owing   []owedEnd            // reruns taken over and refused, whose node_lost is not written yet

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startNodeLoss writes this node's liveness key (an error fails Open: a
// node whose runs a survivor could not tell from orphans must not serve)
// and starts the goroutines.
func startNodeLoss(ctx context.Context, m *Manager, rs *RedisStore, after time.Duration) (*nodeLoss, error) {
	if after <= 0 {
		after = 10 * time.Second
	}
	var inc [8]byte
	_, _ = rand.Read(inc[:])
	n := &nodeLoss{m: m, rs: rs, token: m.node + "/" + hex.EncodeToString(inc[:]),
		after: after, ttl: after / 2, refresh: after / 10, sweep: after / 10,
		kick: make(chan struct{}, 1), seen: make(map[string]string),
		adopt: make(map[string]*runRec), swaps: make(map[string]*swapping)}
	// A few attempts: a fresh connection under load may miss one short
	// operation timeout.
	var prev string
	var err error
	for try := range 3 {
		if prev, err = rs.refreshAlive(ctx, m.node, n.token, n.ttl); err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(try+1) * 50 * time.Millisecond) // backoff between attempts, not synchronisation
	}
	if err != nil {
		return nil, err
	}
	if prev != "" {
		m.log.Warn("a previous process of this node stopped without draining: its requests end with node_lost",
			slog.String("node", m.node), slog.String("previous", prev))
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.wg.Add(3)
	go n.liveness()
	go n.recorder()
	go n.sweeper()
	return n, nil
}

// close stops the goroutines and, on a clean shutdown, removes the
// liveness key: a survivor then settles at once whatever is left.
func (n *nodeLoss) close() {
	n.cancel()
	n.wg.Wait()
	n.mu.Lock()
	held := len(n.held)
	n.held = nil
	n.mu.Unlock()
	if held > 0 {
		n.m.log.Error("terminal messages lost at close: session store unavailable to settle them", slog.Int("messages", held))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*n.rs.opTimeout)
	defer cancel()
	n.flushEnded(ctx)
	if err := n.rs.dropAlive(ctx, n.m.node, n.token); err != nil {
		n.m.log.Warn("node liveness not removed at close; it lapses by itself", slog.Any("err", err))
	}
}

// liveness refreshes the node's key every refresh period.
func (n *nodeLoss) liveness() {
	defer n.wg.Done()
	t := time.NewTicker(n.refresh)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		prev, err := n.rs.refreshAlive(n.ctx, n.m.node, n.token, n.ttl)
		switch {
		case err != nil:
			if n.ctx.Err() == nil {
				n.m.warn("node liveness refresh failed", slog.Any("err", err))
			}
		case prev == "":
			n.m.log.Warn("node liveness had lapsed: survivors may have ended this node's requests with node_lost",
				slog.String("node", n.m.node))
		case prev != n.token:
			n.m.log.Error("another process uses this node name: node names must be unique among replicas",
				slog.String("node", n.m.node), slog.String("other", prev))
		}
	}
}

// record queues a run for the recorder; it never blocks.
func (n *nodeLoss) record(sid, req, route string, data []byte) *runRec {
	r := &runRec{seq: n.seq.Add(1), sid: sid, req: req, route: route, data: data, started: time.Now(), sent: make(chan struct{})}
	n.mu.Lock()
	n.queue = append(n.queue, r)
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
	return r
}

// recordBatch bounds the runs written in one pipelined round trip.
const recordBatch = 512

// recorder writes queued runs in pipelined batches and retries held ends.
func (n *nodeLoss) recorder() {
	defer n.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.kick:
		case <-t.C:
			n.retryHeld()
		}
		for {
			n.mu.Lock()
			k := min(len(n.queue), recordBatch)
			batch := slices.Clone(n.queue[:k])
			n.queue = n.queue[k:]
			if len(n.queue) == 0 {
				n.queue = nil
			}
			n.mu.Unlock()
			if k == 0 {
				break
			}
			runs := batch[:0]
			for _, r := range batch {
				if r.state.CompareAndSwap(runQueued, runSending) {
					runs = append(runs, r)
				}
			}
			if len(runs) == 0 {
				continue
			}
			ok := n.rs.recordRuns(n.ctx, n.m.node, n.token, runs)
			for i, r := range runs {
				if !ok[i] && n.ctx.Err() == nil {
					n.m.warn("request not recorded in the session store: a crash of this node would leave it without node_lost",
						slog.String("session", r.sid), slog.String("request", r.req))
				}
				r.stored = ok[i]
				close(r.sent)
				r.state.CompareAndSwap(runSending, runSent)
			}
		}
		n.flushEnded(n.ctx)
	}
}

// flushEnded removes the inflight entries of settled runs, a batch per
// round trip; on failure they are kept for the next pass.
func (n *nodeLoss) flushEnded(ctx context.Context) {
	for {
		n.mu.Lock()
		k := min(len(n.ended), recordBatch)
		fields := slices.Clone(n.ended[:k])
		n.mu.Unlock()
		if k == 0 {
			return
		}
		if err := n.rs.clearEnded(ctx, n.m.node, fields); err != nil {
			if ctx.Err() == nil {
				n.m.warn("ended runs not cleared yet", slog.Any("err", err))
			}
			return
		}
		n.mu.Lock()
		n.ended = n.ended[k:]
		if len(n.ended) == 0 {
			n.ended = nil
		}
		n.mu.Unlock()
	}
}

// runEnd is the node-loss part of a request's end (see Stream.End): nil
// when its terminal is written as any other (no record, never written,
// or its write failed), else how the terminal's script settles the run
// (luaRunTerm: the marker is deleted in the same step as the terminal is
// logged, or the terminal is dropped when a survivor took the run over).
// Called on the request's goroutine with no lock held: it may wait for
// the recorder's write under way (one store round trip at most).
func (m *Manager) runEnd(s *Stream) *runTerm {
	n, r := m.nl, s.run
	if n == nil || r == nil {
		return nil
	}
	switch r.state.Swap(runEnded) {
	case runQueued, runEnded:
		return nil // never written: no survivor can know of it
	case runSending:
		select {
		case <-r.sent: // bounded by the store's op timeout
		case <-n.ctx.Done():
			return nil
		}
	}
	if !r.stored {
		// The write failed (the store was unreachable): no survivor can
		// have seen it, or, if it landed after all, the marker is removed
		// by the recorder before anyone takes it (unless this node is cut
		// off for longer than node_loss_after: docs/sessions.md, windows).
		n.mu.Lock()
		n.unsure = append(n.unsure, r)
		n.mu.Unlock()
		return nil
	}
	return &runTerm{token: n.token}
}

// endRunDone handles what the terminal of a recorded run (rt not nil)
// returned: the run's inflight entry is cleared once settled; a terminal
// that could not be settled is held and retried by the recorder.
func (m *Manager) endRunDone(s *Stream, msg []byte, rt *runTerm, err error) {
	n, r := m.nl, s.run
	if rt == nil || n == nil {
		return
	}
	switch {
	case errors.Is(err, errRunHeld):
		l := s.l
		l.mu.Lock()
		l.held++ // released by retryHeld
		l.mu.Unlock()
		n.mu.Lock()
		n.held = append(n.held, heldEnd{s: s, msg: slices.Clone(msg), maybe: rt.maybeDone || heldMaybeRan(err)})
		n.mu.Unlock()
		return
	case errors.Is(err, ErrClosed):
		return // logged; the entry stays for a survivor (the marker is still there)
	case errors.Is(err, errRunDropped):
		m.log.Warn("late terminal dropped: a surviving replica already ended this request with node_lost",
			slog.String("session", r.sid), slog.String("request", r.req))
	case errors.Is(err, errRunSettled):
		m.log.Warn("request end settled by an earlier attempt whose answer was lost: its terminal is in the log, replayed on resume",
			slog.String("session", r.sid), slog.String("request", r.req))
	}
	n.endedRun(r)
}

// heldMaybeRan reports whether the attempt that returned err (wrapping
// errRunHeld) may have run its script: a store error other than a refused
// dial; a hold behind waiting terminals ran nothing.
func heldMaybeRan(err error) bool {
	u, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return false // errRunHeld alone: nothing was sent
	}
	for _, e := range u.Unwrap() {
		if e != errRunHeld {
			return maybeRan(e)
		}
	}
	return false
}

// Recorded waits until the stream's node-loss record is in the store (or
// its write failed, or the manager closed) and reports whether it is.
// Dispatch calls it on the request's goroutine before calling the backend
// (contract v1.1 section 4a: a request is accepted once it is recorded,
// so a replica that dies after that leaves a record a survivor ends with
// node_lost, and one that dies before has started nothing: the request
// is not in the welcome's inflight list and has no terminal, the client
// sends it again). True at once for a stream without a record (memory
// store, Begin). The wait is the recorder's batch: one pipelined round
// trip shared by the requests begun meanwhile. Never call it on a poller
// or under a lock.
func (s *Stream) Recorded(ctx context.Context) bool {
	r := s.run
	if r == nil || s.m.nl == nil {
		return true
	}
	select {
	case <-r.sent:
		return r.stored
	case <-ctx.Done():
	case <-s.m.nl.ctx.Done():
	}
	return false
}

// endedRun queues the removal of r's inflight entry for the recorder.
func (n *nodeLoss) endedRun(r *runRec) {
	n.mu.Lock()
	n.ended = append(n.ended, runField(r.sid, r.seq, r.req))
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// clearUnsure removes the markers of ended runs whose record write failed
// (recorder goroutine); kept for the next pass while the store fails.
func (n *nodeLoss) clearUnsure() {
	n.mu.Lock()
	unsure := n.unsure
	n.unsure = nil
	n.mu.Unlock()
	for i, r := range unsure {
		owned, err := n.rs.endRun(n.ctx, n.token, r.sid, r.req)
		if err != nil {
			n.mu.Lock()
			n.unsure = append(n.unsure, unsure[i:]...)
			n.mu.Unlock()
			return
		}
		n.endedRun(r)
		if !owned {
			n.m.log.Error("duplicate terminal: a survivor ended this request with node_lost while this node, cut off from the store, delivered its own",
				slog.String("session", r.sid), slog.String("request", r.req))
		}
	}
}

// retryHeld settles held ends again, oldest first (recorder goroutine).
func (n *nodeLoss) retryHeld() {
	n.clearUnsure()
	n.mu.Lock()
	held := n.held
	n.held = nil
	n.mu.Unlock()
	for i, h := range held {
		rt := &runTerm{token: n.token, maybeDone: h.maybe}
		_, err := n.m.terminal(n.ctx, h.s.l, h.s.req, h.msg, h.s, rt)
		if errors.Is(err, errRunHeld) {
			held[i].maybe = h.maybe || heldMaybeRan(err)
			n.mu.Lock()
			n.held = append(held[i:], n.held...)
			n.mu.Unlock()
			return
		}
		n.m.unhold(h.s.l)
		n.m.endRunDone(h.s, h.msg, rt, err)
	}
}

// BeginRoute is Begin for a request of route that runs on its own
// goroutine: with the Redis store it is also recorded (asynchronously, in
// pipelined batches) as in flight on this node, so that a survivor ends it
// with node_lost if this node dies, or, when retry is not nil (the
// request's data, for a route with retry_on_node_loss), runs it again
// (see SetRerun). Its End then settles the record first (one store round
// trip). Begin alone records nothing (a terminal written at once, such as
// the inline echo's, needs no record).
func (m *Manager) BeginRoute(id, reqID, route string, retry []byte) *Stream {
	s := m.Begin(id, reqID)
	if m.nl != nil {
		if s.run = m.nl.adopted(id, reqID, retry); s.run == nil {
			s.run = m.nl.record(id, reqID, route, retry)
		}
	}
	return s
}

// Running returns the ids of the session's requests recorded as in flight
// on some replica (Redis store), or in flight on this node (memory store).
// Every accepted request (Stream.Recorded returned true) is listed until
// its terminal is in the log; one begun and not yet accepted may be
// missing.
func (m *Manager) Running(ctx context.Context, sessionID string) ([]string, error) {
	if m.nl != nil {
		return m.nl.rs.runningIn(ctx, sessionID)
	}
	l := m.lockLocal(sessionID, false)
	if l == nil {
		return nil, nil
	}
	defer l.mu.Unlock()
	var ids []string
	for _, s := range l.sortedStreams() {
		ids = append(ids, s.req)
	}
	return ids, nil
}

// SweepForTest runs one node-loss sweep now; false without a sweeper
// (memory store).
func (m *Manager) SweepForTest(ctx context.Context) bool {
	if m.nl == nil {
		return false
	}
	_ = m.nl.sweepOnce(ctx)
	return true
}
