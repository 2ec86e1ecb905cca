package sessions_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/events"
	"github.com/orchestratord/orchestratord/daemon/sessions"
)

// posOutlet records the positions of the terminals it is sent.
type posOutlet struct {
	mu  sync.Mutex
	pos []uint64
}

func (o *posOutlet) Send([]byte) error { return nil }
func (o *posOutlet) SendTerminal(_ []byte, pos uint64) error {
	o.mu.Lock()
	o.pos = append(o.pos, pos)
	o.mu.Unlock()
	return nil
}
func (o *posOutlet) Queued() int                    { return 0 }
func (o *posOutlet) NotifyDrained(_ int, fn func()) { fn() }
func (o *posOutlet) Acked() uint64                  { return 0 }
func (o *posOutlet) Cut()                           {}
func (o *posOutlet) Kick()                          {}
func (o *posOutlet) got() []uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]uint64(nil), o.pos...)
}

var _ sessions.Outlet = (*posOutlet)(nil)

// TestWaitingPastMaxPendingIsAGap: Redis stops answering (CLIENT PAUSE)
// while a session produces 100,001 terminals, one more than the waiting
// queue keeps. The oldest leaves the queue but keeps its position, as a
// gap: when Redis answers again the others are logged and delivered at
// positions 2..100,001, and a resume from last=0 says recovered:false.
func TestWaitingPastMaxPendingIsAGap(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	srv := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	var admin rueidis.Client
	for deadline := time.Now().Add(10 * time.Second); ; {
		if admin, err = rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer admin.Close()

	lim := config.Default().Sessions
	lim.Store, lim.RedisURL = "redis", "redis://"+addr+"/0"
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := sessions.OpenOptions(t.Context(), lim, "A", log, sessions.Options{Redis: sessions.RedisOptions{OpTimeout: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	o := &posOutlet{}
	id, _, err := m.Attach(t.Context(), "alice", "", sessions.Resume{}, o, func(w *events.Welcome) []byte { return []byte("{}") })
	if err != nil {
		t.Fatal(err)
	}
	const n = 100001
	if err := admin.Do(t.Context(), admin.B().ClientPause().Timeout(20000).All().Build()).Error(); err != nil {
		t.Fatalf("CLIENT PAUSE: %v", err)
	}
	t0 := time.Now()
	for i := range n {
		if _, err := m.Terminal(context.Background(), id, fmt.Sprint(i), events.AppendResult(nil, fmt.Sprint(i), []byte("1"))); err == nil {
			t.Fatalf("terminal %d taken while Redis is paused", i)
		}
	}
	if d := time.Since(t0); d > 18*time.Second {
		t.Fatalf("producing the terminals took %s, longer than the pause: the test proves nothing", d)
	}
	deadline := time.Now().Add(120 * time.Second)
	for len(o.got()) < n-1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d waiting terminals delivered after the pause", len(o.got()), n-1)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got := o.got()
	for i, p := range got {
		if p != uint64(i+2) {
			t.Fatalf("delivered position %d is %d, want %d: the dropped terminal's position must stay a gap", i, p, i+2)
		}
	}
	o2 := &posOutlet{}
	var w events.Welcome
	if _, _, err := m.Attach(t.Context(), "alice", id, sessions.Resume{HasLast: true, Last: 0}, o2,
		func(x *events.Welcome) []byte { w = *x; return []byte("{}") }); err != nil {
		t.Fatal(err)
	}
	if w.Recovered || w.Missed == 0 {
		t.Fatalf("resume from last=0: recovered %v missed %d, want recovered:false", w.Recovered, w.Missed)
	}
	t.Logf("%d terminals produced with Redis paused in %s; %d delivered at 2..%d after it; resume from 0: missed %d",
		n, time.Since(t0).Round(time.Millisecond), len(got), n, w.Missed)
}
