package sessions

import (
	"context"
	"slices"
	"testing"
	"time"
)

// gatedClaim holds Store.Claim once the claim is written, until release
// is closed, after saying so on claimed: the session is the new
// connection's in the store while its node has not bound it yet (nor
// told the other nodes).
type gatedClaim struct {
	Store
	claimed chan struct{}
	release chan struct{}
}

func (g *gatedClaim) Claim(ctx context.Context, id, user, node string, conn uint64, from Resume) (Claim, error) {
	c, err := g.Store.Claim(ctx, id, user, node, conn, from)
	g.claimed <- struct{}{}
	<-g.release
	return c, err
}

func gateClaims(m *Manager) *gatedClaim {
	g := &gatedClaim{Store: m.store, claimed: make(chan struct{}, 1), release: make(chan struct{})}
	m.store = g // before any goroutine of m reads it
	return g
}

// gatedAppend holds a terminal's append once it is written, until release
// is closed, after saying so on appended.
type gatedAppend struct {
	onceAppender
	appended chan struct{}
	release  chan struct{}
}

func (g *gatedAppend) appendOnce(ctx context.Context, id string, msg []byte, at int, k onceKey) (Appended, error) {
	a, err := g.onceAppender.appendOnce(ctx, id, msg, at, k)
	g.appended <- struct{}{}
	<-g.release
	return a, err
}

// busBarrier returns once node to has handled every bus message from
// sent before the call (one channel, handled in order on one goroutine).
func busBarrier(t *testing.T, from, to *Manager) {
	t.Helper()
	const nonce = 1 << 62 // above any attach's
	ch := make(chan struct{}, 1)
	to.bus.acksMu.Lock()
	to.bus.acks[nonce] = ch
	to.bus.acksMu.Unlock()
	defer func() {
		to.bus.acksMu.Lock()
		delete(to.bus.acks, nonce)
		to.bus.acksMu.Unlock()
	}()
	msg, err := encodeBus(busMsg{T: busAck, K: nonce}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := from.bus.t.send(t.Context(), []busOut{{node: to.node, msg: msg}})[0]; r.err != nil || !r.received {
		t.Fatalf("barrier to %s: %v", to.node, r.err)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("barrier to %s not handled", to.node)
	}
}

// attachAsync resumes session id on m on a goroutine; the returned
// channel gets Attach's error.
func attachAsync(t *testing.T, m *Manager, id string, out Outlet) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, _, err := m.Attach(t.Context(), "alice", id, Resume{}, out, welcomeFn)
		done <- err
	}()
	return done
}

func waitAttach(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("attach: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("attach did not return")
	}
}

// TestResumeHolderLearntFromStore: the request's node A learns of the new
// holder B from the store (a terminal's append returns it, or a chunk's
// lookup) before B's attach message reaches A. The resumed connection
// still gets every chunk of A's other request, replayed in seq order then
// live, and the terminal A relayed to B while B had claimed but not yet
// bound the connection. Before: A raised its epoch on the store's word,
// then ignored the attach of that epoch (no replay: chunks 0 and 1
// missing), and B dropped the relay that came before its Bind bound the
// connection (r2's result missing).
func TestResumeHolderLearntFromStore(t *testing.T) {
	for _, b := range sharedBackends(t) {
		for _, via := range []string{"terminal", "chunk lookup"} {
			t.Run(b.name+"/"+via, func(t *testing.T) {
				a, bm := b.openManager(t, "A", testLimits), b.openManager(t, "B", testLimits)
				gate := gateClaims(bm)
				o0 := &fakeOutlet{}
				id, _ := attach(t, a, "alice", "", o0)
				s1 := a.Begin(id, "r1")
				s1.Chunk(chunkMsg("r1", 0))
				s2 := a.Begin(id, "r2")
				if via == "terminal" {
					s1.Chunk(chunkMsg("r1", 1))
				}
				a.Detach(id, o0, o0.acked()) // the connection dropped
				o1 := &fakeOutlet{}
				done := attachAsync(t, bm, id, o1)
				select {
				case <-gate.claimed:
				case <-time.After(5 * time.Second):
					t.Fatal("no claim")
				}
				// B holds the session in the store; A has not heard of it.
				if via == "terminal" {
					s2.End(resultMsg("r2")) // the append returns B as the holder
				} else {
					s1.Chunk(chunkMsg("r1", 1)) // no route known here: looked up
				}
				busBarrier(t, a, bm) // what A relayed is handled on B before it binds
				close(gate.release)
				waitAttach(t, done)
				s1.Chunk(chunkMsg("r1", 2))
				s1.End(resultMsg("r1"))
				if via == "chunk lookup" {
					s2.End(resultMsg("r2"))
				}
				eventually(t, 5*time.Second, "r1's result on the resumed connection", func() bool {
					_, r := seqsOf(t, o1.got(), "r1")
					return r
				})
				if seqs, _ := seqsOf(t, o1.got(), "r1"); !slices.Equal(seqs, []int{0, 1, 2}) {
					t.Errorf("r1: chunk seqs %v on the resumed connection, want [0 1 2]: %q", seqs, o1.got())
				}
				eventually(t, 5*time.Second, "r2's result on the resumed connection", func() bool {
					_, r := seqsOf(t, o1.got(), "r2")
					return r
				})
			})
		}
	}
}

// TestTerminalRacesAttach: a request's terminal on A against another
// node's resume, A's connection still attached (so no store lookup is
// involved).
//
//   - "claim first": B claims before A appends the terminal, and A handles
//     B's attach after its stream was removed. Before: A sent the result
//     to its own older connection, and the attach found no stream to
//     replay: the resumed connection got neither the chunks nor the
//     result (which was only in the log).
//   - "append first": A appends before B claims (the result is in the
//     claim's replay), and A handles the attach between the append and
//     the removal of the stream. Before: A replayed the stream's chunks
//     to B after the result.
func TestTerminalRacesAttach(t *testing.T) {
	for _, b := range sharedBackends(t) {
		t.Run(b.name+"/claim first", func(t *testing.T) {
			a, bm := b.openManager(t, "A", testLimits), b.openManager(t, "B", testLimits)
			gate := gateClaims(bm)
			o0 := &fakeOutlet{}
			id, _ := attach(t, a, "alice", "", o0)
			s := a.Begin(id, "r1")
			s.Chunk(chunkMsg("r1", 0))
			s.Chunk(chunkMsg("r1", 1))
			o1 := &fakeOutlet{}
			done := attachAsync(t, bm, id, o1)
			<-gate.claimed
			s.End(resultMsg("r1"))
			busBarrier(t, a, bm)
			close(gate.release)
			waitAttach(t, done)
			eventually(t, 5*time.Second, "r1's result on the resumed connection", func() bool {
				_, r := seqsOf(t, o1.got(), "r1")
				return r
			})
			if seqs, _ := seqsOf(t, o1.got(), "r1"); !slices.Equal(seqs, []int{0, 1}) {
				t.Errorf("chunk seqs %v on the resumed connection, want [0 1]: %q", seqs, o1.got())
			}
			if !o0.wasKicked() {
				t.Error("older connection not kicked")
			}
		})
		t.Run(b.name+"/append first", func(t *testing.T) {
			a, bm := b.openManager(t, "A", testLimits), b.openManager(t, "B", testLimits)
			gate := &gatedAppend{onceAppender: a.onceStore, appended: make(chan struct{}, 1), release: make(chan struct{})}
			a.onceStore = gate // before any terminal of a
			o0 := &fakeOutlet{}
			id, _ := attach(t, a, "alice", "", o0)
			s := a.Begin(id, "r1")
			s.Chunk(chunkMsg("r1", 0))
			s.Chunk(chunkMsg("r1", 1))
			ended := make(chan struct{})
			go func() {
				defer close(ended)
				s.End(resultMsg("r1"))
			}()
			<-gate.appended // in the log; the stream still registered
			o1 := &fakeOutlet{}
			done := attachAsync(t, bm, id, o1)
			// A handles B's attach now, or waits for the terminal's end.
			l := a.lockLocal(id, false)
			l.mu.Unlock()
			eventually(t, 5*time.Second, "B's attach handled on A, or waiting there", func() bool {
				select {
				case err := <-done:
					done2 := make(chan error, 1)
					done2 <- err
					done = done2
					return true
				default:
				}
				return l.turn.Load() == turnQueued
			})
			close(gate.release)
			<-ended
			waitAttach(t, done)
			busBarrier(t, a, bm)
			seqs, result := seqsOf(t, o1.got(), "r1") // fails on a chunk after the result
			if !result {
				t.Fatalf("no result on the resumed connection: %q", o1.got())
			}
			t.Logf("resumed connection: chunks %v before the result", seqs)
		})
	}
}

// TestAttachWaitingForTurnStallsNoOtherSession: an attach whose session's
// turn is held on this node (here a terminal's append that has not
// returned: a slow store) waits for it off the bus goroutine, so that the
// relays of the node's other sessions are still delivered meanwhile.
// Before: onAttach waited for the turn on the bus goroutine, and the
// chunk relayed to session Y's connection waited for session X's store
// round trip (any number of them: every holder queued before it).
func TestAttachWaitingForTurnStallsNoOtherSession(t *testing.T) {
	for _, b := range sharedBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			a, bm := b.openManager(t, "A", testLimits), b.openManager(t, "B", testLimits)
			oy := &fakeOutlet{}
			idY, _ := attach(t, a, "alice", "", oy)
			gate := &gatedAppend{onceAppender: a.onceStore, appended: make(chan struct{}, 1), release: make(chan struct{})}
			a.onceStore = gate // before any terminal of a
			o0 := &fakeOutlet{}
			idX, _ := attach(t, a, "alice", "", o0)
			s := a.Begin(idX, "r1")
			s.Chunk(chunkMsg("r1", 0))
			ended := make(chan struct{})
			go func() {
				defer close(ended)
				s.End(resultMsg("r1"))
			}()
			<-gate.appended // X's turn held on A
			released := false
			release := func() {
				if !released {
					released = true
					close(gate.release)
				}
			}
			defer release()
			done := attachAsync(t, bm, idX, &fakeOutlet{})
			l := a.lockLocal(idX, false)
			l.mu.Unlock()
			eventually(t, 5*time.Second, "B's attach of X waiting for X's turn on A", func() bool {
				return l.turn.Load() == turnQueued
			})
			// B runs a request of Y, held on A: its chunk is relayed to A.
			sy := bm.Begin(idY, "q1")
			sy.Chunk(chunkMsg("q1", 0))
			eventually(t, 3*time.Second, "Y's chunk relayed to A while X's turn is held", func() bool {
				seqs, _ := seqsOf(t, oy.got(), "q1")
				return slices.Equal(seqs, []int{0})
			})
			release()
			<-ended
			waitAttach(t, done)
			sy.End(resultMsg("q1"))
		})
	}
}
