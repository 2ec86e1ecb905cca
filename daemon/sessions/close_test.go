package sessions

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// TestCloseFlushesCursors: a node that closes right after its connections
// detached (the end of a drain) still writes their delivered cursors, so
// that a resume without ?last= on another node replays nothing the
// clients already had (with Redis the cursor writes are queued).
func TestCloseFlushesCursors(t *testing.T) {
	for _, b := range sharedBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			const n = 20
			m1 := b.openManager(t, "n1", testLimits)
			ids := make([]string, n)
			for i := range ids {
				o := &fakeOutlet{}
				ids[i], _ = attach(t, m1, fmt.Sprintf("u%d", i), "", o)
				for k := 0; k < 3; k++ {
					if _, err := m1.Terminal(t.Context(), ids[i], fmt.Sprintf("r%d", k), resultMsg(fmt.Sprintf("r%d", k))); err != nil {
						t.Fatalf("Terminal: %v", err)
					}
				}
				if got := countPrefix(o.got(), `{"type":"result"`); got != 3 {
					t.Fatalf("session %d: %d results sent live, want 3", i, got)
				}
				m1.Detach(ids[i], o, o.acked())
			}
			if err := m1.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			m2 := b.openManager(t, "n2", testLimits)
			for i, id := range ids {
				o := &fakeOutlet{}
				got, resumed := attach(t, m2, fmt.Sprintf("u%d", i), id, o)
				if got != id || !resumed {
					t.Fatalf("resume %s: got %s resumed=%v", id, got, resumed)
				}
				if r := countPrefix(o.got(), `{"type":"result"`); r != 0 {
					t.Errorf("session %d: a resume without last replayed %d results its client had acknowledged before the node closed", i, r)
				}
			}
		})
	}
}

// stallingStore times out the first n calls of Create and of Claim, as a
// Redis store does when the host stalls for longer than its OpTimeout.
type stallingStore struct {
	Store
	creates, claims int
}

func (s *stallingStore) Create(ctx context.Context, user string) (*Session, error) {
	if s.creates > 0 {
		s.creates--
		return nil, fmt.Errorf("create session: %w", context.DeadlineExceeded)
	}
	return s.Store.Create(ctx, user)
}

func (s *stallingStore) Claim(ctx context.Context, id, user, node string, conn uint64, from Resume) (Claim, error) {
	if s.claims > 0 {
		s.claims--
		return Claim{}, fmt.Errorf("claim session %s: %w", id, context.DeadlineExceeded)
	}
	return s.Store.Claim(ctx, id, user, node, conn, from)
}

// TestAttachRetriesTimedOutStore: an attach whose store operations time
// out on their own bound is tried again (twice at most) within its
// context; a third timeout, or another error, fails it.
func TestAttachRetriesTimedOutStore(t *testing.T) {
	m := backend{name: "memory"}.openManager(t, "n1", testLimits)
	st := &stallingStore{Store: m.store, creates: 1, claims: 1}
	m.store = st
	o := &fakeOutlet{}
	id, _ := attach(t, m, "alice", "", o)
	if got := o.got(); len(got) != 1 || got[0] != string(welcomeMsg(id, false)) {
		t.Fatalf("after two timeouts: outlet got %q, want one welcome", got)
	}
	m.Detach(id, o, o.acked())

	st.claims = 3
	_, _, err := m.Attach(t.Context(), "alice", id, Resume{}, &fakeOutlet{}, welcomeFn)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("three timeouts: err %v, want DeadlineExceeded", err)
	}
	if st.claims != 0 {
		t.Fatalf("three timeouts: %d claims left, want 0 (three tries)", st.claims)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	st.claims = 2
	if _, _, err := m.Attach(ctx, "alice", id, Resume{}, &fakeOutlet{}, welcomeFn); err == nil {
		t.Fatal("attach with its context done succeeded")
	}
	if st.claims != 1 {
		t.Fatalf("context done: %d claims left, want 1 (no retry)", st.claims)
	}
}
