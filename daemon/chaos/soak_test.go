package chaos

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSoak is the bounded soak (`make soak`: CHAOS_SOAK=10m): mixed
// traffic from closed-loop clients (JSON, SSE and NDJSON streams, echo),
// clients that resume their session from a new connection mid-request
// (taking the old one over), and backend faults injected
// on a schedule (5xx bursts that open the breaker onto its fallback,
// hangs past the deadline, resets mid-stream). It prints requests sent,
// terminals received, missing and duplicates (both must be 0), and the
// daemon's memory at start and end. CHAOS_SOAK unset: skipped.
func TestSoak(t *testing.T) {
	spec := os.Getenv("CHAOS_SOAK")
	if spec == "" {
		t.Skip("CHAOS_SOAK not set (e.g. CHAOS_SOAK=10m)")
	}
	dur, err := time.ParseDuration(spec)
	if err != nil {
		t.Fatalf("CHAOS_SOAK=%q: %v", spec, err)
	}
	be := newFakeBackend(t)
	d := startDaemon(t, "chaos-soak", fmt.Sprintf(`limits:
  session_inflight: 64
  session_rate: 100000
  session_burst: 100000
sessions:
  outbox_max: 1000
backends:
  work: {kind: http, endpoints: [%q], max_concurrent: 5000, breaker: {failures: 20, cooldown: 1s}}
  spare: {kind: echo}
  echo: {kind: echo}
routes:
  work: {backend: work, timeout: 1s, fallback: spare}
  echo: {backend: echo}
`, be.url()))
	base := d.baseline()
	l := newLedger()
	clients := scale(20, 100)
	stop := make(chan struct{})
	var sent, vanished, resumes atomic.Int64

	// The fault schedule: 3 s segments.
	faults := []string{"", mode5xx, "", modeHang, "", modeReset, "", modeBadSSE}
	var sched sync.WaitGroup
	sched.Add(1)
	go func() {
		defer sched.Done()
		tick := time.NewTicker(3 * time.Second)
		defer tick.Stop()
		for i := 0; ; i++ {
			be.fault.Store(faults[i%len(faults)])
			select {
			case <-stop:
				be.fault.Store("")
				return
			case <-tick.C:
			}
		}
	}()

	modes := []string{modeJSON, modeSSE, modeNDJSON}
	var wg sync.WaitGroup
	for ci := 0; ci < clients; ci++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(ci), 7))
			user := fmt.Sprintf("soak%d", ci)
			c, err := dialAs(t, d.client, user, "")
			if err != nil {
				t.Errorf("client %d: %v", ci, err)
				return
			}
			defer func() { c.close() }()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("s%dx%d", ci, k)
				route, data := "work", any(job{Mode: modes[rng.IntN(len(modes))], Chunks: 4, GapMS: 20})
				if rng.IntN(4) == 0 {
					route, data = "echo", k
				}
				l.sent(c, id)
				sent.Add(1)
				if err := c.request(route, id, data); err != nil {
					t.Errorf("client %d send: %v", ci, err)
					return
				}
				vanish := rng.IntN(50) == 0
				for !l.done(id) {
					m, err := c.read(10 * time.Second)
					if err != nil {
						t.Errorf("client %d waiting for %s: %v", ci, id, err)
						return
					}
					l.see(m)
					if vanish && m.ID == id {
						// Gone mid-request: back on the same session from a
						// new connection, which takes the old one over
						// (4009); the old one is read to its end, so that
						// nothing the daemon wrote is dropped by the client.
						vanished.Add(1)
						c2, err := dialAs(t, d.client, user, c.welcome.Session)
						if err != nil {
							t.Errorf("client %d resume: %v", ci, err)
							return
						}
						if err := l.pump(c, 10*time.Second, nil); closeCode(err) != 4009 {
							t.Errorf("client %d: taken-over connection ended with %v, want 4009", ci, err)
						}
						c.close()
						resumes.Add(1)
						c, vanish = c2, false
					}
				}
			}
		}()
	}
	start := time.Now()
	var peak int
	func() {
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		end := time.After(dur)
		for {
			select {
			case <-end:
				return
			case <-tick.C:
				s := d.stats()
				peak = max(peak, s.rssKB)
				acc, miss, dups := l.report()
				t.Logf("soak %s: sent=%d terminals=%d pending=%d duplicates=%d vanished=%d %s",
					time.Since(start).Round(time.Second), sent.Load(), acc-miss, miss, dups, vanished.Load(), s)
			}
		}
	}()
	close(stop)
	wg.Wait()
	sched.Wait()
	l.collect(t, d.client, 10*time.Second)
	acc, miss, dups := l.report()
	end := d.stats()
	t.Logf("SOAK %s: requests sent %d, terminals received %d, missing %d, duplicates %d; vanished+resumed %d; outcomes: %s",
		dur, sent.Load(), acc-miss, miss, dups, resumes.Load(), l.outcomeSummary())
	t.Logf("SOAK memory: start %.1f MiB, peak %.1f MiB, end %.1f MiB; goroutines %d → %d; fds %d → %d",
		float64(base.rssKB)/1024, float64(peak)/1024, float64(end.rssKB)/1024, base.goroutines, end.goroutines, base.fds, end.fds)
	l.check(t, "soak")
	be.srv.CloseClientConnections()
	d.settles(base, 16)
}
