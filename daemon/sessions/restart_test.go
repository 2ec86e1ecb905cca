package sessions

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// ownRedis is a redis-server this test starts and stops itself.
type ownRedis struct {
	t    *testing.T
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func newOwnRedis(t *testing.T) *ownRedis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and no redis-server binary: %v", err)
		}
		t.Skipf("no redis-server binary: %v", err)
	}
	r := &ownRedis{t: t, port: freePort(t)}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *ownRedis) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (r *ownRedis) start() {
	r.t.Helper()
	r.cmd = exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no")
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	r.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(r.cmd, r.done)
	eventually(r.t, 10*time.Second, "redis-server did not listen", func() bool {
		c, err := net.DialTimeout("tcp", r.addr(), 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// stop kills the server (as a crash would) and waits for it to exit.
func (r *ownRedis) stop() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Kill()
	<-r.done
	r.cmd = nil
}

// TestRedisRestart: Redis goes away under a running Manager and comes back.
// Ready turns to an error and back, calls fail fast meanwhile, nothing
// panics, and Close leaves no goroutine behind.
func TestRedisRestart(t *testing.T) {
	before := runtime.NumGoroutine()
	r := newOwnRedis(t)
	lim := testLimits
	lim.Store, lim.RedisURL = "redis", "redis://"+r.addr()+"/0"
	m, err := OpenOptions(t.Context(), lim, "A", testLog(t), Options{Redis: RedisOptions{OpTimeout: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := m.Ready(ctx); err != nil {
		t.Fatalf("Ready with Redis up: %v", err)
	}
	o := &fakeOutlet{}
	id, _, err := m.Attach(ctx, "alice", "", Resume{}, o, welcomeFn)
	if err != nil {
		t.Fatal(err)
	}

	r.stop()
	eventually(t, 10*time.Second, "Ready still nil with Redis down", func() bool { return m.Ready(ctx) != nil })
	t.Logf("Ready with Redis down: %v", m.Ready(ctx))
	start := time.Now()
	if _, err := m.Get(ctx, id); err == nil {
		t.Fatal("Get with Redis down = nil error")
	}
	if _, _, err := m.Attach(ctx, "alice", id, Resume{}, &fakeOutlet{}, welcomeFn); err == nil {
		t.Fatal("Attach with Redis down = nil error")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("two calls with Redis down took %v, want fast failures", d)
	}
	// A request ending while Redis is down: its terminal waits in memory
	// (it cannot be numbered), then reaches the live connection, with its
	// position, once Redis is back.
	s := m.Begin(id, "r1")
	s.Chunk(chunkMsg("r1", 0))
	s.End(resultMsg("r1"))
	m.Touch(id)
	if got := countPrefix(o.got(), `{"type":"result"`); got != 0 || m.waitingForStore() != 1 {
		t.Fatalf("attached connection got %d results with Redis down, %d waiting; want 0 and 1", got, m.waitingForStore())
	}

	r.start()
	eventually(t, 15*time.Second, "Ready did not recover after Redis came back", func() bool { return m.Ready(ctx) == nil })
	eventually(t, 15*time.Second, "waiting terminal not delivered after Redis came back", func() bool {
		return countPrefix(o.raw(), `{"type":"result","id":"r1","pos":`) == 1
	})
	id2, _, err := m.Attach(ctx, "bob", "", Resume{}, &fakeOutlet{}, welcomeFn)
	if err != nil {
		t.Fatalf("Attach after recovery: %v", err)
	}
	if _, err := m.Get(ctx, id2); err != nil {
		t.Fatalf("Get after recovery: %v", err)
	}
	// The bus subscription came back too: a takeover from another replica
	// (opened only now) reaches the connection on m.
	b, err := OpenOptions(ctx, lim, "B", testLog(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	oa := &fakeOutlet{}
	id3, _, err := m.Attach(ctx, "carol", "", Resume{}, oa, welcomeFn)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Attach(ctx, "carol", id3, Resume{}, &fakeOutlet{}, welcomeFn); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "takeover from B did not reach A after the restart", oa.wasKicked)
	b.Close()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	r.stop() // its Wait goroutine is ours too
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines leaked: %d before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

// TestOpenRedisDown: Open fails quickly with a reason when Redis is not
// there at all.
func TestOpenRedisDown(t *testing.T) {
	lim := testLimits
	lim.Store, lim.RedisURL = "redis", fmt.Sprintf("redis://127.0.0.1:%d/0", freePort(t))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := Open(ctx, lim, "A", testLog(t)); err == nil {
		t.Fatal("Open with no Redis = nil error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Open took %v to fail", d)
	}
}

// TestOutboxRetry: a terminal produced while no connection is attached and
// Redis does not answer (CLIENT PAUSE) waits in memory and reaches the
// outbox once Redis answers again.
func TestOutboxRetry(t *testing.T) {
	r := newOwnRedis(t)
	lim := testLimits
	lim.Store, lim.RedisURL = "redis", "redis://"+r.addr()+"/0"
	m, err := OpenOptions(t.Context(), lim, "A", testLog(t), Options{Redis: RedisOptions{OpTimeout: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := t.Context()
	o := &fakeOutlet{}
	id, _, err := m.Attach(ctx, "alice", "", Resume{}, o, welcomeFn)
	if err != nil {
		t.Fatal(err)
	}
	s := m.Begin(id, "r1")
	m.Detach(id, o, o.acked())
	admin, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{r.addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.Do(ctx, admin.B().ClientPause().Timeout(1500).All().Build()).Error(); err != nil {
		t.Fatalf("CLIENT PAUSE: %v", err)
	}
	s.End(resultMsg("r1")) // the push times out: kept in memory
	if waiting := m.waitingForStore(); waiting != 1 {
		t.Fatalf("%d terminals waiting while Redis is paused, want 1", waiting)
	}
	eventually(t, 10*time.Second, "waiting terminal not pushed after the pause", func() bool {
		return m.waitingForStore() == 0
	})
	o2 := &fakeOutlet{}
	if _, _, err := m.Attach(ctx, "alice", id, Resume{}, o2, welcomeFn); err != nil {
		t.Fatal(err)
	}
	if got := countPrefix(o2.got(), `{"type":"result"`); got != 1 {
		t.Fatalf("resume got %q, want the result once", o2.got())
	}
}
