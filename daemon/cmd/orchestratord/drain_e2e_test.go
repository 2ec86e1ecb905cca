package main

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// drainLoad is the load a drain scenario puts on the daemon.
const (
	drainBusy = 150 // clients with one slow request in flight
	drainIdle = 50  // clients with nothing in flight
	drainLate = 20  // busy clients that send one more request during the drain
)

// drainClient is one client of a drain scenario and what it received.
type drainClient struct {
	n       int
	busy    bool
	c       *wsClient
	mu      sync.Mutex
	msgs    []msg
	code    int       // close code received (0: none)
	closeAt time.Time // when the close frame was read
	err     error     // read error other than a close frame
}

func (dc *drainClient) record(m msg) {
	dc.mu.Lock()
	dc.msgs = append(dc.msgs, m)
	dc.mu.Unlock()
}

// readAll records every message until the connection closes.
func (dc *drainClient) readAll(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		m, err := dc.c.read(time.Until(deadline))
		if err != nil {
			dc.mu.Lock()
			if code := closeCode(err); code != 0 {
				dc.code, dc.closeAt = code, time.Now()
			} else {
				dc.err = err
			}
			dc.mu.Unlock()
			return
		}
		dc.record(m)
	}
}

// terminals counts the terminal messages per id.
func terminals(msgs []msg, into map[string][]msg) {
	for _, m := range msgs {
		if m.terminal() {
			into[m.ID] = append(into[m.ID], m)
		}
	}
}

// probes polls /readyz on the admin listener and TCP connects to the
// client listener while a drain runs.
type probes struct {
	mu          sync.Mutex
	first503    time.Time // when the first 503 answer was received
	dialsAfter  int       // TCP connects that succeeded, started after first503
	firstRefuse time.Time // start of the first TCP connect that failed
	stop        chan struct{}
	draining    chan struct{} // closed at the first 503
	wg          sync.WaitGroup
}

func startProbes(admin, client string) *probes {
	pr := &probes{stop: make(chan struct{}), draining: make(chan struct{})}
	pr.wg.Add(2)
	go func() {
		defer pr.wg.Done()
		for {
			select {
			case <-pr.stop:
				return
			default:
			}
			if status(admin, "/readyz") == http.StatusServiceUnavailable {
				pr.mu.Lock()
				pr.first503 = time.Now()
				pr.mu.Unlock()
				close(pr.draining)
				return
			}
			time.Sleep(time.Millisecond) // polling interval
		}
	}()
	go func() {
		defer pr.wg.Done()
		for {
			select {
			case <-pr.stop:
				return
			default:
			}
			start := time.Now()
			c, err := net.DialTimeout("tcp", client, 500*time.Millisecond)
			pr.mu.Lock()
			if err != nil {
				pr.firstRefuse = start
				pr.mu.Unlock()
				return
			}
			if !pr.first503.IsZero() && start.After(pr.first503) {
				pr.dialsAfter++
			}
			pr.mu.Unlock()
			c.Close()
			time.Sleep(5 * time.Millisecond) // polling interval
		}
	}()
	return pr
}

func (pr *probes) halt() {
	close(pr.stop)
	pr.wg.Wait()
}

// drainSetup starts a daemon with a slow route and the drain load, and
// returns once every busy client's request is in flight.
func (e *e2e) drainSetup(t *testing.T, store string, delay, timeout time.Duration) (*proc, []*drainClient, string) {
	dir := t.TempDir()
	client, admin := freePort(t), freePort(t)
	cfg := filepath.Join(dir, "config.yaml")
	sessions := "sessions: {store: memory}\n"
	if store == "redis" {
		sessions = "sessions: {store: redis, redis_url: \"redis://127.0.0.1:6379/0\", ttl: 5m}\n"
	}
	writeFile(t, cfg, configYAML(client, admin, 300*time.Millisecond, timeout, fmt.Sprintf(`backends:
  slow: {kind: echo, delay: %s, max_concurrent: 1000}
routes:
  slow: {backend: slow, timeout: 20s}
%s`, delay, sessions)))
	p := e.startDaemon(t, cfg, client, admin)
	p.waitReady(10 * time.Second)

	clients := make([]*drainClient, drainBusy+drainIdle)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	errs := make(chan error, len(clients))
	for i := range clients {
		dc := &drainClient{n: i, busy: i < drainBusy}
		clients[i] = dc
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dialWS(client, "", 10*time.Second)
			if err != nil {
				errs <- fmt.Errorf("client %d: %w", dc.n, err)
				return
			}
			dc.c = c
			if !dc.busy {
				return
			}
			if err := c.request("slow", "r-"+strconv.Itoa(dc.n), dc.n); err != nil {
				errs <- fmt.Errorf("client %d: send: %w", dc.n, err)
				return
			}
			// Frames of a connection are handled in order: the pong says
			// the slow request was accepted and is in flight.
			pong, others, err := c.roundTrip("ping", "p-"+strconv.Itoa(dc.n), nil, 10*time.Second)
			if err != nil || pong.Type != "pong" {
				errs <- fmt.Errorf("client %d: ping: %+v %v", dc.n, pong, err)
				return
			}
			for _, m := range others {
				dc.record(m)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, dc := range clients {
			if dc.c != nil {
				dc.c.close()
			}
		}
	})
	return p, clients, cfg
}

// runDrain sends SIGTERM with readers and probes running; late clients
// send one more request once /readyz says 503. It returns when every
// client's connection has closed and the daemon exited 0.
func runDrain(t *testing.T, p *proc, clients []*drainClient, readFor time.Duration) *probes {
	pr := startProbes(p.admin, p.client)
	var readers sync.WaitGroup
	for _, dc := range clients {
		readers.Add(1)
		go func() {
			defer readers.Done()
			dc.readAll(readFor)
		}()
	}
	p.signal(syscall.SIGTERM)
	select {
	case <-pr.draining:
	case <-time.After(5 * time.Second):
		t.Fatal("/readyz did not turn 503 after SIGTERM")
	}
	// During lb_grace the listener is open but handshakes are refused.
	if _, err := dialWS(p.client, "", 2*time.Second); statusOf(err) != http.StatusServiceUnavailable {
		t.Errorf("handshake during the drain: got %v, want HTTP 503", err)
	}
	for i := 0; i < drainLate; i++ {
		if err := clients[i].c.request("slow", "late-"+strconv.Itoa(i), i); err != nil {
			t.Errorf("client %d: late request: %v", i, err)
		}
	}
	readers.Wait()
	if code := p.exitCode(15 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	pr.halt()
	return pr
}

// checkProbes: /readyz turned 503 before the listener refused connections,
// which stayed open about lb_grace, and before any busy client's close.
func checkProbes(t *testing.T, pr *probes, clients []*drainClient) {
	if pr.firstRefuse.IsZero() {
		t.Fatal("the client listener never refused a connection")
	}
	if !pr.first503.Before(pr.firstRefuse) {
		t.Errorf("/readyz 503 at %s, first refused connect at %s: want 503 first", pr.first503, pr.firstRefuse)
	}
	if pr.dialsAfter == 0 {
		t.Errorf("no TCP connect succeeded after /readyz turned 503: the listener closed without lb_grace")
	}
	// 100ms of slack for a loaded machine: first503 is when the probe's
	// answer arrived, which may be well after the flip.
	if d := pr.firstRefuse.Sub(pr.first503); d < 200*time.Millisecond {
		t.Errorf("listener refused %s after /readyz turned 503, want about lb_grace (300ms)", d)
	}
	for _, dc := range clients {
		if dc.busy && !dc.closeAt.IsZero() && !dc.closeAt.After(pr.first503) {
			t.Errorf("client %d closed at %s, before /readyz turned 503 at %s", dc.n, dc.closeAt, pr.first503)
		}
	}
	t.Logf("/readyz 503 -> listener refusing: %s; %d connects accepted meanwhile", pr.firstRefuse.Sub(pr.first503), pr.dialsAfter)
}

// checkReconnectThenClose: the last message before the close is a
// reconnect (reason draining), and the close code is the one wanted.
func checkReconnectThenClose(t *testing.T, dc *drainClient, wantCode int) {
	t.Helper()
	if dc.err != nil {
		t.Errorf("client %d: read error %v, want a close frame %d", dc.n, dc.err, wantCode)
		return
	}
	if dc.code != wantCode {
		t.Errorf("client %d (busy %v): close code %d, want %d", dc.n, dc.busy, dc.code, wantCode)
	}
	if len(dc.msgs) == 0 || dc.msgs[len(dc.msgs)-1].Type != "reconnect" {
		t.Errorf("client %d: messages %+v, want a reconnect last", dc.n, dc.msgs)
		return
	}
	rc := dc.msgs[len(dc.msgs)-1]
	if rc.Reason != "draining" || rc.AfterMS != 250 {
		t.Errorf("client %d: reconnect %+v, want reason draining, after_ms 250", dc.n, rc)
	}
}

// testDrain: 150 clients with a request in flight (1.5s, longer than
// lb_grace, shorter than drain.timeout) and 50 idle ones; SIGTERM. Every
// request gets exactly one terminal on its socket, late requests get
// draining, every client gets reconnect then 1012, the daemon exits 0.
func (e *e2e) testDrain(t *testing.T) {
	p, clients, _ := e.drainSetup(t, "memory", 1500*time.Millisecond, 10*time.Second)
	start := time.Now()
	pr := runDrain(t, p, clients, 15*time.Second)
	took := time.Since(start)
	checkProbes(t, pr, clients)

	got := map[string][]msg{}
	for _, dc := range clients {
		terminals(dc.msgs, got)
		checkReconnectThenClose(t, dc, 1012)
	}
	for i := 0; i < drainBusy; i++ {
		id := "r-" + strconv.Itoa(i)
		ts := got[id]
		if len(ts) != 1 {
			t.Errorf("%s: %d terminals %+v, want exactly 1", id, len(ts), ts)
			continue
		}
		if ts[0].Type != "result" || string(ts[0].Data) != strconv.Itoa(i) {
			t.Errorf("%s: terminal %+v, want result %d", id, ts[0], i)
		}
	}
	for i := 0; i < drainLate; i++ {
		id := "late-" + strconv.Itoa(i)
		if ts := got[id]; len(ts) != 1 || ts[0].Type != "error" || ts[0].Code != "draining" {
			t.Errorf("%s: terminals %+v, want one error draining", id, ts)
		}
	}
	if n := p.logs.count("drain timeout reached"); n != 0 {
		t.Errorf("the drain hit its timeout; want it to finish when the requests did")
	}
	if took > 5*time.Second {
		t.Errorf("drain took %s, want about the backend delay (1.5s)", took)
	}
	t.Logf("drain of %d clients (%d busy) took %s", len(clients), drainBusy, took)
}

// testDrainTimeoutOutbox: drain.timeout (800ms) shorter than the backend
// (3s). At the timeout the requests are cancelled and their terminals go to
// the session outboxes in Redis; busy clients get reconnect and 1001. A
// second daemon sharing Redis delivers each outbox after the welcome of
// the resumed session: every request has exactly one terminal, on the
// socket or in the outbox.
func (e *e2e) testDrainTimeoutOutbox(t *testing.T) {
	requireRedis(t)
	p, clients, cfg := e.drainSetup(t, "redis", 3*time.Second, 800*time.Millisecond)
	start := time.Now()
	pr := runDrain(t, p, clients, 10*time.Second)
	took := time.Since(start)
	checkProbes(t, pr, clients)
	if took > 4*time.Second {
		t.Errorf("drain took %s, want about drain.timeout (800ms)", took)
	}
	if n := p.logs.count("drain timeout reached"); n != 1 {
		t.Errorf("got %d \"drain timeout reached\" log lines, want 1", n)
	}

	got := map[string][]msg{}
	for _, dc := range clients {
		terminals(dc.msgs, got)
		want := 1012
		if dc.busy {
			want = 1001
		}
		checkReconnectThenClose(t, dc, want)
	}
	for i := 0; i < drainLate; i++ {
		id := "late-" + strconv.Itoa(i)
		if ts := got[id]; len(ts) != 1 || ts[0].Type != "error" || ts[0].Code != "draining" {
			t.Errorf("%s: terminals %+v, want one error draining", id, ts)
		}
	}

	// A second daemon on the same Redis: resume every busy session.
	client2, admin2 := freePort(t), freePort(t)
	p2 := e.startDaemon(t, cfg, client2, admin2, "ORCH_LISTEN_CLIENT="+client2, "ORCH_LISTEN_ADMIN="+admin2)
	p2.waitReady(10 * time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	outboxed := 0
	sem := make(chan struct{}, 32)
	for i := 0; i < drainBusy; i++ {
		dc := clients[i]
		id := "r-" + strconv.Itoa(i)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dialWS(client2, "session="+dc.c.welcome.Session, 10*time.Second)
			if err != nil {
				t.Errorf("client %d: resume: %v", dc.n, err)
				return
			}
			defer c.close()
			if !c.welcome.Resumed || c.welcome.Session != dc.c.welcome.Session {
				t.Errorf("client %d: welcome %+v, want resumed session %s", dc.n, c.welcome, dc.c.welcome.Session)
				return
			}
			var mine []msg
			for {
				// The outbox follows the welcome.
				m, err := c.read(3 * time.Second)
				if err != nil {
					t.Errorf("client %d: reading the outbox for %s: %v; got %+v", dc.n, id, err, mine)
					return
				}
				mine = append(mine, m)
				if m.terminal() && m.ID == id {
					break
				}
			}
			mu.Lock()
			terminals(mine, got)
			outboxed++
			mu.Unlock()
		}()
	}
	wg.Wait()
	for i := 0; i < drainBusy; i++ {
		id := "r-" + strconv.Itoa(i)
		ts := got[id]
		if len(ts) != 1 {
			t.Errorf("%s: %d terminals (socket and outbox) %+v, want exactly 1", id, len(ts), ts)
			continue
		}
		if ts[0].Type != "error" {
			t.Errorf("%s: terminal %+v, want an error (cancelled at the drain timeout)", id, ts[0])
		}
	}
	t.Logf("drain past its timeout took %s; %d outboxes delivered by the second daemon", took, outboxed)
	p2.signal(syscall.SIGTERM)
	if code := p2.exitCode(10 * time.Second); code != 0 {
		t.Errorf("second daemon: exit code %d, want 0", code)
	}
}
