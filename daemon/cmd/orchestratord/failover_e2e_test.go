package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/internal/redistest"
)

// TestStoreFailoverE2E kills the Redis master under two daemon replicas
// behind nginx while clients send requests and resume sessions: on a
// Redis Cluster (the master serving a resumed session's slot; its replica
// is promoted) and under Sentinel (the replica is promoted). The daemons
// reconnect by themselves; every request ends with exactly one terminal;
// no session is lost; resumes work again after the failover. The figures
// (requests in flight at the kill, terminals, resume latency before,
// during and after) are logged.
func TestStoreFailoverE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs the binary and Redis servers")
	}
	redistest.SkipUnlessInstalled(t)
	nginx := lookNginx(t)
	bin := buildDaemon(t, t.TempDir())
	t.Run("cluster_master_killed", func(t *testing.T) {
		c := redistest.StartClusterT(t, clusterE2EPorts)
		testStoreFailover(t, bin, nginx, c.URL(), func(ids []string) func() error {
			m, err := c.MasterOf("orch:{" + ids[0] + "}")
			if err != nil {
				t.Fatal(err)
			}
			if err := m.WaitReplicasSynced(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			t.Logf("killing cluster master %s (serves session %s)", m.Addr, ids[0])
			m.Kill()
			return func() error { return c.WaitHealthy(30 * time.Second) }
		})
	})
	t.Run("sentinel_master_killed", func(t *testing.T) {
		s := redistest.StartSentinelT(t, sentinelE2EPorts)
		testStoreFailover(t, bin, nginx, s.URL(), func([]string) func() error {
			if err := s.WaitSynced(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			t.Logf("killing sentinel master %s", s.Master.Addr)
			s.Master.Kill()
			return func() error {
				deadline := time.Now().Add(30 * time.Second)
				for time.Now().Before(deadline) {
					if a, err := s.MasterAddr(); err == nil && a == s.Replica.Addr && s.Replica.Role() == "master" {
						return nil
					}
					time.Sleep(50 * time.Millisecond) // polling interval
				}
				return fmt.Errorf("sentinels did not promote %s", s.Replica.Addr)
			}
		})
	})
}

// phase of the failover test: before the kill, until healed, after.
const (
	phaseBefore = iota
	phaseDuring
	phaseAfter
)

var phaseNames = [3]string{"before", "during", "after"}

// resumeStats are the resumes of one phase.
type resumeStats struct {
	lat    []time.Duration // successful resumes
	failed int             // handshake refused or failed
	lost   int             // welcome with another session or resumed=false
	first  string          // the first failure
}

func testStoreFailover(t *testing.T, bin, nginx, url string, kill func(ids []string) (healed func() error)) {
	// Half the clients chat (each turn reads the session's history from
	// the store and appends to it), half call a slow echo (no store).
	llm := httptest.NewServer(http.HandlerFunc(fakeOpenAI))
	defer llm.Close()
	reps, front := startReplicas(t, bin, nginx, "failover.conf", [2]string{"replica-a", "replica-b"}, fmt.Sprintf(`sessions:
  store: redis
  redis_url: %q
backends:
  slow: {kind: echo, delay: 200ms}
  llm: {kind: openai, endpoints: [%q], model: test-model}
routes:
  slow: {backend: slow, timeout: 10s}
  chat: {backend: llm, timeout: 10s}
`, url, llm.URL+"/v1"))

	// Sessions that resumers take over and over, through nginx.
	const resumers, clients = 4, 16
	ids := make([]string, resumers)
	for i := range ids {
		c, err := dialWS(front, "", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = c.welcome.Session
		c.close()
	}

	var (
		phase    atomic.Int32
		inFlight atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		mu       sync.Mutex
		sent     int
		results  int
		errs     = map[string]int{} // error terminals by code
		problems []string
		resumes  [3]resumeStats
	)
	problem := func(format string, a ...any) {
		mu.Lock()
		problems = append(problems, fmt.Sprintf(format, a...))
		mu.Unlock()
	}
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialWS(front, "", 5*time.Second)
			if err != nil {
				problem("client %d: %v", i, err)
				return
			}
			defer c.close()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("c%d-%d", i, n)
				inFlight.Add(1)
				mu.Lock()
				sent++
				mu.Unlock()
				var err error
				if i%2 == 1 {
					time.Sleep(50 * time.Millisecond) // pacing: under limits.session_rate
					err = c.request("chat", id, map[string]string{"text": "my name is Ann"})
				} else {
					err = c.request("slow", id, id)
				}
				if err != nil {
					problem("client %d send %s: %v", i, id, err)
					return
				}
				for {
					m, err := c.read(15 * time.Second)
					if err != nil {
						problem("client %d waiting for %s: %v", i, id, err)
						return
					}
					if !m.terminal() {
						continue
					}
					if m.ID != id {
						problem("client %d: terminal %+v for %s while waiting for %s (a second terminal?)", i, m, m.ID, id)
						continue
					}
					inFlight.Add(-1)
					mu.Lock()
					if m.Type == "result" {
						results++
						if want := `"` + id + `"`; i%2 == 0 && string(m.Data) != want || i%2 == 1 && !strings.Contains(string(m.Data), "hi Ann") {
							problems = append(problems, fmt.Sprintf("result of %s is %s", id, m.Data))
						}
					} else {
						errs[m.Code]++
					}
					mu.Unlock()
					break
				}
			}
		}()
	}
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				p := phase.Load()
				t0 := time.Now()
				c, err := dialWS(front, "session="+id, 5*time.Second)
				lat := time.Since(t0)
				mu.Lock()
				switch {
				case err != nil:
					resumes[p].failed++
					if resumes[p].first == "" {
						resumes[p].first = err.Error()
					}
				case c.welcome.Session != id || !c.welcome.Resumed:
					resumes[p].lost++
					problems = append(problems, fmt.Sprintf("resumer %d (%s phase): welcome %+v, want session %s resumed", i, phaseNames[p], c.welcome, id))
				default:
					resumes[p].lat = append(resumes[p].lat, lat)
				}
				mu.Unlock()
				if c != nil {
					c.close()
				}
				time.Sleep(20 * time.Millisecond) // pacing, not synchronisation
			}
		}()
	}

	time.Sleep(2 * time.Second)
	phase.Store(phaseDuring)
	atKill := inFlight.Load()
	killed := time.Now()
	healed := kill(ids)
	// /readyz of each replica, polled from the kill until both are ready
	// after the store healed.
	var notReady [2]time.Duration
	pollStop := make(chan struct{})
	pollDone := make(chan time.Duration)
	go func() {
		last := time.Now()
		var bothReady time.Duration
		for {
			ready := 0
			for i, r := range reps {
				if status(r.admin, "/readyz") == http.StatusOK {
					ready++
				} else {
					notReady[i] += time.Since(last)
				}
			}
			last = time.Now()
			if ready == len(reps) && bothReady == 0 {
				bothReady = time.Since(killed)
			} else if ready != len(reps) {
				bothReady = 0
			}
			select {
			case <-pollStop:
				pollDone <- bothReady
				return
			case <-time.After(50 * time.Millisecond): // polling interval
			}
		}
	}()
	err := healed()
	storeHealed := time.Since(killed)
	if err == nil {
		for _, r := range reps {
			r.waitReady(30 * time.Second)
		}
	}
	close(pollStop)
	readyAt := <-pollDone
	if err != nil {
		close(stop)
		wg.Wait()
		t.Fatal(err)
	}
	allReady := max(readyAt, storeHealed)
	phase.Store(phaseAfter)
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	terminals := results
	for _, n := range errs {
		terminals += n
	}
	t.Logf("kill at +2s: requests in flight at the kill %d; store failed over in %v, both replicas ready %v after the kill (readyz not ready while polled: a %v, b %v)",
		atKill, storeHealed.Round(time.Millisecond), allReady.Round(time.Millisecond), notReady[0].Round(time.Millisecond), notReady[1].Round(time.Millisecond))
	t.Logf("requests sent %d, terminals delivered %d (results %d, errors %v), still in flight %d",
		sent, terminals, results, errs, inFlight.Load())
	for p, r := range resumes {
		t.Logf("resumes %-6s: ok %4d  failed %3d  lost %d  p50 %v  p99 %v %s", phaseNames[p], len(r.lat), r.failed, r.lost,
			pct(r.lat, 50), pct(r.lat, 99), r.first)
	}
	for _, p := range problems {
		t.Error(p)
	}
	if terminals != sent || inFlight.Load() != 0 {
		t.Errorf("%d requests sent, %d terminals: want one terminal each", sent, terminals)
	}
	if len(resumes[phaseAfter].lat) == 0 || resumes[phaseAfter].failed != 0 {
		t.Errorf("after the failover: %d resumes ok, %d failed; want all ok", len(resumes[phaseAfter].lat), resumes[phaseAfter].failed)
	}
	if resumes[phaseBefore].failed != 0 {
		t.Errorf("%d resumes failed before the kill", resumes[phaseBefore].failed)
	}
	// Every session resumes on each replica once more, directly.
	for _, id := range ids {
		for _, r := range reps {
			c, err := dialWS(r.client, "session="+id, 5*time.Second)
			if err != nil {
				t.Errorf("resume %s on %s after the failover: %v", id, r.client, err)
				continue
			}
			if c.welcome.Session != id || !c.welcome.Resumed {
				t.Errorf("resume %s after the failover: welcome %+v", id, c.welcome)
			}
			c.close()
		}
	}
	if t.Failed() {
		for i, r := range reps {
			t.Logf("replica %d log:\n%s", i, tail(r.logs.String(), 30))
		}
	}
}

// pct returns the p-th percentile of d (0 when empty).
func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)].Round(10 * time.Microsecond)
}
