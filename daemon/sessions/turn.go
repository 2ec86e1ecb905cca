package sessions

import (
	"context"
	"slices"
)

// The session's turn: an ordered queue, per session on this node, of the
// operations that number or claim the session in the store (Terminal,
// the node-loss take, the retries of terminals that waited for the store,
// Restore, and Bind's claim). Each one is a store round trip followed by
// a delivery under l.mu; they run one at a time, in the order they asked
// for the turn (FIFO), and no lock is held while one waits on the store.
//
// Why a queue and not a mutex (the former termMu): nothing that can wait
// on a store runs under a per-session lock. A turn is asked for under
// l.mu (a slot is reserved in the queue, O(1), never waiting), then l.mu
// is released; the caller waits on a channel of its own, which a waiter
// for Bind's claim gives up when its context ends (an attach behind a
// stalled store fails at its deadline instead of blocking). The turn is
// passed on, under l.mu, to the oldest waiter by closing its channel.
//
// Correctness argument (what Terminal and Bind rely on, delivery.go):
//
//  1. Mutual exclusion. turnBusy is read and set only under l.mu. A
//     caller holds the turn when it set busy itself (busy was false) or
//     when its channel was closed; a channel is closed only by next, and
//     only for the head of the queue, which is removed in the same
//     critical section; next is called exactly once per turn held (the
//     holder's release, or the abandoning waiter that finds its channel
//     already closed). So at any time at most one caller holds the turn:
//     busy stays true from the moment one holder takes it until a release
//     finds the queue empty.
//  2. Order. Waiters are appended under l.mu and handed the turn from the
//     head: turns are granted in the order they were asked for. A waiter
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
//     holding one (terminal, take, restore, retries and Bind's claim do
//     not call one another), and l.mu is only held for O(1) sections that
//     never wait. The sweeper ends many sessions' runs concurrently, each
//     on its own goroutine holding one turn.
//
// State, in the Record, guarded by its mu: turnBusy (a caller holds the
// turn) and turnQ (the waiting callers, oldest first; nil: none).

// takeTurn returns once the caller holds the session's turn (true), or
// when ctx ended first (false: the caller does not hold it). A caller
// that holds it must call giveTurn.
func (l *Record) takeTurn(ctx context.Context) bool {
	l.mu.Lock()
	if !l.turnBusy {
		l.turnBusy = true
		l.mu.Unlock()
		return true
	}
	ch := make(chan struct{})
	if l.turnQ == nil {
		l.turnQ = new([]chan struct{})
	}
	*l.turnQ = append(*l.turnQ, ch)
	l.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
	}
	l.mu.Lock()
	if l.turnQ != nil {
		if i := slices.Index(*l.turnQ, ch); i >= 0 {
			*l.turnQ = slices.Delete(*l.turnQ, i, i+1)
			if len(*l.turnQ) == 0 {
				l.turnQ = nil
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
	l.mu.Lock()
	if l.turnQ == nil {
		l.turnBusy = false
	} else {
		q := *l.turnQ
		ch := q[0]
		q[0] = nil
		if len(q) == 1 {
			l.turnQ = nil
		} else {
			*l.turnQ = q[1:]
		}
		close(ch) // the turn passes to ch's caller: turnBusy stays true
	}
	l.mu.Unlock()
}
