package backends

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// countingServer answers with the status in status (200 = a JSON result)
// and counts requests. When hold is set, each request first waits for it.
type countingServer struct {
	*httptest.Server
	hits    atomic.Int64
	status  atomic.Int64
	hold    atomic.Pointer[chan struct{}] // nil: answer at once
	entered chan struct{}
}

func newCountingServer(t *testing.T, hold bool) *countingServer {
	cs := &countingServer{entered: make(chan struct{}, 64)}
	if hold {
		cs.holdNext()
	}
	cs.status.Store(200)
	cs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.hits.Add(1)
		select {
		case cs.entered <- struct{}{}:
		default: // nobody is counting entries in this test
		}
		if h := cs.hold.Load(); h != nil {
			select {
			case <-*h:
			case <-r.Context().Done():
				return
			}
		}
		if st := int(cs.status.Load()); st != 200 {
			http.Error(w, "no", st)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data":"ok"}`)
	}))
	t.Cleanup(cs.Close)
	return cs
}

// holdNext makes the next requests wait until release.
func (cs *countingServer) holdNext() {
	h := make(chan struct{})
	cs.hold.Store(&h)
}

// release lets held requests answer.
func (cs *countingServer) release() { close(*cs.hold.Load()) }

func poolCfg(balance string, maxConc, failures int, cooldown time.Duration, urls ...string) map[string]config.Backend {
	return map[string]config.Backend{"b": {
		Kind: config.KindHTTP, Endpoints: urls, Balance: balance, MaxConcurrent: maxConc,
		Breaker: config.Breaker{Failures: failures, Cooldown: config.Duration(cooldown)},
	}}
}

func call(p *Pool) error {
	_, err := p.Call(context.Background(), &Request{ID: "1"}, noEmit)
	return err
}

// TestBreakerLifecycle: N failures open the breaker; then ErrOpen without
// the backend seeing the call; after the cool-down exactly one probe goes
// through; a failed probe re-opens it for another cool-down, a good one
// closes it.
func TestBreakerLifecycle(t *testing.T) {
	const cooldown = 10 * time.Second
	cs := newCountingServer(t, false)
	cs.status.Store(500)
	s, clk := newTestSet(t, poolCfg("", 8, 3, cooldown, cs.URL), nil)
	p := mustPool(t, s, "b")
	for i := range 3 {
		if err := call(p); codeOf(err) != "backend_error" {
			t.Fatalf("call %d: err = %v, want backend_error", i, err)
		}
	}
	if err := call(p); !errors.Is(err, ErrOpen) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("call after 3 failures: err = %v, want ErrOpen", err)
	}
	if h := cs.hits.Load(); h != 3 {
		t.Fatalf("server saw %d requests, want 3", h)
	}
	st := state(t, s, "b")
	if e := st.Endpoints[0]; e.Breaker != BreakerOpen || e.Rejections != 1 || e.Failures != 3 || st.Unavailable != 1 {
		t.Fatalf("snapshot = %+v", st)
	}

	// Cool-down passes: one probe, which fails: open again.
	clk.Add(cooldown + time.Millisecond)
	if got := state(t, s, "b").Endpoints[0].Breaker; got != BreakerHalfOpen {
		t.Errorf("breaker after cool-down = %s, want half-open", got)
	}
	if err := call(p); codeOf(err) != "backend_error" || cs.hits.Load() != 4 {
		t.Fatalf("probe: err = %v, hits %d, want backend_error and 4", err, cs.hits.Load())
	}
	if err := call(p); !errors.Is(err, ErrOpen) || cs.hits.Load() != 4 {
		t.Fatalf("after a failed probe: err = %v, hits %d, want ErrOpen and 4", err, cs.hits.Load())
	}

	// Next cool-down: the probe is held by the server; every other call
	// meanwhile gets ErrOpen; the probe succeeds and closes the breaker.
	clk.Add(cooldown + time.Millisecond)
	cs.status.Store(200)
	cs.holdNext()
	for len(cs.entered) > 0 {
		<-cs.entered
	}
	probeErr := make(chan error, 1)
	go func() { probeErr <- call(p) }()
	recv(t, cs.entered, "the probe")
	for range 5 {
		if err := call(p); !errors.Is(err, ErrOpen) {
			t.Fatalf("call during the probe: err = %v, want ErrOpen", err)
		}
	}
	if h := cs.hits.Load(); h != 5 {
		t.Fatalf("server saw %d requests during the probe, want 5", h)
	}
	cs.release()
	if err := recv(t, probeErr, "the probe's end"); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if got := state(t, s, "b").Endpoints[0].Breaker; got != BreakerClosed {
		t.Fatalf("breaker after a good probe = %s, want closed", got)
	}
	for range 3 {
		if err := call(p); err != nil {
			t.Fatalf("closed breaker: %v", err)
		}
	}
}

// TestBreakerNotFailures: 4xx answers and client cancels never open it.
func TestBreakerNotFailures(t *testing.T) {
	cs := newCountingServer(t, false)
	cs.status.Store(404)
	s, _ := newTestSet(t, poolCfg("", 8, 2, time.Second, cs.URL), nil)
	p := mustPool(t, s, "b")
	for range 5 {
		if err := call(p); codeOf(err) != "backend_rejected" {
			t.Fatalf("err = %v, want backend_rejected", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 5 {
		if _, err := p.Call(ctx, &Request{ID: "1"}, noEmit); codeOf(err) != "canceled" {
			t.Fatalf("err = %v, want canceled", err)
		}
	}
	if e := state(t, s, "b").Endpoints[0]; e.Breaker != BreakerClosed || e.Failures != 0 || e.Successes != 5 {
		t.Fatalf("endpoint = %+v, want closed, 0 failures, 5 successes", e)
	}
}

func TestReset(t *testing.T) {
	cs := newCountingServer(t, false)
	cs.status.Store(502)
	s, _ := newTestSet(t, poolCfg("", 8, 1, time.Hour, cs.URL), nil)
	p := mustPool(t, s, "b")
	call(p)
	if err := call(p); !errors.Is(err, ErrOpen) {
		t.Fatalf("err = %v, want ErrOpen", err)
	}
	if err := s.Reset("b"); err != nil {
		t.Fatal(err)
	}
	cs.status.Store(200)
	if err := call(p); err != nil {
		t.Fatalf("after Reset: %v", err)
	}
	if err := s.Reset("nope"); !errors.Is(err, ErrUnknownBackend) {
		t.Errorf("Reset(nope) = %v, want ErrUnknownBackend", err)
	}
}

func TestRateBreaker(t *testing.T) {
	cs := newCountingServer(t, false)
	cfg := poolCfg("", 8, 100, time.Hour, cs.URL)
	b := cfg["b"]
	b.Breaker.Rate, b.Breaker.MinSamples = 0.5, 4
	cfg["b"] = b
	s, _ := newTestSet(t, cfg, nil)
	p := mustPool(t, s, "b")
	call(p)
	call(p)
	cs.status.Store(500)
	call(p) // 1 of 3: below min samples
	if got := state(t, s, "b").Endpoints[0].Breaker; got != BreakerClosed {
		t.Fatalf("after 3 samples: %s", got)
	}
	call(p) // 2 of 4 = 0.5
	if err := call(p); !errors.Is(err, ErrOpen) {
		t.Fatalf("err = %v, want ErrOpen at a 50%% failure rate", err)
	}
}

// TestBulkhead: with max_concurrent calls in flight the next one gets
// ErrOverloaded at once, which is not a breaker failure.
func TestBulkhead(t *testing.T) {
	const max = 3
	cs := newCountingServer(t, true)
	s, _ := newTestSet(t, poolCfg("", max, 1, time.Hour, cs.URL), nil)
	p := mustPool(t, s, "b")
	errs := make(chan error, max)
	for range max {
		go func() { errs <- call(p) }()
	}
	for range max {
		recv(t, cs.entered, "a call in flight")
	}
	for range 3 {
		if err := call(p); !errors.Is(err, ErrOverloaded) || codeOf(err) != "overloaded" {
			t.Fatalf("call %d: err = %v, want ErrOverloaded", max+1, err)
		}
	}
	st := state(t, s, "b")
	if st.Inflight != max || st.Overloaded != 3 || st.Endpoints[0].Failures != 0 {
		t.Fatalf("snapshot = %+v", st)
	}
	cs.release()
	for range max {
		if err := recv(t, errs, "a call's end"); err != nil {
			t.Fatal(err)
		}
	}
	if err := call(p); err != nil {
		t.Fatalf("after the calls ended: %v", err)
	}
	if st := state(t, s, "b"); st.Inflight != 0 || st.Endpoints[0].Inflight != 0 {
		t.Errorf("in flight after the end: %+v", st)
	}
}

// TestRoundRobin spreads calls evenly and skips an endpoint whose breaker
// is open; with all open, ErrOpen without any request.
func TestRoundRobin(t *testing.T) {
	srv := []*countingServer{newCountingServer(t, false), newCountingServer(t, false), newCountingServer(t, false)}
	s, _ := newTestSet(t, poolCfg("round_robin", 64, 1, time.Hour, srv[0].URL, srv[1].URL, srv[2].URL), nil)
	p := mustPool(t, s, "b")
	for range 30 {
		if err := call(p); err != nil {
			t.Fatal(err)
		}
	}
	for i, cs := range srv {
		if h := cs.hits.Load(); h != 10 {
			t.Errorf("endpoint %d got %d calls, want 10", i, h)
		}
	}
	srv[1].status.Store(500)
	var failed int
	for range 30 {
		if call(p) != nil {
			failed++
		}
	}
	if failed != 1 || srv[1].hits.Load() != 11 || srv[0].hits.Load()+srv[2].hits.Load() != 49 {
		t.Errorf("failed %d, hits %d/%d/%d; want one failure then endpoint 1 skipped",
			failed, srv[0].hits.Load(), srv[1].hits.Load(), srv[2].hits.Load())
	}
	srv[0].status.Store(500)
	srv[2].status.Store(500)
	for range 4 {
		call(p)
	}
	before := srv[0].hits.Load() + srv[1].hits.Load() + srv[2].hits.Load()
	if err := call(p); !errors.Is(err, ErrOpen) {
		t.Fatalf("all open: err = %v, want ErrOpen", err)
	}
	if after := srv[0].hits.Load() + srv[1].hits.Load() + srv[2].hits.Load(); after != before {
		t.Errorf("an endpoint was called with every breaker open")
	}
}

// TestLeastInflight sends new calls to the endpoint with fewer calls in
// flight.
func TestLeastInflight(t *testing.T) {
	slow, fast := newCountingServer(t, true), newCountingServer(t, false)
	s, _ := newTestSet(t, poolCfg("least_inflight", 64, 5, time.Hour, slow.URL, fast.URL), nil)
	p := mustPool(t, s, "b")
	var wg sync.WaitGroup
	// Calls alternate while both are idle; one held on slow sends every
	// later call to fast.
	for slow.hits.Load() < 1 {
		errc := make(chan error, 1)
		wg.Add(1)
		go func() { defer wg.Done(); errc <- call(p) }()
		select {
		case <-slow.entered:
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
			<-fast.entered
		case <-time.After(5 * time.Second):
			t.Fatal("no endpoint got the call")
		}
	}
	fastBefore := fast.hits.Load()
	for range 10 {
		if err := call(p); err != nil {
			t.Fatal(err)
		}
	}
	if got := fast.hits.Load() - fastBefore; got != 10 {
		t.Errorf("fast endpoint got %d of 10 calls while slow had 1 in flight", got)
	}
	if e := state(t, s, "b").Endpoints[0]; e.Inflight != 1 {
		t.Errorf("slow endpoint in flight = %d, want 1", e.Inflight)
	}
	slow.release()
	wg.Wait()
}

// TestOpenRejectionNoAlloc: refusing a call at an open breaker allocates
// nothing.
func TestOpenRejectionNoAlloc(t *testing.T) {
	s, _ := newTestSet(t, poolCfg("round_robin", 8, 1, time.Hour, "http://127.0.0.1:1/a", "http://127.0.0.1:1/b"), nil)
	p := mustPool(t, withoutChecks(s), "b")
	tripAll(p)
	req := &Request{ID: "1"}
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := p.Call(ctx, req, noEmit); err != ErrOpen {
			t.Fatalf("err = %v", err)
		}
	})
	if allocs != 0 {
		t.Errorf("open rejection allocates %v times, want 0", allocs)
	}
}

func TestEcho(t *testing.T) {
	s, _ := newTestSet(t, map[string]config.Backend{
		"echo": {Kind: config.KindEcho},
		"slow": {Kind: config.KindEcho, Delay: config.Duration(time.Hour)},
	}, nil)
	res, err := mustPool(t, s, "echo").Call(context.Background(), &Request{ID: "1", Data: []byte(`{"a":[1]}`)}, noEmit)
	if err != nil || string(res.Data) != `{"a":[1]}` {
		t.Fatalf("echo = %s, %v", res.Data, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := mustPool(t, s, "slow").Call(ctx, &Request{ID: "1"}, noEmit); codeOf(err) != "timeout" {
		t.Fatalf("delayed echo past its deadline: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	tests := map[string]config.Backend{
		"unknown kind":    {Kind: "carrier-pigeon"},
		"no endpoints":    {Kind: config.KindHTTP},
		"bad url":         {Kind: config.KindOpenAI, Endpoints: []string{"ftp://x"}},
		"nats no subject": {Kind: config.KindNATS, URLs: []string{"nats://127.0.0.1:1"}},
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			if s, err := New(map[string]config.Backend{"x": b}, nil, testLogger(t)); err == nil {
				s.Close()
				t.Fatalf("New accepted %+v", b)
			}
		})
	}
	s, err := New(map[string]config.Backend{"e": {Kind: config.KindEcho}}, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s.Close() // idempotent
}
