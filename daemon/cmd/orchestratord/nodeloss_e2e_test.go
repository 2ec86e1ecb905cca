package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestNodeLossE2E: two replicas on the real Redis behind a real nginx,
// node_loss_after 2s. 50 sessions on replica A each finish one request and
// then stream two long answers (100 streams in flight on A). A is killed
// with SIGKILL; every session resumes through nginx (on B). Every stream
// that was in flight on A ends with exactly one terminal, node_lost,
// within node_loss_after of the kill; the finished requests get nothing
// more; a second resume finds nothing owed. The node_lost delays (p50,
// max) are logged. Five more sessions on A stream on a route with
// retry_on_node_loss: their requests run again on B (restart notice,
// chunks from seq 0, one result).
//
// Acceptance (contract v1.1 section 4a): 20 more sessions on A each send
// a request H to a backend that never answers, and A is killed the moment
// the backend has received all of them (a request's backend is called
// only once its record is in the store): each H still gets exactly one
// node_lost. Each of those sessions also sends Z just before the kill:
// Z is either accepted (listed in the resume's inflight, or answered)
// and gets exactly one node_lost, or was never accepted: no terminal, not
// listed, and the backend never saw it. The resume's welcome lists the
// requests in flight on A (inflight, read from the store by B).
func TestNodeLossE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs the binary")
	}
	requireRedis(t)
	nginx := lookNginx(t)
	bin := buildDaemon(t, t.TempDir())

	stream := httptest.NewServer(http.HandlerFunc(slowNDJSON))
	defer stream.Close()
	// hang never answers; it records which requests reached it.
	var called sync.Map // "<session> <request>" -> true
	stopHang := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called.Store(r.Header.Get("X-Session-Id")+" "+r.Header.Get("X-Request-Id"), true)
		select {
		case <-r.Context().Done():
		case <-stopHang:
		}
	}))
	defer hang.Close()
	defer close(stopHang) // before Close, which waits for the handlers

	const lossAfter = 2 * time.Second
	// Node names of their own: the shared Redis keeps node keys by name.
	var tag [4]byte
	_, _ = rand.Read(tag[:])
	names := [2]string{"nl-a-" + hex.EncodeToString(tag[:]), "nl-b-" + hex.EncodeToString(tag[:])}
	reps, front := startReplicas(t, bin, nginx, "replicas.conf", names, fmt.Sprintf(`sessions:
  store: redis
  redis_url: redis://127.0.0.1:6379/0
  outbox_max: 1000
  node_loss_after: %s
backends:
  stream: {kind: http, endpoints: [%q]}
  hang: {kind: http, endpoints: [%q]}
routes:
  stream: {backend: stream, timeout: 90s, idle_timeout: 5s}
  again: {backend: stream, timeout: 90s, idle_timeout: 5s, retry_on_node_loss: true}
  hang: {backend: hang, timeout: 90s}
`, lossAfter, stream.URL+"/stream", hang.URL+"/hang"))
	a := reps[0]

	const sessionsN = 50
	const retryN = 5
	streams := []string{"L1", "L2"}
	ids := make([]string, sessionsN)
	lasts := make([]uint64, sessionsN) // position of the finished request's result
	conns := make([]*wsClient, sessionsN)
	var wg sync.WaitGroup
	// Room for every error of every goroutine below (the retry sessions
	// send up to two): a full channel would hang the test instead of
	// failing it.
	errs := make(chan error, sessionsN+2*retryN)
	for i := range sessionsN {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialWS(a.client, "", 5*time.Second)
			if err != nil {
				errs <- fmt.Errorf("session %d: dial A: %w", i, err)
				return
			}
			conns[i], ids[i] = c, c.welcome.Session
			term, _, err := c.roundTrip("stream", "f", map[string]int{"n": 1}, 10*time.Second)
			if err != nil || term.Type != "result" || term.Pos == 0 {
				errs <- fmt.Errorf("session %d: finished request: %+v %v", i, term, err)
				return
			}
			lasts[i] = term.Pos
			for _, id := range streams {
				if err := c.request("stream", id, map[string]int{"n": 600}); err != nil {
					errs <- fmt.Errorf("session %d: %w", i, err)
					return
				}
			}
			// Both streams run on A once each has produced a chunk.
			started := map[string]bool{}
			for len(started) < len(streams) {
				m, err := c.read(10 * time.Second)
				if err != nil {
					errs <- fmt.Errorf("session %d: waiting for the first chunks: %w", i, err)
					return
				}
				if m.terminal() {
					errs <- fmt.Errorf("session %d: %s ended before the kill: %+v", i, m.ID, m)
					return
				}
				if m.Type == "chunk" {
					started[m.ID] = true
				}
			}
		}()
	}
	// Sessions whose request retries on node loss.
	retryIDs := make([]string, retryN)
	for i := range retryN {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialWS(a.client, "", 5*time.Second)
			if err != nil {
				errs <- fmt.Errorf("retry session %d: dial A: %w", i, err)
				return
			}
			retryIDs[i] = c.welcome.Session
			defer c.close()
			if err := c.request("again", "R", map[string]int{"n": 30}); err != nil {
				errs <- fmt.Errorf("retry session %d: %w", i, err)
				return
			}
			if m, err := c.read(10 * time.Second); err != nil || m.Type != "chunk" {
				errs <- fmt.Errorf("retry session %d: first chunk: %+v %v", i, m, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// Accepted, then killed: H reaches the backend (so it was recorded),
	// Z is sent just before the kill.
	const acceptN = 20
	acceptIDs := make([]string, acceptN)
	acceptConns := make([]*wsClient, acceptN)
	for i := range acceptN {
		c, err := dialWS(a.client, "", 5*time.Second)
		if err != nil {
			t.Fatalf("accept session %d: dial A: %v", i, err)
		}
		acceptConns[i], acceptIDs[i] = c, c.welcome.Session
		if err := c.request("hang", "H", nil); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		seen := 0
		for _, id := range acceptIDs {
			if _, ok := called.Load(id + " H"); ok {
				seen++
			}
		}
		if seen == acceptN {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hang backend saw %d of %d requests", seen, acceptN)
		}
		time.Sleep(time.Millisecond) // polling the backend's record, not synchronisation
	}
	for _, c := range acceptConns {
		if err := c.request("hang", "Z", nil); err != nil {
			t.Fatal(err)
		}
	}

	killed := time.Now()
	a.signal(syscall.SIGKILL)
	<-a.done
	for _, c := range conns {
		c.close()
	}
	for _, c := range acceptConns {
		c.close()
	}

	// Resume every session through nginx, at once.
	type outcome struct {
		delays  []time.Duration
		replay  []bool        // per delay: the node_lost came in the resume's replay
		welcome time.Duration // the resume's welcome, after the kill
		last    uint64        // highest position seen
		err     error
	}
	results := make([]outcome, sessionsN)
	for i := range sessionsN {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &results[i]
			// Resume after the position seen (the finished request's
			// result); a v1 resume could replay that result too, since the
			// killed replica could not record what its socket delivered.
			c, err := dialWS(front, fmt.Sprintf("session=%s&last=%d", ids[i], lasts[i]), 5*time.Second)
			if err != nil {
				res.err = fmt.Errorf("resume through nginx: %w", err)
				return
			}
			defer c.close()
			res.welcome = time.Since(killed)
			if !c.welcome.Resumed || c.welcome.Node != names[1] {
				res.err = fmt.Errorf("welcome %+v, want resumed on %s", c.welcome, names[1])
				return
			}
			// The streams ran on A: listed in flight by B's welcome
			// (read from the store), unless a sweep had already ended
			// them (their node_lost is then in the replay).
			for _, id := range streams {
				if !slices.Contains(c.welcome.Inflight, id) && c.welcome.Replay == 0 {
					res.err = fmt.Errorf("welcome %+v: %s neither in flight nor replayed", c.welcome, id)
					return
				}
			}
			got := map[string]int{}
			terms := -1 // index of the terminal being read (the replay's come first)
			// Read until both streams ended, then on for as long again
			// as node_loss_after: a second terminal would show up then.
			deadline := time.Now().Add(lossAfter + 8*time.Second)
			quiet := time.Time{}
			for {
				wait := time.Until(deadline)
				if !quiet.IsZero() {
					wait = time.Until(quiet)
				}
				if wait <= 0 {
					break
				}
				m, err := c.read(wait)
				if err != nil {
					if !quiet.IsZero() && isTimeout(err) {
						break
					}
					res.err = fmt.Errorf("read after resume (terminals so far %v): %w", got, err)
					return
				}
				if !m.terminal() {
					continue
				}
				terms++
				got[m.ID]++
				if !slices.Contains(streams, m.ID) {
					res.err = fmt.Errorf("terminal for %s, which had finished before the kill: %+v", m.ID, m)
					return
				}
				if m.Type != "error" || m.Code != "node_lost" {
					res.err = fmt.Errorf("terminal of %s is %+v, want error node_lost", m.ID, m)
					return
				}
				if got[m.ID] > 1 {
					res.err = fmt.Errorf("second terminal for %s", m.ID)
					return
				}
				res.delays = append(res.delays, time.Since(killed))
				res.replay = append(res.replay, terms < c.welcome.Replay)
				res.last = max(res.last, m.Pos)
				if len(res.delays) == len(streams) {
					quiet = time.Now().Add(lossAfter)
				}
			}
			if len(res.delays) != len(streams) {
				res.err = fmt.Errorf("terminals %v, want one node_lost for each of %v", got, streams)
			}
		}()
	}
	acceptErrs := make([]error, acceptN)
	acceptedZ := make([]bool, acceptN)
	for i := range acceptN {
		wg.Add(1)
		go func() {
			defer wg.Done()
			acceptedZ[i], acceptErrs[i] = acceptedSeen(front, acceptIDs[i], names[1], lossAfter, &called)
		}()
	}
	retryErrs := make([]error, retryN)
	for i := range retryN {
		wg.Add(1)
		go func() {
			defer wg.Done()
			retryErrs[i] = rerunSeen(front, retryIDs[i], names[1])
		}()
	}
	wg.Wait()
	zs := 0
	for i, err := range acceptErrs {
		if err != nil {
			t.Fatalf("accept session %d (%s): %v", i, acceptIDs[i], err)
		}
		if acceptedZ[i] {
			zs++
		}
	}
	t.Logf("%d requests accepted just before SIGKILL: one node_lost each; of %d sent at the kill, %d had been accepted (one node_lost each), %d not (no terminal, not in flight, backend not called)",
		acceptN, acceptN, zs, acceptN-zs)
	for i, err := range retryErrs {
		if err != nil {
			t.Fatalf("retry session %d (%s): %v", i, retryIDs[i], err)
		}
	}
	var all, welcomes []time.Duration
	lastSeen := make([]uint64, sessionsN)
	var worstIn struct {
		session        int
		replay         bool
		delay, welcome time.Duration
	}
	replayed := 0
	for i, r := range results {
		lastSeen[i] = r.last
		if r.err != nil {
			t.Fatalf("session %d (%s): %v", i, ids[i], r.err)
		}
		for j, d := range r.delays {
			if d > worstIn.delay {
				worstIn.session, worstIn.replay, worstIn.delay, worstIn.welcome = i, r.replay[j], d, r.welcome
			}
			if r.replay[j] {
				replayed++
			}
		}
		all = append(all, r.delays...)
		welcomes = append(welcomes, r.welcome)
	}
	slices.Sort(all)
	slices.Sort(welcomes)
	p50, worst := all[len(all)/2], all[len(all)-1]
	t.Logf("node_lost for %d streams in flight on the killed replica: delay after SIGKILL p50 %v, max %v (node_loss_after %v); %d came in a resume's replay; the resumes' welcomes p50 %v, max %v after the kill",
		len(all), p50.Round(time.Millisecond), worst.Round(time.Millisecond), lossAfter, replayed,
		welcomes[len(welcomes)/2].Round(time.Millisecond), welcomes[len(welcomes)-1].Round(time.Millisecond))
	if worst > lossAfter {
		t.Fatalf("node_lost %v after the kill, want within node_loss_after %v (session %d: in the replay %v, its welcome %v after the kill)",
			worst, lossAfter, worstIn.session, worstIn.replay, worstIn.welcome.Round(time.Millisecond))
	}

	// A second resume after the last position seen finds nothing more:
	// each terminal was logged once.
	for i, id := range ids {
		c, err := dialWS(front, fmt.Sprintf("session=%s&last=%d", id, lastSeen[i]), 5*time.Second)
		if err != nil {
			t.Fatalf("second resume of session %d: %v", i, err)
		}
		term, others, err := c.roundTrip("ping", "probe", nil, 5*time.Second)
		c.close()
		if err != nil || term.Type != "pong" {
			t.Fatalf("second resume of session %d: probe %+v %v", i, term, err)
		}
		for _, m := range others {
			if m.terminal() {
				t.Fatalf("second resume of session %d brought %+v again", i, m)
			}
		}
	}
}

// rerunSeen resumes session sid through front and checks that its request
// R, lost with its replica, ran again on node: a restart notice, chunks
// from seq 0 without gaps, one result, nothing after it.
func rerunSeen(front, sid, node string) error {
	c, err := dialWS(front, "session="+sid, 5*time.Second)
	if err != nil {
		return fmt.Errorf("resume through nginx: %w", err)
	}
	defer c.close()
	if !c.welcome.Resumed || c.welcome.Node != node {
		return fmt.Errorf("welcome %+v, want resumed on %s", c.welcome, node)
	}
	restarted, next := false, 0
	for {
		m, err := c.read(15 * time.Second)
		if err != nil {
			return fmt.Errorf("after restart=%v, %d chunks: %w", restarted, next, err)
		}
		switch {
		case m.ID != "R":
			return fmt.Errorf("unexpected %+v", m)
		case m.Type == "restart":
			if restarted {
				return fmt.Errorf("second restart notice")
			}
			restarted = true
		case !restarted:
			// Chunks of the first run may still be replayed before the
			// notice; nothing else may come before it.
			if m.Type != "chunk" {
				return fmt.Errorf("%+v before the restart notice", m)
			}
		case m.Type == "chunk":
			if m.Seq != next {
				return fmt.Errorf("chunk seq %d after the restart, want %d", m.Seq, next)
			}
			next++
		case m.Type == "result":
			if next != 30 || string(m.Data) != `"done"` {
				return fmt.Errorf("result %+v after %d chunks, want \"done\" after 30", m, next)
			}
			// Nothing more for R: a second terminal would come now.
			if m, err := c.read(2 * time.Second); err == nil {
				return fmt.Errorf("after the result: %+v", m)
			} else if !isTimeout(err) {
				return err
			}
			return nil
		default:
			return fmt.Errorf("terminal %+v, want the rerun's result", m)
		}
	}
}

// acceptedSeen resumes session sid through front (on node) and checks the
// promise for its requests H (accepted: its backend was called) and Z
// (sent at the kill): H gets exactly one node_lost; Z gets exactly one
// node_lost if it was accepted (in flight per the welcome, or answered),
// else nothing, and then the backend never saw it. It reports whether Z
// was accepted.
func acceptedSeen(front, sid, node string, lossAfter time.Duration, called *sync.Map) (bool, error) {
	c, err := dialWS(front, "session="+sid+"&last=0", 5*time.Second)
	if err != nil {
		return false, fmt.Errorf("resume through nginx: %w", err)
	}
	defer c.close()
	if !c.welcome.Resumed || c.welcome.Node != node {
		return false, fmt.Errorf("welcome %+v, want resumed on %s", c.welcome, node)
	}
	got := map[string]int{}
	// Everything owed arrives within node_loss_after of the kill; read
	// that long and as long again for a second terminal.
	end := time.Now().Add(2*lossAfter + 2*time.Second)
	for time.Until(end) > 0 {
		m, err := c.read(time.Until(end))
		if err != nil {
			if isTimeout(err) {
				break
			}
			return false, fmt.Errorf("read (terminals so far %v): %w", got, err)
		}
		if !m.terminal() {
			continue
		}
		if m.Type != "error" || m.Code != "node_lost" || (m.ID != "H" && m.ID != "Z") {
			return false, fmt.Errorf("terminal %+v, want node_lost for H or Z", m)
		}
		got[m.ID]++
	}
	if got["H"] != 1 {
		return false, fmt.Errorf("accepted request H: %d terminals, want exactly one node_lost (welcome %+v)", got["H"], c.welcome)
	}
	zListed := slices.Contains(c.welcome.Inflight, "Z")
	_, zCalled := called.Load(sid + " Z")
	switch {
	case got["Z"] > 1:
		return true, fmt.Errorf("Z: %d terminals, want at most one", got["Z"])
	case got["Z"] == 1:
		return true, nil
	case zListed:
		return true, fmt.Errorf("Z listed in flight (welcome %+v) but never answered", c.welcome)
	case zCalled:
		return false, fmt.Errorf("Z reached the backend but was neither in flight nor answered")
	}
	return false, nil
}

// isTimeout reports whether err is a read deadline passing.
func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
