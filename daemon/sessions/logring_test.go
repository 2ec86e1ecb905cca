package sessions

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/events"
)

// TestLogRing checks the ring against a slice through random pushes and
// drops across growth and wrap-around: same entries in the same order,
// and the array never larger than the bound once it reached it.
func TestLogRing(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, bound := range []int{1, 2, 3, 5, 8, 100} {
		var r logRing
		var ref []LogEntry
		pos := uint64(0)
		for step := range 5000 {
			if len(ref) == bound || len(ref) > 0 && rng.IntN(3) == 0 {
				n := 1 + rng.IntN(len(ref))
				var want int64
				for _, e := range ref[:n] {
					want += int64(len(e.Msg))
				}
				if got := r.drop(n); got != want {
					t.Fatalf("bound %d step %d: drop(%d) freed %d, want %d", bound, step, n, got, want)
				}
				ref = ref[n:]
			} else {
				pos++
				le := LogEntry{Pos: pos, Msg: bytes.Repeat([]byte{'x'}, rng.IntN(4))}
				r.push(le, bound)
				ref = append(ref, le)
			}
			if r.len() != len(ref) {
				t.Fatalf("bound %d step %d: len %d, want %d", bound, step, r.len(), len(ref))
			}
			if got := slices.Collect(r.all()); !slices.EqualFunc(got, ref, func(a, b LogEntry) bool {
				return a.Pos == b.Pos && bytes.Equal(a.Msg, b.Msg)
			}) {
				t.Fatalf("bound %d step %d: ring holds %v, want %v", bound, step, got, ref)
			}
			if len(r.buf) > bound {
				t.Fatalf("bound %d step %d: array of %d slots", bound, step, len(r.buf))
			}
		}
	}
}

// TestMemoryLogRingModel runs random appends (sizes around replay_bytes'
// bound), gaps, acks and claims against a memory store and a plain model
// of the contract's log (section 4a: the newest replay_max entries within
// replay_bytes, the newest always kept, contiguous positions): the log, a
// resume's replay and missed count, and the store's byte count match the
// model at every step, across many wraps of the ring.
func TestMemoryLogRingModel(t *testing.T) {
	ctx := context.Background()
	// grow: acks keep the log under replay_max, so it grows rather than
	// wraps and dropped buffers are not reused.
	for _, lim := range []struct {
		max, bytes int
		grow       bool
	}{{1, 1 << 20, false}, {3, 1 << 20, false}, {7, 4000, false}, {100, 1 << 20, true}, {50, 3000, false}} {
		t.Run(fmt.Sprintf("max%d_bytes%d", lim.max, lim.bytes), func(t *testing.T) {
			cfg := config.Default().Sessions
			cfg.ReplayMax, cfg.ReplayBytes = lim.max, int64(lim.bytes)
			s := NewMemoryStore(cfg, testLog(t))
			defer s.Close()
			se, err := s.Create(ctx, "u")
			if err != nil {
				t.Fatal(err)
			}
			base := s.Bytes()
			rng := rand.New(rand.NewPCG(uint64(lim.max), uint64(lim.bytes)))
			var model []LogEntry
			var pos, dlv uint64
			var lent, lentCopy []LogEntry
			reused, bufs := 0, map[*byte]bool{}
			trim := func() {
				var b int64
				for _, e := range model {
					b += int64(len(e.Msg))
				}
				for len(model) > lim.max || b > int64(lim.bytes) && len(model) > 1 {
					b -= int64(len(model[0].Msg))
					model = model[1:]
				}
			}
			for step := range 3000 {
				switch k := rng.IntN(20); {
				case k < 14:
					msg, at := logTerminal(step, rng.IntN(1500))
					a, err := s.Append(ctx, se.ID, msg, at)
					if err != nil {
						t.Fatal(err)
					}
					pos++
					want := events.AppendPos(nil, msg, at, pos)
					if a.Pos != pos || !bytes.Equal(a.Msg, want) {
						t.Fatalf("step %d: Append returned %d %.40q, want %d %.40q", step, a.Pos, a.Msg, pos, want)
					}
					if p := unsafe.SliceData(a.Msg); bufs[p] {
						reused++ // written into a dropped entry's buffer
					} else {
						bufs[p] = true
					}
					model = append(model, LogEntry{Pos: pos, Msg: want})
					trim()
				case k < 15:
					n := rng.IntN(3)
					if err := s.AppendGap(ctx, se.ID, n); err != nil {
						t.Fatal(err)
					}
					for range n {
						pos++
						model = append(model, LogEntry{Pos: pos})
						trim()
					}
				case k < 17:
					ack := pos - uint64(rng.IntN(int(min(pos, 10))+1)) + 1
					if err := s.Ack(ctx, se.ID, ack); err != nil {
						t.Fatal(err)
					}
					ack = min(ack, pos)
					dlv = max(dlv, ack)
					for len(model) > 0 && model[0].Pos <= ack {
						model = model[1:]
					}
				default:
					last := pos - uint64(rng.IntN(int(min(pos, uint64(lim.max)+5))+1)) + 1
					c, err := s.Claim(ctx, se.ID, "u", "n1", uint64(step), Resume{Last: last, HasLast: true})
					if err != nil {
						t.Fatal(err)
					}
					after := min(last, pos)
					dlv = max(dlv, after)
					var replay []LogEntry
					var missed uint64
					first := pos + 1
					if len(model) > 0 {
						first = model[0].Pos
					}
					if after+1 < first {
						missed = first - after - 1
					}
					for _, e := range model {
						switch {
						case e.Pos <= after:
						case len(e.Msg) == 0:
							missed++
						default:
							replay = append(replay, e)
						}
					}
					if c.Pos != pos || c.After != after || c.Missed != missed || !sameLog(c.Log, replay) {
						t.Fatalf("step %d: claim after %d: pos %d after %d missed %d, %d entries; want %d %d %d, %d entries",
							step, last, c.Pos, c.After, c.Missed, len(c.Log), pos, after, missed, len(replay))
					}
				}
				// What a read lent stays as it was however many appends
				// follow (their buffers are not reused); reads are
				// rare, so that the others are.
				if !sameLog(lent, lentCopy) {
					t.Fatalf("step %d: entries lent by a read changed", step)
				}
				if step%37 == 0 {
					got, err := s.ReadLog(ctx, se.ID, 0)
					if err != nil {
						t.Fatal(err)
					}
					if !sameLog(got, model) {
						t.Fatalf("step %d: log holds %d entries (%v..), want %d", step, len(got), posOf(got), len(model))
					}
					lent = got
					lentCopy = nil
					for _, e := range got {
						lentCopy = append(lentCopy, LogEntry{e.Pos, bytes.Clone(e.Msg)})
					}
				}
				var b int64
				for _, e := range model {
					b += int64(len(e.Msg))
				}
				if s.Bytes()-base != b {
					t.Fatalf("step %d: store counts %d log bytes, want %d", step, s.Bytes()-base, b)
				}
			}
			if reused == 0 && !lim.grow {
				t.Error("no append was written into a dropped entry's buffer: the reuse path went untested")
			}
		})
	}
}

func sameLog(a, b []LogEntry) bool {
	return slices.EqualFunc(a, b, func(x, y LogEntry) bool { return x.Pos == y.Pos && bytes.Equal(x.Msg, y.Msg) })
}

func posOf(les []LogEntry) []uint64 {
	var ps []uint64
	for _, e := range les {
		ps = append(ps, e.Pos)
	}
	return ps
}
