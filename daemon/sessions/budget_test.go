package sessions

import (
	"context"
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
