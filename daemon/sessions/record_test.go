package sessions

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/events"
)

// registered counts the records the manager keeps for itself: a session
// of the memory store that nothing else holds is the store's, not counted.
func registered(m *Manager) int {
	n := 0
	for _, l := range m.reg.all() {
		l.mu.Lock()
		sh := m.reg.shard(l.id)
		sh.mu.Lock()
		stored := l.mem != nil
		sh.mu.Unlock()
		if !l.dead() && (l.heldLocked() || !stored) {
			n++
		}
		l.mu.Unlock()
	}
	return n
}

// TestRecordRequests: a session's record keeps dispatch's requests in
// flight (duplicate and cap checks, cancel), stays registered while one
// runs after its connection went, and is forgotten after the last ends.
func TestRecordRequests(t *testing.T) {
	for _, b := range managerBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			m := b.openManager(t, "n1", testLimits)
			o := &fakeOutlet{}
			rec, _, err := m.Bind(t.Context(), "alice", "", Resume{}, o, welcomeFn)
			if err != nil {
				t.Fatal(err)
			}
			if rec.streams != nil || rec.req.Load() != nil || rec.dx != nil {
				t.Fatal("an idle session's record holds maps or buffers")
			}
			if rec.User() != "alice" || rec.ID() == "" {
				t.Fatalf("record of %q/%q", rec.ID(), rec.User())
			}
			var cause error
			_, cancel := context.WithCancelCause(context.Background())
			if dup, full := rec.Register("a", func(err error) { cause = err; cancel(err) }, 1); dup || full {
				t.Fatalf("Register a: dup %v full %v", dup, full)
			}
			if dup, _ := rec.Register("a", cancel, 5); !dup {
				t.Fatal("a second a is not a duplicate")
			}
			if _, full := rec.Register("b", cancel, 1); !full {
				t.Fatal("b past the cap of 1 is not refused")
			}
			if rec.InFlight() != 1 || rec.Cancel("zz", nil) {
				t.Fatal("InFlight or Cancel of an unknown id wrong")
			}
			stop := errors.New("stop")
			if !rec.Cancel("a", stop) || !errors.Is(cause, stop) {
				t.Fatalf("Cancel a: cause %v", cause)
			}
			m.Detach(rec.ID(), o, o.acked())
			eventually(t, 5*time.Second, "cursor not written", func() bool { return m.cursorWritten(rec.ID()) })
			if m.lockLocal(rec.ID(), false) == nil {
				t.Fatal("the record was forgotten with a request in flight")
			}
			rec.mu.Unlock()
			if n := rec.Unregister("a"); n != 0 {
				t.Fatalf("Unregister left %d", n)
			}
			m.sweepDetached(timeNowPlus(m))
			if n := registered(m); n != 0 {
				t.Fatalf("%d records after the last request ended", n)
			}
		})
	}
}

// TestRecordHeldUntilEveryConnectionDetaches: a takeover on the same node
// keeps one record; it is forgotten only once both connections detached.
func TestRecordHeldUntilEveryConnectionDetaches(t *testing.T) {
	m := memManager(t)
	o1, o2 := &fakeOutlet{}, &fakeOutlet{}
	r1, _, err := m.Bind(t.Context(), "u", "", Resume{}, o1, welcomeFn)
	if err != nil {
		t.Fatal(err)
	}
	r2, resumed, err := m.Bind(t.Context(), "u", r1.ID(), Resume{}, o2, welcomeFn)
	if err != nil || !resumed || r2 != r1 {
		t.Fatalf("takeover: same record %v, resumed %v, err %v", r1 == r2, resumed, err)
	}
	if !o1.wasKicked() {
		t.Fatal("older connection not kicked")
	}
	if m.Outlet(r1.ID()) != o2 {
		t.Fatal("Outlet is not the newer connection")
	}
	m.Detach(r2.ID(), o2, 0) // the newer one goes first
	if registered(m) != 1 {
		t.Fatal("record forgotten while the older connection still holds it")
	}
	m.Detach(r1.ID(), o1, 0)
	if n := registered(m); n != 0 {
		t.Fatalf("%d records after both detached", n)
	}
}

func timeNowPlus(m *Manager) time.Time { return time.Now().Add(m.lim.ttl + time.Minute) }

func memManager(t testing.TB) *Manager {
	m, err := Open(context.Background(), config.Sessions{Store: "memory"}, "n1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestRecordSize guards the idle footprint: one record per session, in
// one size class of the allocator.
func TestRecordSize(t *testing.T) {
	// 144 is an allocator size class: the delivery fields (recDelivery,
	// made on first use) took the record from 184 bytes (a 192-byte
	// object) to 152; the turn's queue in recDelivery and the claim
	// epoch in 32 bits to 144, with the memory store's part (mem) in.
	if sz := unsafe.Sizeof(Record{}); sz > 144 {
		t.Fatalf("Record is %d bytes, want at most 144 (idle sessions)", sz)
	}
	// An idle session has no recDelivery: setting zero values makes none,
	// and clearing the last non-zero field drops it.
	var l Record
	l.setTurnQ(nil)
	l.setRemote(nil)
	l.setBl(nil)
	l.setAhead(nil)
	l.setDlv(0)
	l.setDetached(0)
	if l.dx != nil {
		t.Fatal("zero setters made a recDelivery")
	}
	l.setDlv(7)
	l.setDetached(9)
	if l.dlv() != 7 || l.detached() != 9 {
		t.Fatalf("dlv %d detached %d, want 7 and 9", l.dlv(), l.detached())
	}
	l.setDlv(0)
	if l.dx == nil {
		t.Fatal("recDelivery dropped while detached is set")
	}
	l.setDetached(0)
	if l.dx != nil {
		t.Fatal("recDelivery kept once all of it is zero")
	}
}

// TestMemRecordSize guards the memory store's idle footprint: an idle
// session is its record and the store's part in one 224-byte object (an
// allocator size class; what only a session with a context, history or
// log needs is made on first use), and the record is in one index.
func TestMemRecordSize(t *testing.T) {
	if sz := unsafe.Sizeof(memEntry{}); sz > 80 {
		t.Errorf("memEntry is %d bytes, want at most 80", sz)
	}
	if sz := unsafe.Sizeof(memRecord{}); sz > 224 {
		t.Errorf("memRecord is %d bytes, want at most 224 (idle sessions)", sz)
	}
	m := memManager(t)
	rec, _, err := m.Bind(t.Context(), "alice", "", Resume{}, nopOutlet{}, func(*events.Welcome) []byte { return nil })
	if err != nil {
		t.Fatal(err)
	}
	sh := m.reg.shard(rec.ID())
	sh.mu.Lock()
	stored := rec.mem
	sh.mu.Unlock()
	if stored == nil || unsafe.Pointer(stored) != unsafe.Pointer(&(*memRecord)(unsafe.Pointer(rec)).e) {
		t.Fatal("an idle session's store part is not in its record's object")
	}
	if n := m.reg.Len(); n != 1 {
		t.Fatalf("%d records registered for one session, want 1", n)
	}
}

// nopOutlet is an idle connection.
type nopOutlet struct{}

func (nopOutlet) Send([]byte) error                 { return nil }
func (nopOutlet) SendTerminal([]byte, uint64) error { return nil }
func (nopOutlet) Queued() int                       { return 0 }
func (nopOutlet) NotifyDrained(int, func())         {}
func (nopOutlet) Kick()                             {}
func (nopOutlet) Cut()                              {}
func (nopOutlet) Acked() uint64                     { return 0 }

// BenchmarkIdleSession reports what one idle attached session keeps on
// the heap in the session layer (its record with the memory store's part,
// its registry slot and its id), after a GC: "B/session".
func BenchmarkIdleSession(b *testing.B) {
	b.ReportMetric(idleSessionHeap(b, b.N), "B/session")
}

// TestIdleSessionHeap pins what an idle attached session keeps on the
// heap in the session layer: the 224-byte object (record and memory
// store's part), the id (32 B) and its index slot (~13 B at 20,000
// sessions over 64 shards of 512 slots): about 270 B. One size class
// more for the object (240 B), or a second object or index, fails it.
func TestIdleSessionHeap(t *testing.T) {
	per := idleSessionHeap(t, 20000)
	t.Logf("%.1f B per idle session", per)
	if per > 276 {
		t.Fatalf("an idle session keeps %.1f B of heap in the session layer, want at most 276", per)
	}
}

// idleSessionHeap binds n idle sessions of one manager with the memory
// store and returns the heap they keep, per session, after a GC.
func idleSessionHeap(tb testing.TB, n int) float64 {
	m := memManager(tb)
	welcome := func(*events.Welcome) []byte { return nil }
	recs := make([]*Record, 0, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if b, ok := tb.(*testing.B); ok {
		b.ResetTimer()
	}
	for range n {
		rec, _, err := m.Bind(context.Background(), "user", "", Resume{}, nopOutlet{}, welcome)
		if err != nil {
			tb.Fatal(err)
		}
		recs = append(recs, rec)
	}
	if b, ok := tb.(*testing.B); ok {
		b.StopTimer()
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(recs)
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)-int64(cap(recs))*8) / float64(n)
}
