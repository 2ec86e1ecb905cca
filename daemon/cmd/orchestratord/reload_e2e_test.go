package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const reloadConns = 100

// reloadConfig is the reload scenario's config: route "work" on backend
// workBackend; "echo" for the rate limit check.
func reloadConfig(client, admin, httpURL, workBackend string, rate float64, burst int) string {
	return configYAML(client, admin, 100*time.Millisecond, 2*time.Second, fmt.Sprintf(`backends:
  a: {kind: echo}
  b: {kind: http, endpoints: [%q]}
  echo: {kind: echo}
routes:
  work: {backend: %s, timeout: 5s}
  echo: {backend: echo}
limits:
  session_rate: %g
  session_burst: %d
`, httpURL, workBackend, rate, burst))
}

// rateLimited sends n echo requests back to back on c and returns how
// many were refused with rate_limited.
func rateLimited(t *testing.T, c *wsClient, prefix string, n int) int {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := c.request("echo", prefix+strconv.Itoa(i), i); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	limited := 0
	for seen := 0; seen < n; {
		m, err := c.read(5 * time.Second)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if !m.terminal() {
			continue
		}
		seen++
		if m.Type == "error" && m.Code == "rate_limited" {
			limited++
		}
	}
	return limited
}

// testReload: 100 connections; the config is rewritten (route work moves
// from echo backend a to http backend b, limits.session_rate drops);
// SIGHUP. None of the 100 is dropped, the new route and rate are in force,
// and the log names each changed key. Then an invalid file and SIGHUP:
// "reload refused", the old config stays. Then a changed listen.client:
// named as needing a restart, the running listener stays, the rest of the
// file (route work back on a) is applied.
func (e *e2e) testReload(t *testing.T) {
	backendB := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"data":{"from":"b"}}`)
	}))
	defer backendB.Close()

	dir := t.TempDir()
	client, admin := freePort(t), freePort(t)
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, reloadConfig(client, admin, backendB.URL, "a", 10000, 100))
	p := e.startDaemon(t, cfg, client, admin)
	p.waitReady(10 * time.Second)

	conns := make([]*wsClient, reloadConns)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dialWS(client, "", 10*time.Second)
			if err != nil {
				t.Errorf("conn %d: %v", i, err)
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()

	// every sends a work request on each connection and checks its answer.
	every := func(round string, want func(i int) string) {
		t.Helper()
		var wg sync.WaitGroup
		for i, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pong, _, err := c.roundTrip("ping", round+"-p"+strconv.Itoa(i), nil, 5*time.Second)
				if err != nil || pong.Type != "pong" {
					t.Errorf("%s: conn %d: ping: %+v %v (dropped?)", round, i, pong, err)
					return
				}
				res, _, err := c.roundTrip("work", round+"-w"+strconv.Itoa(i), i, 5*time.Second)
				if err != nil {
					t.Errorf("%s: conn %d: work: %v", round, i, err)
					return
				}
				if res.Type != "result" || string(res.Data) != want(i) {
					t.Errorf("%s: conn %d: got %+v, want result %s", round, i, res, want(i))
				}
			}()
		}
		wg.Wait()
	}
	echoA := func(i int) string { return strconv.Itoa(i) }
	fromB := func(int) string { return `{"from":"b"}` }

	// Two more connections for the rate checks, opened before the reload:
	// a session's bucket, once emptied, would fail the rounds above.
	rate0, err := dialWS(client, "", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer rate0.close()
	rate1, err := dialWS(client, "", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer rate1.close()

	// gcPercent is the Go runtime's GC target as the daemon reports it.
	gcPercent := func() float64 {
		t.Helper()
		v, ok := metricValue(scrape(t, "http://"+admin+"/metrics"), "go_gc_gogc_percent", nil)
		if !ok {
			t.Fatal("no go_gc_gogc_percent in /metrics")
		}
		return v
	}
	if v := gcPercent(); v != 50 {
		t.Errorf("GC target %v at start, want runtime.gc_percent's default 50", v)
	}

	every("before", echoA)
	if n := rateLimited(t, rate0, "r0-", 20); n != 0 {
		t.Fatalf("before reload: %d of 20 rate limited, want 0 (burst 100)", n)
	}

	writeFile(t, cfg, reloadConfig(client, admin, backendB.URL, "b", 1, 5)+"runtime: {gc_percent: 200}\n")
	p.signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "\"configuration reloaded\" in the log", func() bool {
		return p.logs.count("configuration reloaded") == 1
	})
	// The reload says what changed, key by key.
	for _, want := range []string{`routes.work.backend: \"a\" -> \"b\"`, `limits.session_rate: 10000 -> 1`, `limits.session_burst: 100 -> 5`, `runtime.gc_percent: 50 -> 200`} {
		if p.logs.countRaw(want) != 1 {
			t.Errorf("the reload log does not say %s", want)
		}
	}
	every("after", fromB)
	if v := gcPercent(); v != 200 {
		t.Errorf("GC target %v after the reload, want 200 (runtime.gc_percent is reloadable)", v)
	}
	if n := rateLimited(t, rate1, "r1-", 20); n < 10 {
		t.Errorf("after reload: %d of 20 rate limited, want at least 10 (rate 1/s, burst 5)", n)
	}

	writeFile(t, cfg, reloadConfig(client, admin, backendB.URL, "b", 1, 5)+"no_such_key: 1\n")
	p.signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "\"reload refused\" in the log", func() bool {
		return p.logs.count("reload refused") == 1
	})
	every("refused", fromB)

	// A key that only a restart can apply (listen.client) is named, its
	// running value stays, and the rest of the file is applied.
	moved := freePort(t)
	writeFile(t, cfg, reloadConfig(moved, admin, backendB.URL, "a", 1, 5))
	p.signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "\"need a restart\" naming listen.client in the log", func() bool {
		return p.logs.count("configuration changes need a restart") == 1 && p.logs.countRaw(`listen.client: \"`+client+`\" -> \"`+moved+`\"`) == 1
	})
	every("listen-kept", echoA) // route work is back on a: applied; old connections and port stay
	if c, err := dialWS(client, "", 5*time.Second); err != nil {
		t.Errorf("the running listener %s no longer accepts: %v", client, err)
	} else {
		c.close()
	}

	if v := gcPercent(); v != 50 {
		t.Errorf("GC target %v once runtime.gc_percent is gone from the file, want the default 50", v)
	}
	if n := p.logs.count("configuration reloaded"); n != 2 {
		t.Errorf("got %d \"configuration reloaded\" lines, want 2", n)
	}
	if n := p.logs.count("reload refused"); n != 1 {
		t.Errorf("got %d \"reload refused\" lines, want 1", n)
	}
	fams := scrape(t, "http://"+admin+"/metrics")
	// Two reloads applied (the second naming its restart-only key), one
	// refused.
	for result, want := range map[string]float64{"success": 2, "failure": 1} {
		if v, ok := metricValue(fams, "orchestratord_reloads_total", map[string]string{"result": result}); !ok || v != want {
			t.Errorf("reloads_total{result=%q} = %v (found %v), want %v", result, v, ok, want)
		}
	}
	if v, ok := metricValue(fams, "orchestratord_last_reload_success_timestamp_seconds", nil); !ok || v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last_reload_success_timestamp_seconds = %v (found %v), want the reload's time", v, ok)
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(10 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// countRaw returns how many log lines contain sub, as written (JSON).
func (l *logBuffer) countRaw(sub string) int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, sub) {
			n++
		}
	}
	return n
}
