package sessions

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// TestRegistryExpiryRace drives one session of the memory store through
// its TTL expiry (the sweeper, and store calls that find it expired) while
// connections resume and detach it, terminals append to it, and the
// manager restores it: run with -race. Once all of it stopped and the
// sweeper ran, no record is left that neither the manager holds nor the
// store has.
func TestRegistryExpiryRace(t *testing.T) {
	cfg := config.Sessions{Store: "memory", TTL: config.Duration(2 * time.Millisecond), MemoryBudgetBytes: 4 << 10}
	m, err := Open(context.Background(), cfg, "n1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := t.Context()
	first := &fakeOutlet{}
	rec, _, err := m.Bind(ctx, "alice", "", Resume{}, first, welcomeFn)
	if err != nil {
		t.Fatal(err)
	}
	id := rec.ID()
	m.Detach(id, first, 0)
	stop := time.Now().Add(300 * time.Millisecond)
	var wg sync.WaitGroup
	run := func(fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				fn()
			}
		}()
	}
	for range 2 {
		run(func() {
			out := &fakeOutlet{}
			l, resumed, err := m.Bind(ctx, "alice", id, Resume{}, out, welcomeFn)
			if errors.Is(err, ErrNotFound) {
				return // a fresh session expired before its claim (a 2 ms TTL)
			}
			if err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Millisecond)
			if resumed {
				m.Detach(id, out, 0)
			} else {
				m.Detach(l.ID(), out, 0)
			}
		})
	}
	run(func() {
		if _, err := m.Terminal(ctx, id, "r", resultMsg("r")); err != nil && !errors.Is(err, ErrNotFound) {
			t.Error(err)
		}
	})
	run(func() {
		// ErrNotFound: it expired again between the restore's steps.
		if err := m.Restore(ctx, id, "alice"); err != nil && !errors.Is(err, ErrNotFound) {
			t.Error(err)
		}
	})
	run(func() { _, _ = m.Get(ctx, id); m.Touch(id) })
	wg.Wait()
	eventually(t, time.Second, "records neither held nor stored released", func() bool {
		for _, l := range m.reg.all() {
			l.mu.Lock()
			sh := m.reg.shard(l.id)
			sh.mu.Lock()
			stray := !l.heldLocked() && l.mem == nil
			sh.mu.Unlock()
			l.mu.Unlock()
			if stray {
				return false
			}
		}
		return true
	})
}

// TestDetachRacingResume: a connection's Detach racing a resume of its
// session on this node must not leave the session, attached again,
// marked detached in the memory store (the budget trims what a detached
// session is owed; the admin page lists it).
func TestDetachRacingResume(t *testing.T) {
	m := memManager(t)
	ms := m.store.(*MemoryStore)
	ctx := t.Context()
	a := &fakeOutlet{}
	rec, _, err := m.Bind(ctx, "alice", "", Resume{}, a, welcomeFn)
	if err != nil {
		t.Fatal(err)
	}
	id := rec.ID()
	for i := range 2000 {
		b := &fakeOutlet{}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); m.Detach(id, a, 0) }()
		if _, _, err := m.Bind(ctx, "alice", id, Resume{}, b, welcomeFn); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		var det int64
		_ = ms.with(id, func(_ *Record, e *memEntry) error { det = e.detached; return nil })
		if m.Outlet(id) == Outlet(b) && det != 0 {
			t.Fatalf("iteration %d: session attached (to the resume) but marked detached in the store", i)
		}
		a = b
	}
}

// TestExpiredSessionDataFreed: a session the memory store dropped while
// its connection still holds the record leaves no log in the record's
// object (the store part lives in the same allocation).
func TestExpiredSessionDataFreed(t *testing.T) {
	cfg := config.Sessions{Store: "memory", TTL: config.Duration(20 * time.Millisecond)}
	m, err := Open(context.Background(), cfg, "n1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	out := &fakeOutlet{}
	rec, _, err := m.Bind(t.Context(), "alice", "", Resume{}, out, welcomeFn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Terminal(t.Context(), rec.ID(), "r", resultMsg("r")); err != nil {
		t.Fatal(err)
	}
	ms := m.store.(*MemoryStore)
	eventually(t, 2*time.Second, "the session expired", func() bool { return ms.Len() == 0 })
	sh := m.reg.shard(rec.ID())
	sh.mu.Lock()
	x := (*memRecord)(unsafe.Pointer(rec)).e.x
	sh.mu.Unlock()
	if x != nil {
		t.Fatalf("dropped session still holds %d log entries in its record", x.log.len())
	}
	m.Detach(rec.ID(), out, 0)
}
