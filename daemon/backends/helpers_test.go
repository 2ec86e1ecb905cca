package backends

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/facebookgo/clock"
	"github.com/orchestratord/orchestratord/daemon/config"
)

// codeOf maps err to the protocol code the way dispatch does (dispatch owns
// the real mapping; this mirror only lets the tests speak in codes).
func codeOf(err error) string {
	var be *Error
	switch {
	case err == nil:
		return ""
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, ErrOverloaded):
		return "overloaded"
	case errors.Is(err, ErrUnavailable):
		return "backend_unavailable"
	case errors.As(err, &be) && be.Status >= 400 && be.Status < 500:
		return "backend_rejected"
	}
	return "backend_error"
}

// recorder collects emitted chunks (copied: emit's part is not retained).
type recorder struct {
	mu     sync.Mutex
	chunks []string
}

func (r *recorder) emit(part json.RawMessage) {
	r.mu.Lock()
	r.chunks = append(r.chunks, string(part))
	r.mu.Unlock()
}

// noEmit drops chunks.
func noEmit(json.RawMessage) {}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.chunks...)
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// newTestSet builds a Set on a mock clock and closes it with the test.
func newTestSet(t testing.TB, cfg map[string]config.Backend, env map[string]string) (*Set, *clock.Mock) {
	t.Helper()
	clk := clock.NewMock()
	clk.Add(time.Hour) // away from the zero time
	s, err := newSet(cfg, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, testLogger(t), clk)
	if err != nil {
		t.Fatalf("newSet: %v", err)
	}
	t.Cleanup(s.Close)
	return s, clk
}

func mustPool(t testing.TB, s *Set, name string) *Pool {
	t.Helper()
	p, ok := s.Pool(name)
	if !ok {
		t.Fatalf("Pool(%q) missing", name)
	}
	return p
}

func state(t testing.TB, s *Set, name string) BackendState {
	t.Helper()
	for _, b := range s.Snapshot() {
		if b.Name == name {
			return b
		}
	}
	t.Fatalf("no backend %q in snapshot", name)
	return BackendState{}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

// recv waits for one value from ch with a deadline.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

// natsURL returns the local NATS server's URL; with CI=true a missing
// server fails the test, else it skips.
func natsURL(t testing.TB) string {
	t.Helper()
	const addr = "127.0.0.1:4222"
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("NATS at %s is required with CI=true: %v", addr, err)
		}
		t.Skipf("NATS at %s not running: %v", addr, err)
	}
	c.Close()
	return "nats://" + addr
}

// jsonEqual compares two JSON texts by value.
func jsonEqual(t testing.TB, got, want string) bool {
	t.Helper()
	if got == "" || want == "" {
		return got == want
	}
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("got is not JSON: %q: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want is not JSON: %q: %v", want, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	return string(gb) == string(wb)
}

// tripAll opens every breaker of p as failures would: the breaker trips and
// the endpoint's last failure is now (the pool's clock).
func tripAll(p *Pool) {
	for _, e := range p.eps {
		e.lastFail.Store(p.clock.Now().UnixNano())
		e.cb.Trip()
	}
}

// withoutChecks stops s's health checkers and forgets their results, for
// tests of the breaker path whose endpoints point nowhere (their checks
// would take them out of rotation first).
func withoutChecks(s *Set) *Set {
	s.stop()
	s.wg.Wait()
	for _, p := range s.pools {
		for _, e := range p.eps {
			e.health.state.Store(healthUnknown)
		}
	}
	return s
}
