package sessions

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// waiters returns how many callers wait for l's turn.
func waiters(l *Record) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.turnQ() == nil {
		return 0
	}
	return len(*l.turnQ())
}

// TestTurnOrder: the turn is granted in the order it was asked for; a
// waiter whose context ends leaves the queue without the turn, and the
// others keep their order; the turn is free once everyone gave it back.
func TestTurnOrder(t *testing.T) {
	l := &Record{id: "s"}
	if !l.takeTurn(t.Context()) {
		t.Fatal("free turn not taken")
	}
	var (
		mu  sync.Mutex
		got []int
		wg  sync.WaitGroup
	)
	quit, stop := context.WithCancel(t.Context())
	for i := range 5 {
		ctx := t.Context()
		if i == 2 {
			ctx = quit
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !l.takeTurn(ctx) {
				return
			}
			mu.Lock()
			got = append(got, i)
			mu.Unlock()
			l.giveTurn()
		}()
		eventually(t, 5*time.Second, "waiter queued", func() bool { return waiters(l) == i+1 })
	}
	stop()
	eventually(t, 5*time.Second, "cancelled waiter gone", func() bool { return waiters(l) == 4 })
	l.giveTurn()
	wg.Wait()
	if !slices.Equal(got, []int{0, 1, 3, 4}) {
		t.Fatalf("turns granted in order %v, want [0 1 3 4]", got)
	}
	if l.turn.Load() != turnFree || l.turnQ() != nil {
		t.Fatalf("turn not free after everyone gave it back: state %d queue %v", l.turn.Load(), l.turnQ())
	}
}

// TestTurnExclusive: under -race, the turn orders every access to state
// it guards (a plain int here), with waiters that give up at random.
func TestTurnExclusive(t *testing.T) {
	l := &Record{id: "s"}
	var (
		n, in int
		wg    sync.WaitGroup
	)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				ctx, cancel := t.Context(), context.CancelFunc(func() {})
				if (i+j)%7 == 0 {
					ctx, cancel = context.WithTimeout(t.Context(), time.Duration(j%3)*20*time.Microsecond)
				}
				if l.takeTurn(ctx) {
					in++
					if in != 1 {
						t.Errorf("%d callers hold the turn", in)
					}
					n++
					runtime.Gosched() // let others queue up
					in--
					l.giveTurn()
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	if l.turn.Load() != turnFree || l.turnQ() != nil {
		t.Fatalf("turn not free at the end: state %d queue %v", l.turn.Load(), l.turnQ())
	}
	t.Logf("%d of 3200 turns taken (the others gave up waiting)", n)
}
