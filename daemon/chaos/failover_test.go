package chaos

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestReplicaKilled: two replicas on one Redis behind nginx. Clients
// start streams through nginx and vanish (their terminals land in the
// outbox in Redis); other clients stay connected with streams in flight.
// One replica is killed with SIGKILL. Every session is resumed through
// nginx, lands on the surviving replica with resumed:true, and every
// terminal that was in the outbox arrives exactly once. Streams that were
// running inside the killed process end with exactly one node_lost
// (written by the survivor within sessions.node_loss_after, 2s here).
func TestReplicaKilled(t *testing.T) {
	redis := startRedis(t)
	be := newFakeBackend(t)
	cfg := storeConfig(redis.addr, be.url(), 3*time.Second)
	reps := []*daemon{startDaemon(t, "replica-0", cfg), startDaemon(t, "replica-1", cfg)}
	front := startNginx(t, reps[0].client, reps[1].client)
	eventually(t, 5*time.Second, "nginx answering /healthz", func() bool { return httpStatus("http://"+front+"/healthz", nil) == 200 })
	survivor := reps[1]
	survivorBase := survivor.baseline()
	n := scale(20, 200)
	l := newLedger()

	// Phase 1: vanish after the first chunk; the terminals go to the outbox.
	conns := dialMany(t, front, "k", n)
	byNode := map[string]int{}
	var wg sync.WaitGroup
	for i, c := range conns {
		byNode[c.welcome.Node]++
		id := fmt.Sprintf("k%d", i)
		l.sent(c, id)
		if err := c.request("stream", id, job{Mode: modeSSE, Chunks: 3, GapMS: 100}); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				m, err := c.read(10 * time.Second)
				if err != nil {
					t.Errorf("client %d: %v", i, err)
					return
				}
				l.see(m)
				if m.Type == "chunk" || m.terminal() {
					vanish(c)
					return
				}
			}
		}()
	}
	wg.Wait()
	if byNode["replica-0"] == 0 || byNode["replica-1"] == 0 {
		t.Fatalf("clients by replica %v: nginx should spread them", byNode)
	}
	for _, r := range reps {
		eventually(t, 10*time.Second, "streams done", func() bool { return r.metric("orchestratord_requests_in_flight") == 0 })
	}

	// Phase 2: live clients with long streams, then SIGKILL replica-0.
	live := dialMany(t, front, "live", n)
	inKilled := map[string]bool{}
	killedID := map[string]string{} // session -> its stream in the killed replica
	for i, c := range live {
		id := fmt.Sprintf("L%d", i)
		if err := c.request("stream", id, job{Mode: modeSSE, Chunks: 60, GapMS: 50}); err != nil {
			t.Fatal(err)
		}
		if c.welcome.Node == "replica-0" {
			inKilled[id] = true
			killedID[c.welcome.Session] = id
		}
		l.sent(c, id)
	}
	for _, c := range live {
		for {
			m, err := c.read(10 * time.Second)
			if err != nil {
				t.Fatalf("live client before the kill: %v", err)
			}
			l.see(m)
			if m.Type == "chunk" {
				break
			}
		}
	}
	killedAt := time.Now()
	if err := reps[0].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	reps[0].exitCode(5 * time.Second)

	// Every session resumes through nginx, on the survivor.
	var sessions []*wsConn
	sessions = append(sessions, conns...)
	sessions = append(sessions, live...)
	var mu sync.Mutex
	var failed []string
	var dups int
	resumeStart := time.Now()
	for _, c := range sessions {
		c.close()
	}
	var rw sync.WaitGroup
	for i, c := range sessions {
		rw.Add(1)
		go func() {
			defer rw.Done()
			c2, err := dialAs(t, front, c.user, c.welcome.Session)
			if err == nil && (c2.welcome.Node != "replica-1" || !c2.welcome.Resumed || c2.welcome.Session != c.welcome.Session) {
				err = fmt.Errorf("welcome %+v, want session %s resumed on replica-1", c2.welcome, c.welcome.Session)
			}
			if err != nil {
				mu.Lock()
				failed = append(failed, fmt.Sprintf("session %d: %v", i, err))
				mu.Unlock()
				return
			}
			defer c2.close()
			seen := map[string]bool{}
			// A stream of the killed replica ends with node_lost within
			// node_loss_after: wait for it rather than close the
			// connection while it may be on its way.
			lostID := killedID[c.welcome.Session]
			waitUntil := time.Now().Add(10 * time.Second)
			for {
				m, err := c2.read(2 * time.Second)
				if err != nil && lostID != "" && !seen[lostID] && time.Now().Before(waitUntil) && isTimeout(err) {
					continue
				}
				if err != nil {
					return
				}
				if m.terminal() {
					if seen[m.ID] {
						mu.Lock()
						dups++
						mu.Unlock()
					}
					seen[m.ID] = true
				}
				l.see(m)
			}
		}()
	}
	rw.Wait()
	t.Logf("replica-0 (%d of %d vanished clients, %d of %d streaming clients) SIGKILLed; %d sessions resumed through nginx in %s (%s after the kill)",
		byNode["replica-0"], n, len(inKilled), n, len(sessions)-len(failed), time.Since(resumeStart).Round(time.Millisecond), time.Since(killedAt).Round(time.Millisecond))
	for _, f := range failed[:min(5, len(failed))] {
		t.Error(f)
	}
	if dups != 0 {
		t.Errorf("%d duplicate terminals after the failover", dups)
	}
	l.collect(t, front, 5*time.Second)
	l.check(t, "replica killed behind nginx")
	lost := 0
	for id := range inKilled {
		l.mu.Lock()
		m := l.first[id]
		l.mu.Unlock()
		if m.outcome() != "node_lost" {
			t.Errorf("stream %s in flight in the killed replica ended with %q, want node_lost", id, m.outcome())
		}
		lost++
	}
	t.Logf("streams in flight inside the killed replica: %d, each ended with one node_lost", lost)
	be.srv.CloseClientConnections()
	survivor.settles(survivorBase, 8)
}
