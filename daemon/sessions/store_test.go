package sessions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/events"
)

var testLimits = config.Sessions{TTL: config.Duration(time.Hour), OutboxMax: 3, HistoryMaxTurns: 3, ReplayMax: 3, ReplayBytes: 1 << 20}

// TestStoreContract runs the same behaviour against every Store.
func TestStoreContract(t *testing.T) {
	for _, b := range testBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			s, advance := b.openStore(t, testLimits)
			ctx := t.Context()
			t.Run("create get owner", func(t *testing.T) {
				got, err := s.Create(ctx, "alice")
				if err != nil {
					t.Fatal(err)
				}
				if !ValidID(got.ID) {
					t.Fatalf("id %q is not a valid session id", got.ID)
				}
				g, err := s.Get(ctx, got.ID)
				if err != nil {
					t.Fatal(err)
				}
				if g.User != "alice" || string(g.Context) != "{}" || len(g.History) != 0 || g.Created.IsZero() {
					t.Fatalf("Get = %+v, want user alice, context {}, no history, created set", g)
				}
				if u, err := s.Owner(ctx, got.ID); err != nil || u != "alice" {
					t.Fatalf("Owner = %q, %v, want alice", u, err)
				}
			})
			t.Run("unknown id", func(t *testing.T) {
				id := NewID()
				_, errGet := s.Get(ctx, id)
				_, errOwner := s.Owner(ctx, id)
				errPatch := s.PatchContext(ctx, id, json.RawMessage(`{"a":1}`))
				errHist := s.AppendHistory(ctx, id, []events.Turn{{Role: "user", Content: "x"}})
				_, errPush := s.Append(ctx, id, []byte(`{"type":"result","id":"1"}`), 0)
				_, errClaim := s.Claim(ctx, id, "u", "n1", 1, Resume{})
				errTouch := s.Touch(ctx, id)
				errGap := s.AppendGap(ctx, id, 1)
				_, errRead := s.ReadLog(ctx, id, 0)
				errDlv := s.Delivered(ctx, id, 1)
				errAck := s.Ack(ctx, id, 1)
				for i, err := range []error{errGet, errOwner, errPatch, errHist, errPush, errClaim, errTouch, errGap, errRead, errDlv, errAck} {
					if !errors.Is(err, ErrNotFound) {
						t.Errorf("operation %d on unknown id: got %v, want ErrNotFound", i, err)
					}
				}
			})
			t.Run("restore", func(t *testing.T) {
				id := NewID()
				if err := s.Restore(ctx, id, "carol"); err != nil {
					t.Fatal(err)
				}
				g, err := s.Get(ctx, id)
				if err != nil || g.User != "carol" || string(g.Context) != "{}" {
					t.Fatalf("after Restore: %+v, %v; want carol with {}", g, err)
				}
				if err := s.PatchContext(ctx, id, json.RawMessage(`{"k":1}`)); err != nil {
					t.Fatal(err)
				}
				// Restoring an existing session leaves it untouched.
				if err := s.Restore(ctx, id, "mallory"); err != nil {
					t.Fatal(err)
				}
				if g, _ := s.Get(ctx, id); g.User != "carol" || string(g.Context) != `{"k":1}` {
					t.Fatalf("second Restore changed the session: %+v", g)
				}
			})
			t.Run("patch context", func(t *testing.T) {
				sess, _ := s.Create(ctx, "bob")
				for _, p := range []string{`{"a":{"b":1,"c":2}}`, `{"a":{"c":null},"n":12345678901234567890}`, `{"x":[1,2]}`} {
					if err := s.PatchContext(ctx, sess.ID, json.RawMessage(p)); err != nil {
						t.Fatalf("PatchContext(%s): %v", p, err)
					}
				}
				g, _ := s.Get(ctx, sess.ID)
				if want := `{"a":{"b":1},"n":12345678901234567890,"x":[1,2]}`; !jsonEqual(t, g.Context, []byte(want)) {
					t.Fatalf("context = %s, want %s", g.Context, want)
				}
				if err := s.PatchContext(ctx, sess.ID, json.RawMessage(`[1]`)); !errors.Is(err, ErrInvalidPatch) {
					t.Fatalf("array patch: got %v, want ErrInvalidPatch", err)
				}
			})
			t.Run("history bounded", func(t *testing.T) {
				sess, _ := s.Create(ctx, "carol")
				for i := range 5 {
					if err := s.AppendHistory(ctx, sess.ID, []events.Turn{{Role: "user", Content: fmt.Sprint(i)}}); err != nil {
						t.Fatal(err)
					}
				}
				g, _ := s.Get(ctx, sess.ID)
				want := []events.Turn{{Role: "user", Content: "2"}, {Role: "user", Content: "3"}, {Role: "user", Content: "4"}}
				if !slices.Equal(g.History, want) {
					t.Fatalf("history = %v, want %v", g.History, want)
				}
			})
			t.Run("log numbered and bounded", func(t *testing.T) {
				sess, _ := s.Create(ctx, "dave")
				for i := range 5 {
					msg := events.AppendResult(nil, fmt.Sprintf("r%d", i+1), []byte("1"))
					a, err := s.Append(ctx, sess.ID, msg, events.PosIndex(msg))
					if err != nil {
						t.Fatal(err)
					}
					want := fmt.Sprintf(`{"type":"result","id":"r%d","pos":%d,"data":1}`, i+1, i+1)
					if a.Pos != uint64(i+1) || string(a.Msg) != want {
						t.Fatalf("Append %d = %d %s, want %d %s", i, a.Pos, a.Msg, i+1, want)
					}
				}
				got, err := s.ReadLog(ctx, sess.ID, 0)
				if err != nil {
					t.Fatal(err)
				}
				if ps := positions(got); !slices.Equal(ps, []uint64{3, 4, 5}) {
					t.Fatalf("log positions = %v, want [3 4 5] (replay_max 3)", ps)
				}
				if got, _ := s.ReadLog(ctx, sess.ID, 4); !slices.Equal(positions(got), []uint64{5}) {
					t.Fatalf("ReadLog after 4 = %v, want [5]", positions(got))
				}
				// Resume after 1: 2 had left the log (missed), 3..5 replayed.
				c, err := s.Claim(ctx, sess.ID, "dave", "n1", 1, Resume{Last: 1, HasLast: true})
				if err != nil || c.Pos != 5 || c.Missed != 1 || !slices.Equal(positions(c.Log), []uint64{3, 4, 5}) {
					t.Fatalf("claim after 1 = %+v, %v; want pos 5, missed 1, replay 3..5", c, err)
				}
				// A v1 resume after that claim starts at its last (the cursor moved).
				c, err = s.Claim(ctx, sess.ID, "dave", "n1", 2, Resume{})
				if err != nil || c.After != 1 || c.Missed != 1 {
					t.Fatalf("v1 claim = %+v, %v; want after 1, missed 1", c, err)
				}
				if err := s.Delivered(ctx, sess.ID, 4); err != nil {
					t.Fatal(err)
				}
				c, err = s.Claim(ctx, sess.ID, "dave", "n1", 3, Resume{})
				if err != nil || c.After != 4 || c.Missed != 0 || !slices.Equal(positions(c.Log), []uint64{5}) {
					t.Fatalf("v1 claim after delivered 4 = %+v, %v; want replay [5]", c, err)
				}
				// A last beyond the position replays nothing and misses nothing.
				c, err = s.Claim(ctx, sess.ID, "dave", "n1", 4, Resume{Last: 99, HasLast: true})
				if err != nil || c.After != 5 || c.Missed != 0 || len(c.Log) != 0 {
					t.Fatalf("claim after 99 = %+v, %v; want nothing", c, err)
				}
				// Ack trims: a resume from 3 then misses 4 (acked away).
				if err := s.Ack(ctx, sess.ID, 4); err != nil {
					t.Fatal(err)
				}
				if got, _ := s.ReadLog(ctx, sess.ID, 0); !slices.Equal(positions(got), []uint64{5}) {
					t.Fatalf("log after ack 4 = %v, want [5]", positions(got))
				}
				// Gaps take positions and count as missed.
				if err := s.AppendGap(ctx, sess.ID, 2); err != nil {
					t.Fatal(err)
				}
				msg := events.AppendError(nil, "e", "timeout", "slow")
				if a, err := s.Append(ctx, sess.ID, msg, events.PosIndex(msg)); err != nil || a.Pos != 8 {
					t.Fatalf("append after gaps = %d, %v; want 8", a.Pos, err)
				}
				c, err = s.Claim(ctx, sess.ID, "dave", "n1", 5, Resume{Last: 5, HasLast: true})
				if err != nil || c.Missed != 2 || !slices.Equal(positions(c.Log), []uint64{8}) {
					t.Fatalf("claim over gaps = %+v, %v; want missed 2, replay [8]", c, err)
				}
			})
			t.Run("log bounded by bytes", func(t *testing.T) {
				lim := testLimits
				lim.ReplayMax, lim.ReplayBytes = 100, 2048
				s2, _ := b.openStore(t, lim)
				sess, _ := s2.Create(ctx, "dora")
				big := []byte(`"` + strings.Repeat("x", 900) + `"`)
				for i := range 4 {
					msg := events.AppendResult(nil, fmt.Sprint(i), big)
					if _, err := s2.Append(ctx, sess.ID, msg, events.PosIndex(msg)); err != nil {
						t.Fatal(err)
					}
				}
				if got, _ := s2.ReadLog(ctx, sess.ID, 0); !slices.Equal(positions(got), []uint64{3, 4}) {
					t.Fatalf("log = %v, want [3 4] within 2048 bytes", positions(got))
				}
				huge := events.AppendResult(nil, "h", []byte(`"`+strings.Repeat("y", 5000)+`"`))
				if _, err := s2.Append(ctx, sess.ID, huge, events.PosIndex(huge)); err != nil {
					t.Fatal(err)
				}
				if got, _ := s2.ReadLog(ctx, sess.ID, 0); !slices.Equal(positions(got), []uint64{5}) {
					t.Fatalf("log = %v, want the newest alone even past the bytes", positions(got))
				}
			})
			t.Run("claim", func(t *testing.T) {
				sess, _ := s.Create(ctx, "erin")
				if h, _ := s.Holder(ctx, sess.ID); h != (Holder{}) {
					t.Fatalf("fresh holder = %+v, want zero", h)
				}
				if _, err := s.Claim(ctx, sess.ID, "mallory", "n1", 7, Resume{}); !errors.Is(err, ErrForbidden) {
					t.Fatalf("claim by another user: %v, want ErrForbidden", err)
				}
				if h, _ := s.Holder(ctx, sess.ID); h != (Holder{}) {
					t.Fatalf("holder after a forbidden claim = %+v, want zero", h)
				}
				c1, err := s.Claim(ctx, sess.ID, "erin", "n1", 7, Resume{})
				if err != nil || c1.Epoch != 1 || len(c1.Nodes) != 0 {
					t.Fatalf("first claim = %+v, %v; want epoch 1, no nodes", c1, err)
				}
				msg := []byte(`{"type":"result","id":"t1","data":1}`)
				a, _ := s.Append(ctx, sess.ID, msg, events.PosIndex(msg))
				if a.Holder != (Holder{Node: "n1", Conn: 7, Epoch: 1}) {
					t.Fatalf("Append holder = %+v, want n1/7/1", a.Holder)
				}
				c2, err := s.Claim(ctx, sess.ID, "erin", "n2", 9, Resume{})
				if err != nil || c2.Epoch != 2 || !slices.Equal(c2.Nodes, []string{"n1"}) || len(c2.Log) != 1 || string(c2.Log[0].Msg) != string(a.Msg) {
					t.Fatalf("second claim = %+v, %v; want epoch 2, nodes [n1], replay [t1]", c2, err)
				}
				if h, _ := s.Holder(ctx, sess.ID); h != (Holder{Node: "n2", Conn: 9, Epoch: 2}) {
					t.Fatalf("holder = %+v, want n2/9/2", h)
				}
			})
			t.Run("ttl and touch", func(t *testing.T) {
				if advance == nil {
					t.Skip("clock of the real Redis cannot be moved; see TestRedisTTL")
				}
				sess, _ := s.Create(ctx, "frank")
				advance(40 * time.Minute)
				if err := s.Touch(ctx, sess.ID); err != nil {
					t.Fatal(err)
				}
				advance(40 * time.Minute) // 80 min after create, 40 after touch
				if _, err := s.Get(ctx, sess.ID); err != nil {
					t.Fatalf("Get after touch: %v", err)
				}
				advance(61 * time.Minute)
				if _, err := s.Get(ctx, sess.ID); !errors.Is(err, ErrNotFound) {
					t.Fatalf("Get after TTL: %v, want ErrNotFound", err)
				}
			})
			t.Run("ping", func(t *testing.T) {
				if err := s.Ping(ctx); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// TestRedisTTL checks expiry against the real Redis clock.
func TestRedisTTL(t *testing.T) {
	addr := requireRealRedis(t)
	p := randomPrefix()
	cleanupPrefix(t, addr, p)
	lim := testLimits
	lim.TTL = config.Duration(200 * time.Millisecond)
	b := backend{name: "redis", redis: true, addr: addr, prefix: p}
	s, _ := b.openStore(t, lim)
	sess, err := s.Create(t.Context(), "gina")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "session did not expire", func() bool {
		_, err := s.Get(context.Background(), sess.ID)
		return errors.Is(err, ErrNotFound)
	})
}

// TestMemorySweeper checks that the sweeper removes expired sessions.
func TestMemorySweeper(t *testing.T) {
	lim := testLimits
	lim.TTL = config.Duration(20 * time.Millisecond)
	s := NewMemoryStore(lim, testLog(t))
	defer s.Close()
	for range 10 {
		s.Create(t.Context(), "u")
	}
	eventually(t, 5*time.Second, "sweeper left expired sessions", func() bool { return s.Len() == 0 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(t.Context(), "u"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Create after Close: %v, want ErrClosed", err)
	}
}

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if !ValidID(id) || seen[id] {
			t.Fatalf("NewID() = %q: invalid or repeated", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "s_", "x_" + NewID()[2:], NewID() + "a", "s_" + string(make([]byte, 24)), "s_AAAAAAAAAAAAAAAAAAAAAA!A"} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}

func positions(es []LogEntry) []uint64 {
	out := make([]uint64, 0, len(es))
	for _, e := range es {
		out = append(out, e.Pos)
	}
	return out
}
