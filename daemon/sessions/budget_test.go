package sessions

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/events"
)

// TestTrimToBudgetOrder: past the budget the memory store trims, oldest
// detached first, what detached peers already received, then what
// detached sessions are owed, then what attached peers received; never
// what an attached session is owed.
func TestTrimToBudgetOrder(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default().Sessions
	cfg.MemoryBudgetBytes = 1 << 30 // while the logs are built
	s := NewMemoryStore(cfg, testLog(t))
	defer s.Close()
	msg := events.AppendResult(nil, "r", []byte(`"`+strings.Repeat("x", 1000)+`"`))
	at := events.PosIndex(msg)
	build := func(delivered uint64, detached time.Time) string {
		t.Helper()
		se, err := s.Create(ctx, "u")
		if err != nil {
			t.Fatal(err)
		}
		for range 4 {
			if _, err := s.Append(ctx, se.ID, msg, at); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Delivered(ctx, se.ID, delivered); err != nil {
			t.Fatal(err)
		}
		s.SetDetached(se.ID, detached)
		return se.ID
	}
	t0 := time.Now()
	older := build(2, t0)                  // detached first: 2 received, 2 owed
	newer := build(2, t0.Add(time.Second)) // detached later: 2 received, 2 owed
	attached := build(2, time.Time{})      // attached: 2 received, 2 owed
	entry := int64(len(events.AppendPos(nil, msg, at, 1)))
	logged := func(id string) (first uint64, n int) {
		t.Helper()
		les, err := s.ReadLog(ctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(les) > 0 {
			first = les[0].Pos
		}
		return first, len(les)
	}
	cases := []struct {
		name      string
		keep      int64 // entries' worth of bytes under 90 % of the budget
		wantLogs  [3]int
		wantFreed int64
	}{
		// Enough room for all but the four received entries of the
		// detached sessions: those go first, older and newer alike.
		{"received of detached", 8, [3]int{2, 2, 4}, 4},
		// Room for 5: then what the older detached session is owed, and
		// of the newer's only its oldest: no more than needed.
		{"owed of detached, oldest first", 5, [3]int{0, 1, 4}, 3},
		// Room for 2: the rest the newer is owed, then the attached
		// session's received part.
		{"received of attached", 2, [3]int{0, 0, 2}, 3},
	}
	for _, c := range cases {
		s.lim.budget = (c.keep*entry + entry/2) * 10 / 9
		freed := s.trimToBudget()
		var got [3]int
		for i, id := range []string{older, newer, attached} {
			_, got[i] = logged(id)
		}
		if got != c.wantLogs || freed != c.wantFreed*entry {
			t.Errorf("%s: logs %v freed %d B, want %v and %d B", c.name, got, freed, c.wantLogs, c.wantFreed*entry)
		}
	}
	if first, n := logged(attached); first != 3 || n != 2 {
		t.Errorf("attached log: first %d, %d entries; want what it is owed, 3..4", first, n)
	}
	// A v1 resume of the older session: the two it was owed are missed.
	c, err := s.Claim(ctx, older, "u", "n", 1, Resume{})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Log) != 0 || c.Missed != 2 {
		t.Errorf("resume of the trimmed session: replay %d, missed %d; want 0 and 2", len(c.Log), c.Missed)
	}
}

// TestOSReturn: freed memory goes back to the OS only after a large
// release, at most once per period; a release that came too soon is done
// at a later tick.
func TestOSReturn(t *testing.T) {
	calls := 0
	r := osReturn{min: 100, every: 10 * time.Second, free: func() { calls++ }}
	t0 := time.Now()
	steps := []struct {
		n     int64
		at    time.Duration
		want  bool
		calls int
	}{
		{50, 0, false, 0},               // small
		{60, 0, true, 1},                // 110 freed in all
		{500, time.Second, false, 1},    // too soon
		{0, 5 * time.Second, false, 1},  // still too soon
		{0, 11 * time.Second, true, 2},  // the waiting return
		{0, 30 * time.Second, false, 2}, // nothing freed since
	}
	for i, st := range steps {
		if got := r.freed(st.n, t0.Add(st.at)); got != st.want || calls != st.calls {
			t.Errorf("step %d: freed(%d) = %v with %d returns, want %v and %d", i, st.n, got, calls, st.want, st.calls)
		}
	}
	if d := newOSReturn(256 << 20); d.min != 16<<20 || d.every != 10*time.Second || d.free == nil {
		t.Errorf("newOSReturn(256 MiB) = min %d every %v", d.min, d.every)
	}
}

// FuzzTrimToBudget: whatever the sessions, their logs, cursors and
// detach times, a trim keeps each log contiguous and ending at the
// session's position, keeps the byte count exact, never drops what an
// attached session is owed, reports what it freed, and stops at 90 % of
// the budget unless nothing more may go.
func FuzzTrimToBudget(f *testing.F) {
	f.Add([]byte{3, 10, 2, 1, 5, 0, 7, 9, 4, 1}, uint16(2000))
	f.Add([]byte{8, 8, 8, 0, 0, 0, 1, 1, 1}, uint16(100))
	f.Fuzz(func(t *testing.T, spec []byte, budget uint16) {
		ctx := context.Background()
		cfg := config.Default().Sessions
		cfg.MemoryBudgetBytes = 1 << 40
		s := NewMemoryStore(cfg, slog.New(slog.DiscardHandler))
		defer s.Close()
		type sess struct {
			id       string
			n, dlv   uint64
			attached bool
		}
		var ss []sess
		t0 := time.Now()
		// Three bytes a session: entries (1..16), delivered, detached
		// order (0: attached).
		for i := 0; i+2 < len(spec) && len(ss) < 16; i += 3 {
			n := uint64(spec[i]%16) + 1
			se, err := s.Create(ctx, "u")
			if err != nil {
				t.Fatal(err)
			}
			for k := range n {
				msg := events.AppendResult(nil, "r", []byte(`"`+strings.Repeat("y", int(k*37%200))+`"`))
				if _, err := s.Append(ctx, se.ID, msg, events.PosIndex(msg)); err != nil {
					t.Fatal(err)
				}
			}
			dlv := uint64(spec[i+1]) % (n + 1)
			if err := s.Delivered(ctx, se.ID, dlv); err != nil {
				t.Fatal(err)
			}
			var at time.Time
			if spec[i+2] != 0 {
				at = t0.Add(time.Duration(spec[i+2]) * time.Millisecond)
			}
			s.SetDetached(se.ID, at)
			ss = append(ss, sess{se.ID, n, dlv, at.IsZero()})
		}
		s.lim.budget = int64(budget) + 1
		before := s.Bytes()
		freed := s.trimToBudget()
		var sum int64
		canGo := false // something trimmable is left
		for _, x := range ss {
			les, err := s.ReadLog(ctx, x.id, 0)
			if err != nil {
				t.Fatal(err)
			}
			se, err := s.Get(ctx, x.id)
			if err != nil {
				t.Fatal(err)
			}
			if string(se.Context) != "{}" {
				sum += int64(len(se.Context)) // counted too, never trimmed (the empty context is shared, not counted)
			}
			for k, le := range les {
				if k > 0 && le.Pos != les[k-1].Pos+1 {
					t.Fatalf("log of %s not contiguous: %d after %d", x.id, le.Pos, les[k-1].Pos)
				}
				sum += int64(len(le.Msg))
				if !x.attached || le.Pos <= x.dlv {
					canGo = true
				}
			}
			if len(les) > 0 && les[len(les)-1].Pos != x.n {
				t.Fatalf("log of %s ends at %d, want %d", x.id, les[len(les)-1].Pos, x.n)
			}
			if x.attached && uint64(len(les)) < x.n-x.dlv {
				t.Fatalf("attached %s: %d entries left, owed %d", x.id, len(les), x.n-x.dlv)
			}
		}
		if sum != s.Bytes() || freed != before-s.Bytes() {
			t.Fatalf("bytes %d counted, %d in the logs; freed %d of %d", s.Bytes(), sum, freed, before)
		}
		if target := s.lim.budget / 10 * 9; before > s.lim.budget && s.Bytes() > target && canGo {
			t.Fatalf("stopped at %d B over the target %d B with something left to trim", s.Bytes(), target)
		}
	})
}
