package sessions

import (
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
