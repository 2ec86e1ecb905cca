package gateway

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/netpoll"
)

// TestFramesBeforeAttachReplayedInOrder: frames that arrive while the
// session is being attached wait, then reach dispatch in arrival order,
// before any later frame, on the attached session.
func TestFramesBeforeAttachReplayedInOrder(t *testing.T) {
	h := newHarness()
	defer h.g.Close()
	h.mgr.gate = make(chan struct{})
	st, ws := h.open()
	for i := 1; i <= 3; i++ {
		h.g.message(st, []byte(fmt.Sprintf(`{"n":%d}`, i)))
	}
	if frames, _ := h.router.handled(); len(frames) != 0 {
		t.Fatalf("frames handled before the session was attached: %v", frames)
	}
	close(h.mgr.gate)
	rec := attached(st)
	if rec == nil {
		t.Fatal("never attached")
	}
	h.g.message(st, []byte(`{"n":4}`))
	frames, sess := h.router.handled()
	want := []string{`{"n":1}`, `{"n":2}`, `{"n":3}`, `{"n":4}`}
	if !slices.Equal(frames, want) {
		t.Fatalf("frames %v, want %v", frames, want)
	}
	for _, s := range sess {
		if s != rec.ID() {
			t.Fatalf("frame handled for session %q, want %q", s, rec.ID())
		}
	}
	if got := ws.messages(); len(got) == 0 || !strings.Contains(got[0], `"type":"welcome"`) {
		t.Fatalf("first message %v, want the welcome", got)
	}
	if n := rec.(*fakeSession).touches.Load(); n != 1 {
		t.Fatalf("touches %d, want 1 (the frame after attach)", n)
	}
	st.mu.Lock()
	pre := st.pre()
	st.mu.Unlock()
	if pre != nil {
		t.Fatal("the pre-attach state is kept after attach")
	}
}

// TestFramesBeforeAttachBounded: past maxPending frames before the
// welcome the connection is closed 1008 and nothing is handled.
func TestFramesBeforeAttachBounded(t *testing.T) {
	h := newHarness()
	h.mgr.gate = make(chan struct{})
	st, ws := h.open()
	for i := 0; i <= maxPending; i++ {
		h.g.message(st, []byte(`{}`))
	}
	if code := ws.closed(); code != netpoll.ClosePolicyViolation {
		t.Fatalf("closed with %d, want 1008", code)
	}
	h.g.closed(st)
	close(h.mgr.gate)
	// Closed before its Bind returned: the attach gives the session back.
	for i := 0; i < 2000 && len(h.mgr.detached()) == 0; i++ {
		time.Sleep(time.Millisecond)
	}
	h.g.Close()
	if frames, _ := h.router.handled(); len(frames) != 0 {
		t.Fatalf("frames of a connection closed before attach were handled: %v", frames)
	}
	if d := h.mgr.detached(); len(d) != 1 {
		t.Fatalf("detaches %v, want one", d)
	}
}

// TestCloseGivesBackWhatPeerDidNotAcknowledge: at close the session is
// detached once with the connection's Acked, so terminals the peer's TCP
// never acknowledged go to the next resume; later closes do nothing.
func TestCloseGivesBackWhatPeerDidNotAcknowledge(t *testing.T) {
	h := newHarness()
	defer h.g.Close()
	st, ws := h.open()
	rec := attached(st)
	if err := st.SendTerminal([]byte(`{"type":"result","id":"a","pos":6}`), 6); err != nil {
		t.Fatal(err)
	}
	if err := st.SendTerminal([]byte(`{"type":"result","id":"b","pos":7}`), 7); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ws.tags, []uint64{6, 7}) {
		t.Fatalf("terminals tagged %v, want [6 7]", ws.tags)
	}
	ws.mu.Lock()
	ws.acked = 6 // 7 was queued but not acknowledged
	ws.mu.Unlock()
	h.g.closed(st)
	h.g.closed(st)
	d := h.mgr.detached()
	if len(d) != 1 || d[0].id != rec.ID() || d[0].acked != 6 || d[0].out != st {
		t.Fatalf("detaches %+v, want one of %s with acked 6", d, rec.ID())
	}
	h.g.message(st, []byte(`{}`)) // a frame after close reaches nothing new
}

// TestBindFailureCloses1011: a store that cannot attach closes the
// connection 1011 and binds nothing.
func TestBindFailureCloses1011(t *testing.T) {
	h := newHarness()
	h.mgr.bindErr = errors.New("store down")
	st, ws := h.open()
	h.g.Close() // waits for the attach goroutine
	if code := ws.closed(); code != netpoll.CloseInternalError {
		t.Fatalf("closed with %d, want 1011", code)
	}
	if st.session() != nil || len(h.mgr.detached()) != 0 {
		t.Fatal("a failed bind left a session")
	}
}

// TestDrain: a drain closes idle connections 1012 after a reconnect
// message; busy ones wait for their last request (dispatch's OnIdle);
// connections attached during the drain and idle close at once; the gate
// and dispatch refuse new work.
func TestDrain(t *testing.T) {
	h := newHarness()
	defer h.g.Close()
	idle, idleWS := h.open()
	busy, busyWS := h.open()
	attached(idle)
	busyRec := attached(busy).(*fakeSession)
	busyRec.inflight.Store(1)

	h.g.StartDrain()
	if !h.gate.draining.Load() || !h.router.Draining() || !h.g.Draining() {
		t.Fatal("drain did not reach the gate and dispatch")
	}
	checkReconnect(t, idleWS)
	if code := busyWS.closed(); code != 0 {
		t.Fatalf("a connection with a request in flight closed %d", code)
	}
	busyRec.inflight.Store(0)
	h.router.idle(busyRec.ID())
	checkReconnect(t, busyWS)

	late, lateWS := h.open()
	attached(late)
	deadline := time.Now().Add(2 * time.Second)
	for lateWS.closed() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	checkReconnect(t, lateWS)
}

func checkReconnect(t *testing.T, ws *fakeWS) {
	t.Helper()
	if code := ws.closed(); code != netpoll.CloseServiceRestart {
		t.Fatalf("closed with %d, want 1012", code)
	}
	msgs := ws.messages()
	if len(msgs) == 0 || !strings.Contains(msgs[len(msgs)-1], `"type":"reconnect"`) || !strings.Contains(msgs[len(msgs)-1], `250`) {
		t.Fatalf("last message %v, want reconnect after 250 ms", msgs)
	}
}

// TestDetachAll gives every attached connection's session back once, with
// its Acked, and a later close does not detach again.
func TestDetachAll(t *testing.T) {
	h := newHarness()
	defer h.g.Close()
	a, aws := h.open()
	b, _ := h.open()
	attached(a)
	attached(b)
	aws.mu.Lock()
	aws.acked = 3
	aws.mu.Unlock()
	if n := h.g.Attached(); n != 2 {
		t.Fatalf("Attached = %d, want 2", n)
	}
	h.g.DetachAll()
	h.g.closed(a)
	h.g.closed(b)
	d := h.mgr.detached()
	if len(d) != 2 {
		t.Fatalf("detaches %+v, want 2", d)
	}
	for _, x := range d {
		if x.out == a && x.acked != 3 {
			t.Fatalf("a detached with acked %d, want 3", x.acked)
		}
	}
	if !strings.Contains(aws.messages()[len(aws.messages())-1], `"type":"reconnect"`) {
		t.Fatal("no reconnect before the engine's close")
	}
}

// TestAdminKickAndList: the admin page lists attached sessions from the
// one registry and kicks by session id.
func TestAdminKickAndList(t *testing.T) {
	h := newHarness()
	defer h.g.Close()
	st, ws := h.open()
	rec := attached(st)
	rows, total := h.g.Sessions("", 0, 10)
	if total != 1 || rows[0].ID != rec.ID() || rows[0].User != "u" {
		t.Fatalf("rows %+v total %d", rows, total)
	}
	if err := h.g.Kick("s_nope"); !errors.Is(err, ErrNoSuchSession) {
		t.Fatalf("Kick unknown: %v", err)
	}
	if err := h.g.Kick(rec.ID()); err != nil || ws.closed() != netpoll.ClosePolicyViolation {
		t.Fatalf("Kick: %v, closed %d", err, ws.closed())
	}
}
