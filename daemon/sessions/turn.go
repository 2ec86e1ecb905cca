package sessions

import (
	"context"
	"slices"
)

// The session's turn: an ordered queue, per session on this node, of the
// operations that number or claim the session in the store (Terminal,
// the node-loss take, the retries of terminals that waited for the store,
// Restore, and Bind's claim), and of those that act on another node's
// claim (the bus's attach handling, and a stream's switch to a holder it
// looked up: ordered with the terminals here, see deliver). Each one is a
// store round trip (or, for an attach, none) followed by a delivery under
// l.mu; they run one at a time, in the order they asked for the turn
// (FIFO), and no lock is held while one waits on the store.
//
// Why a queue and not a mutex (the former termMu): nothing that can wait
// on a store runs under a per-session lock. A turn is taken by one
// compare-and-swap when free; otherwise a slot is reserved in the queue
// under l.mu (O(1), never waiting), then l.mu is released and the caller
// waits on a channel of its own, which a waiter for Bind's claim gives up
// when its context ends (an attach behind a stalled store fails at its
// deadline instead of blocking). The turn is passed on, under l.mu, to
// the oldest waiter by closing its channel. What a turn holds across its
// round trips (the store's, and a relay's publish to the holder's node in
// deliver) is the session's position in this node's sequence, not a lock
// any other path needs: l.mu, which connection workers and the poller
// take, is free meanwhile.
//
// Correctness argument (what Terminal and Bind rely on, delivery.go):
//
//  1. Mutual exclusion. A caller holds the turn when its compare-and-
//     swap moved it from free to held, or when its channel was closed; a
//     channel is closed only by giveTurn, and only for the head of the
//     queue, which is removed in the same critical section, with the
//     state left not free; giveTurn is called exactly once per turn held
//     (the holder's release, or the abandoning waiter that finds its
//     channel already closed). The state is free only after a release
//     that found no waiter: by compare-and-swap from held (no waiter can
//     be queued then: queueing first moves held to queued, under l.mu),
//     or under l.mu with the queue empty. So at any time at most one
//     caller holds the turn.
//  2. Order. Waiters are appended under l.mu and handed the turn from the
//     head: turns are granted in the order the waiters queued (a caller
//     whose first compare-and-swap failed can be overtaken by a newcomer's
//     before it queues; no rule here depends on the order of calls). A waiter
//     that gives up removes itself under l.mu before the turn reaches it,
//     or, if the turn reached it first, passes it on at once: the turn is
//     never lost and nobody else is skipped.
//  3. What exclusion buys (what termMu gave before): a terminal's turn
//     (append, then deliver) and Bind's turn (claim, then bind the new
//     connection under l.mu) never overlap on this node. If the
//     terminal's turn came first, it was appended before the claim: its
//     position is <= the claim's Pos, so it is in the claim's replay; it
//     was delivered before the binding, to the older connection (whose
//     takeover backlog then drops it from the replay if that peer
//     acknowledged it) or to none. If it came after, it was appended after
//     the claim (position > Pos, not in the replay) and is delivered to the
//     new connection. So no terminal of this node is both replayed and
//     sent live to one connection, and none is neither. Terminals that
//     another replica produces reach this node by relay, as before (they
//     were never under termMu either). And since turns are FIFO, the
//     terminals of one session produced here are numbered in the order
//     they asked for the turn and delivered in position order (deliver
//     runs inside the turn; the connection's queue is FIFO).
//  4. No deadlock. A holder never asks for the turn of any session while
//     holding one (terminal, take, restore, retries, Bind's claim, the
//     attach handling and a stream's switch do not call one another), and
//     l.mu is only held for O(1) sections that never wait. A holder may
//     publish on the bus (deliver's relay and replay) but never waits for
//     a node's bus goroutine to handle the message (a send is answered on
//     receipt; only a NATS send to a node whose 4096-message inbox is full
//     waits, and then for one operation timeout at most); the bus
//     goroutine itself never waits for a turn (an attach whose turn is
//     busy waits on a goroutine of its own, bus.onAttach), and Bind
//     announces its claim (and waits for acks) after giving its turn
//     back. The sweeper ends many sessions' runs concurrently, each on
//     its own goroutine holding one turn.
//
// State, in the Record: turn (atomic: turnFree, turnHeld, or turnQueued:
// held with callers waiting) and turnQ (the waiting callers, oldest
// first; nil: none; guarded by mu). The uncontended path is one
// compare-and-swap each way and takes no lock; a caller that must wait
// queues itself under l.mu, and the holder that sees turnQueued hands
// the turn over under l.mu. turnQueued is set only under l.mu, by the
// caller about to queue, and left only under l.mu, when the queue
// empties: so a release by compare-and-swap (turnHeld -> turnFree) never
// leaves a waiter behind.
const (
	turnFree int32 = iota
	turnHeld
	turnQueued
)

// takeTurn returns once the caller holds the session's turn (true), or
// when ctx ended first (false: the caller does not hold it). A caller
// that holds it must call giveTurn.
func (l *Record) takeTurn(ctx context.Context) bool {
	if l.turn.CompareAndSwap(turnFree, turnHeld) {
		return true
	}
	l.mu.Lock()
	for queued := false; !queued; {
		switch l.turn.Load() {
		case turnFree:
			if l.turn.CompareAndSwap(turnFree, turnHeld) {
				l.mu.Unlock()
				return true
			}
		case turnHeld:
			queued = l.turn.CompareAndSwap(turnHeld, turnQueued)
		default:
			queued = true
		}
	}
	ch := make(chan struct{})
	if l.turnQ() == nil {
		l.setTurnQ(new([]chan struct{}))
	}
	*l.turnQ() = append(*l.turnQ(), ch)
	l.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
	}
	l.mu.Lock()
	if q := l.turnQ(); q != nil {
		if i := slices.Index(*q, ch); i >= 0 {
			*q = slices.Delete(*q, i, i+1)
			if len(*q) == 0 {
				l.setTurnQ(nil)
				l.turn.Store(turnHeld) // still held, by someone else, with no waiter
			}
			l.mu.Unlock()
			return false
		}
	}
	l.mu.Unlock()
	l.giveTurn() // it reached us meanwhile: pass it on
	return false
}

// giveTurn passes the turn to the oldest waiter, or frees it.
func (l *Record) giveTurn() {
	if l.turn.CompareAndSwap(turnHeld, turnFree) {
		return
	}
	l.mu.Lock()
	if l.turnQ() == nil {
		l.turn.Store(turnFree) // the last waiter gave up meanwhile
	} else {
		q := *l.turnQ()
		ch := q[0]
		q[0] = nil
		if len(q) == 1 {
			l.setTurnQ(nil)
			l.turn.Store(turnHeld) // by ch's caller, with no waiter
		} else {
			*l.turnQ() = q[1:]
		}
		close(ch) // the turn passes to ch's caller
	}
	l.mu.Unlock()
}
