package sessions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/events"
)

var testLimits = config.Sessions{TTL: config.Duration(time.Hour), OutboxMax: 3, HistoryMaxTurns: 3}

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
				_, errPush := s.PushOutbox(ctx, id, []byte("m"))
				_, errClaim := s.Claim(ctx, id, "u", "n1", 1)
				errTouch := s.Touch(ctx, id)
				for i, err := range []error{errGet, errOwner, errPatch, errHist, errPush, errClaim, errTouch} {
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
			t.Run("outbox bounded drain", func(t *testing.T) {
				sess, _ := s.Create(ctx, "dave")
				for i := range 5 {
					if _, err := s.PushOutbox(ctx, sess.ID, fmt.Appendf(nil, "m%d", i)); err != nil {
						t.Fatal(err)
					}
				}
				got, err := s.DrainOutbox(ctx, sess.ID)
				if err != nil {
					t.Fatal(err)
				}
				if want := []string{"m2", "m3", "m4"}; !slices.Equal(strs(got), want) {
					t.Fatalf("outbox = %q, want %q", strs(got), want)
				}
				if got, _ := s.DrainOutbox(ctx, sess.ID); len(got) != 0 {
					t.Fatalf("second drain = %q, want empty", strs(got))
				}
			})
			t.Run("claim", func(t *testing.T) {
				sess, _ := s.Create(ctx, "erin")
				if h, _ := s.Holder(ctx, sess.ID); h != (Holder{}) {
					t.Fatalf("fresh holder = %+v, want zero", h)
				}
				if _, err := s.Claim(ctx, sess.ID, "mallory", "n1", 7); !errors.Is(err, ErrForbidden) {
					t.Fatalf("claim by another user: %v, want ErrForbidden", err)
				}
				if h, _ := s.Holder(ctx, sess.ID); h != (Holder{}) {
					t.Fatalf("holder after a forbidden claim = %+v, want zero", h)
				}
				c1, err := s.Claim(ctx, sess.ID, "erin", "n1", 7)
				if err != nil || c1.Epoch != 1 || len(c1.Nodes) != 0 {
					t.Fatalf("first claim = %+v, %v; want epoch 1, no nodes", c1, err)
				}
				h, _ := s.PushOutbox(ctx, sess.ID, []byte("t1"))
				if h != (Holder{Node: "n1", Conn: 7, Epoch: 1}) {
					t.Fatalf("PushOutbox holder = %+v, want n1/7/1", h)
				}
				c2, err := s.Claim(ctx, sess.ID, "erin", "n2", 9)
				if err != nil || c2.Epoch != 2 || !slices.Equal(c2.Nodes, []string{"n1"}) || !slices.Equal(strs(c2.Outbox), []string{"t1"}) {
					t.Fatalf("second claim = %+v, %v; want epoch 2, nodes [n1], outbox [t1]", c2, err)
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

func strs(b [][]byte) []string {
	out := make([]string, len(b))
	for i, x := range b {
		out[i] = string(x)
	}
	return out
}
