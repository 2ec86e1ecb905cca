package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// fakeNode is a Node whose state tests change over time.
type fakeNode struct {
	mu       sync.Mutex
	name     string
	draining bool
	c        Counters
	drainAt  time.Time // set by fakeDrainer
	deadline time.Time
}

func (n *fakeNode) DrainDeadline() (time.Time, time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.drainAt, n.deadline
}

func (n *fakeNode) Name() string { return n.name }
func (n *fakeNode) Draining() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.draining
}
func (n *fakeNode) Counters() Counters {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.c
}
func (n *fakeNode) set(f func(*Counters)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f(&n.c)
}

// fakeSessions keeps rows newest first and filters them linearly, as a
// real lister over a sorted index would.
type fakeSessions struct {
	mu      sync.Mutex
	rows    []SessionRow // newest first
	kicked  chan string
	kickErr error // when set, Kick fails with it
}

func newFakeSessions(rows ...SessionRow) *fakeSessions {
	f := &fakeSessions{kicked: make(chan string, 16)}
	for _, r := range rows {
		f.add(r)
	}
	return f
}

func (f *fakeSessions) add(r SessionRow) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, _ := slices.BinarySearchFunc(f.rows, r, func(a, b SessionRow) int { return b.ConnectedSince.Compare(a.ConnectedSince) })
	f.rows = slices.Insert(f.rows, i, r)
}

func (f *fakeSessions) Sessions(q string, offset, limit int) ([]SessionRow, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var page []SessionRow
	total := 0
	for i := range f.rows {
		r := &f.rows[i]
		if q != "" && !strings.Contains(r.ID, q) && !strings.Contains(r.User, q) && !strings.Contains(r.Remote, q) {
			continue
		}
		if total >= offset && total < offset+limit {
			page = append(page, *r)
		}
		total++
	}
	return page, total
}

func (f *fakeSessions) Kick(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.kickErr != nil {
		return f.kickErr
	}
	i := slices.IndexFunc(f.rows, func(r SessionRow) bool { return r.ID == id })
	if i < 0 {
		return fmt.Errorf("kick %s: %w", id, ErrNotFound)
	}
	f.rows = slices.Delete(f.rows, i, i+1)
	f.kicked <- id
	return nil
}

type fakeBackends struct {
	mu    sync.Mutex
	rows  []BackendRow
	reset []string
}

func (f *fakeBackends) Backends() []BackendRow {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.rows)
}

func (f *fakeBackends) Reset(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.rows {
		if f.rows[i].Name == name {
			for j := range f.rows[i].Endpoints {
				f.rows[i].Endpoints[j].Breaker = "closed"
			}
			f.reset = append(f.reset, name)
			return nil
		}
	}
	return fmt.Errorf("reset %s: %w", name, ErrNotFound)
}

// fakeDrainer marks the node draining, as the real coordinator does.
type fakeDrainer struct {
	node    *fakeNode
	reasons chan string
}

func (d *fakeDrainer) Drain(reason string) {
	d.node.mu.Lock()
	d.node.draining = true
	d.node.drainAt = time.Now()
	d.node.deadline = d.node.drainAt.Add(30 * time.Second)
	d.node.mu.Unlock()
	d.reasons <- reason
}

// fakeDetached lists detached sessions, newest first.
type fakeDetached struct {
	mu    sync.Mutex
	rows  []DetachedRow
	bytes int64
}

func (f *fakeDetached) Detached(dst []DetachedRow, limit int) []DetachedRow {
	f.mu.Lock()
	defer f.mu.Unlock()
	dst = dst[:0]
	for i := 0; i < len(f.rows) && i < limit; i++ {
		dst = append(dst, f.rows[i])
	}
	return dst
}

func (f *fakeDetached) Counts() (int, int, int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return 0, len(f.rows), f.bytes
}

func (f *fakeDetached) set(rows ...DetachedRow) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rows = rows
}

type fakeReady struct {
	mu           sync.Mutex
	alive, ready error
}

func (f *fakeReady) Alive() error { f.mu.Lock(); defer f.mu.Unlock(); return f.alive }
func (f *fakeReady) Ready() error { f.mu.Lock(); defer f.mu.Unlock(); return f.ready }

type fixture struct {
	node     *fakeNode
	sessions *fakeSessions
	detached *fakeDetached
	backends *fakeBackends
	drainer  *fakeDrainer
	ready    *fakeReady
}

func (f *fixture) deps() Deps {
	return Deps{Node: f.node, Sessions: f.sessions, Detached: f.detached, Backends: f.backends, Drainer: f.drainer, Readiness: f.ready,
		Version: "1.4.2-test", Started: time.Now().Add(-(3*time.Hour + 12*time.Minute))}
}

var t0 = time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)

func row(i int) SessionRow {
	return SessionRow{
		ID: fmt.Sprintf("s_%05d", i), User: fmt.Sprintf("user%d", i%100), Remote: fmt.Sprintf("10.0.%d.%d:5%04d", i/250%250, i%250, i%10000),
		ConnectedSince: t0.Add(time.Duration(i) * time.Second), InFlight: i % 3,
		MsgsIn: uint64(i), MsgsOut: uint64(2 * i), BytesIn: uint64(100 * i), BytesOut: uint64(300 * i),
	}
}

func newFixture(nSessions int) *fixture {
	f := &fixture{
		node: &fakeNode{name: "edge-1", c: Counters{Connections: 3, Sessions: nSessions, InFlight: 2, MsgsIn: 10, MsgsOut: 20}},
		backends: &fakeBackends{rows: []BackendRow{
			{Name: "echo", Kind: "echo", MaxConcurrent: 256},
			{Name: "sql", Kind: "http", InFlight: 4, MaxConcurrent: 128, Endpoints: []EndpointRow{
				{URL: "http://127.0.0.1:7001/query", Breaker: "closed", Successes: 1200, Failures: 3, InFlight: 3, P50ms: 12.5, P99ms: 80},
				{URL: "http://127.0.0.1:7002/query", Breaker: "open", Successes: 900, Failures: 57, Rejections: 4, InFlight: 1, P50ms: 14, P99ms: 2300},
			}},
			{Name: "llm", Kind: "openai", InFlight: 9, MaxConcurrent: 256, Endpoints: []EndpointRow{
				{URL: "http://127.0.0.1:11434/v1", Breaker: "half-open", Successes: 310, Failures: 5, InFlight: 9, P50ms: 1800, P99ms: 14500},
			}},
		}},
		ready:    &fakeReady{},
		detached: &fakeDetached{},
	}
	rows := make([]SessionRow, nSessions)
	for i := range rows {
		rows[i] = row(i)
	}
	slices.Reverse(rows) // newest first
	f.sessions = &fakeSessions{rows: rows, kicked: make(chan string, 16)}
	f.drainer = &fakeDrainer{node: f.node, reasons: make(chan string, 4)}
	return f
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func newServer(t testing.TB, f *fixture, cfg config.Admin, addr string, g prometheus.Gatherer) *Server {
	t.Helper()
	s, err := New(cfg, addr, f.deps(), g, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// do runs one request through h and returns the recorder.
func do(h http.Handler, method, target string, hdr map[string]string, body io.Reader) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, body)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

var metaToken = regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)"`)

// tokenAndCookie loads the page and returns its CSRF token and cookie.
func tokenAndCookie(t *testing.T, h http.Handler, hdr map[string]string) (string, string) {
	t.Helper()
	w := do(h, "GET", "/", hdr, nil)
	if w.Code != 200 {
		t.Fatalf("GET / = %d", w.Code)
	}
	m := metaToken.FindStringSubmatch(w.Body.String())
	if m == nil {
		t.Fatal("no csrf-token meta tag in page")
	}
	ck := w.Result().Cookies()
	if len(ck) != 1 || ck[0].Name != csrfCookie {
		t.Fatalf("cookies = %v, want one %s", ck, csrfCookie)
	}
	if !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode {
		t.Errorf("cookie %+v: want HttpOnly and SameSite=Strict", ck[0])
	}
	return m[1], ck[0].Name + "=" + ck[0].Value
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

var errStoreDown = errors.New("session store unreachable")
