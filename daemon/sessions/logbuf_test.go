package sessions

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/events"
)

// logTerminal returns the terminal of request n (about size bytes), as
// dispatch encodes it, and its PosIndex.
func logTerminal(n, size int) ([]byte, int) {
	id := fmt.Sprintf("r%d", n)
	msg := events.AppendResult(nil, id, []byte(`"`+strings.Repeat(string(rune('a'+n%26)), size)+`"`))
	return msg, events.PosIndex(msg)
}

// TestMemoryLogReusesDroppedBuffers: a full replay log writes each new
// terminal into the buffer of the entry it drops (no allocation per
// append), and the log still holds exactly the newest replay_max
// terminals, each with its own content and position.
func TestMemoryLogReusesDroppedBuffers(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default().Sessions
	cfg.ReplayMax = 8
	s := NewMemoryStore(cfg, testLog(t))
	defer s.Close()
	se, err := s.Create(ctx, "u")
	if err != nil {
		t.Fatal(err)
	}
	// The terminals, built beforehand: the measured appends allocate
	// nothing of their own.
	const total = 300
	msgs := make([][]byte, total)
	ats := make([]int, total)
	for i := range msgs {
		msgs[i], ats[i] = logTerminal(i, 1000)
	}
	n := 0
	var last Appended
	appendOne := func() {
		var err error
		if last, err = s.Append(ctx, se.ID, msgs[n], ats[n]); err != nil {
			t.Fatal(err)
		}
		n++
	}
	for range 3 * cfg.ReplayMax {
		appendOne()
		if want := events.AppendPos(nil, msgs[n-1], ats[n-1], uint64(n)); !bytes.Equal(last.Msg, want) {
			t.Fatalf("Append #%d returned %.60q, want %.60q", n, last.Msg, want)
		}
	}
	if allocs := testing.AllocsPerRun(200, appendOne); allocs != 0 {
		t.Errorf("Append to a full log: %v allocations, want 0", allocs)
	}
	if want := events.AppendPos(nil, msgs[n-1], ats[n-1], uint64(n)); !bytes.Equal(last.Msg, want) {
		t.Fatalf("Append #%d returned %.60q, want %.60q", n, last.Msg, want)
	}
	les, err := s.ReadLog(ctx, se.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(les) != cfg.ReplayMax {
		t.Fatalf("log holds %d entries, want %d", len(les), cfg.ReplayMax)
	}
	for i, le := range les {
		pos := n - cfg.ReplayMax + 1 + i
		msg, at := logTerminal(pos-1, 1000)
		if want := events.AppendPos(nil, msg, at, uint64(pos)); le.Pos != uint64(pos) || !bytes.Equal(le.Msg, want) {
			t.Errorf("entry %d: pos %d %.60q, want pos %d %.60q", i, le.Pos, le.Msg, pos, want)
		}
	}
}

// TestMemoryLogLentEntriesStay: the entries a Claim or ReadLog handed out
// (a replay that is sent after the lock is released) keep their bytes
// while later appends drop them from the log: their buffers are never
// reused.
func TestMemoryLogLentEntriesStay(t *testing.T) {
	ctx := context.Background()
	for _, how := range []string{"claim", "readlog"} {
		t.Run(how, func(t *testing.T) {
			cfg := config.Default().Sessions
			cfg.ReplayMax = 4
			s := NewMemoryStore(cfg, testLog(t))
			defer s.Close()
			se, err := s.Create(ctx, "u")
			if err != nil {
				t.Fatal(err)
			}
			msgs := make([][]byte, 200)
			ats := make([]int, len(msgs))
			for i := range msgs {
				msgs[i], ats[i] = logTerminal(i, 500)
			}
			n := 0
			appendN := func(k int) {
				for range k {
					if _, err := s.Append(ctx, se.ID, msgs[n], ats[n]); err != nil {
						t.Fatal(err)
					}
					n++
				}
			}
			appendN(2 * cfg.ReplayMax) // full: appends now reuse
			var lent []LogEntry
			if how == "claim" {
				c, err := s.Claim(ctx, se.ID, "u", "n1", 1, Resume{})
				if err != nil {
					t.Fatal(err)
				}
				lent = c.Log
			} else if lent, err = s.ReadLog(ctx, se.ID, 0); err != nil {
				t.Fatal(err)
			}
			if len(lent) != cfg.ReplayMax {
				t.Fatalf("%s returned %d entries, want %d", how, len(lent), cfg.ReplayMax)
			}
			want := make([][]byte, len(lent))
			for i, le := range lent {
				want[i] = bytes.Clone(le.Msg)
			}
			appendN(3 * cfg.ReplayMax) // every lent entry dropped, and more
			for i, le := range lent {
				if !bytes.Equal(le.Msg, want[i]) {
					t.Errorf("lent entry %d (pos %d) changed: %.60q, want %.60q", i, le.Pos, le.Msg, want[i])
				}
			}
			// Entries numbered after the loan are reused again.
			if allocs := testing.AllocsPerRun(50, func() { appendN(1) }); allocs != 0 {
				t.Errorf("Append after the lent entries left the log: %v allocations, want 0", allocs)
			}
		})
	}
}

// TestMemoryLogSpareFits: a buffer is reused only when the new terminal
// fits and the buffer is not more than twice its size, so that a log of
// small terminals does not keep large buffers.
func TestMemoryLogSpareFits(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default().Sessions
	cfg.ReplayMax = 2
	s := NewMemoryStore(cfg, testLog(t))
	defer s.Close()
	se, err := s.Create(ctx, "u")
	if err != nil {
		t.Fatal(err)
	}
	add := func(n, size int) []byte {
		t.Helper()
		msg, at := logTerminal(n, size)
		a, err := s.Append(ctx, se.ID, msg, at)
		if err != nil {
			t.Fatal(err)
		}
		return a.Msg
	}
	big := add(0, 4000)
	add(1, 4000)
	small := add(2, 100) // drops the 4000-byte entry: too large to reuse
	if cap(small) >= 2000 {
		t.Errorf("a 100-byte terminal got a %d-byte buffer", cap(small))
	}
	if &big[:1][0] == &small[:1][0] {
		t.Error("a 100-byte terminal reused a 4000-byte buffer")
	}
	add(3, 4000)
	larger := add(4, 200) // drops the 100-byte entry: too small
	if len(larger) < 200 {
		t.Fatalf("terminal of %d bytes", len(larger))
	}
	les, err := s.ReadLog(ctx, se.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, le := range les {
		msg, at := logTerminal(int(le.Pos)-1, map[uint64]int{4: 4000, 5: 200}[le.Pos])
		if want := events.AppendPos(nil, msg, at, le.Pos); !bytes.Equal(le.Msg, want) {
			t.Errorf("pos %d: %.60q, want %.60q", le.Pos, le.Msg, want)
		}
	}
}

// heldOutlet is a connection whose socket queue stays full until release:
// a resume's replay waits, and live terminals queue behind it.
type heldOutlet struct {
	fakeOutlet
	held    atomic.Bool
	drained chan func()
}

func (o *heldOutlet) Queued() int {
	if o.held.Load() {
		return 1 << 30
	}
	return 0
}

func (o *heldOutlet) NotifyDrained(_ int, fn func()) { o.drained <- fn }

// TestBacklogKeepsTerminalsPastReuse: live terminals that wait behind a
// paced replay keep their content while later terminals reuse the log's
// buffers (the memory store writes a new terminal into the buffer of the
// entry it drops): the replay and every live terminal reach the client
// intact, in order, once its socket drains.
func TestBacklogKeepsTerminalsPastReuse(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default().Sessions
	cfg.Store = "memory"
	cfg.ReplayMax = 4
	m, err := OpenOptions(ctx, cfg, "n1", testLog(t), Options{PaceBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	first := &fakeOutlet{}
	rec, _, err := m.Bind(ctx, "u", "", Resume{}, first, welcomeFn)
	if err != nil {
		t.Fatal(err)
	}
	id := rec.ID()
	n := 0
	terminal := func() {
		t.Helper()
		n++
		if _, err := m.Terminal(ctx, id, fmt.Sprintf("r%d", n), resultMsg(fmt.Sprintf("r%d", n))); err != nil {
			t.Fatal(err)
		}
	}
	for range cfg.ReplayMax {
		terminal()
	}
	m.Detach(id, first, 0) // nothing acknowledged: all four are owed
	out := &heldOutlet{drained: make(chan func(), 1)}
	out.held.Store(true)
	if _, _, err := m.Bind(ctx, "u", id, Resume{}, out, welcomeFn); err != nil {
		t.Fatal(err)
	}
	for range 3 * cfg.ReplayMax { // live, behind the replay; every one of them leaves the log
		terminal()
	}
	out.held.Store(false)
	select {
	case fn := <-out.drained:
		fn()
	case <-time.After(5 * time.Second):
		t.Fatal("the replay never waited for the socket")
	}
	want := []string{string(welcomeMsg(id, true))}
	for i := 1; i <= n; i++ {
		want = append(want, string(resultMsg(fmt.Sprintf("r%d", i))))
	}
	eventually(t, 5*time.Second, "replay and live terminals delivered", func() bool { return len(out.got()) >= len(want) })
	if got := out.got(); !slices.Equal(got, want) {
		t.Errorf("delivered:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
