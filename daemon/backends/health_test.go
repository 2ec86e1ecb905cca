package backends

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/facebookgo/clock"
	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/telemetry"
	"github.com/orchestratord/orchestratord/internal/logbuf"
	dto "github.com/prometheus/client_model/go"
)

// newObservedSet builds a Set with a telemetry meter and a captured debug
// log, closed with the test.
func newObservedSet(t *testing.T, cfg map[string]config.Backend) (*Set, *telemetry.Metrics, *logbuf.Buffer) {
	t.Helper()
	m := telemetry.New("test")
	lb := new(logbuf.Buffer)
	log := slog.New(slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := newSet(cfg, nil, log, clock.New(), WithMeter(m))
	if err != nil {
		t.Fatalf("newSet: %v", err)
	}
	t.Cleanup(s.Close)
	return s, m, lb
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// healthServer answers /healthz with the status in code and counts POSTs
// to /q.
type healthServer struct {
	*httptest.Server
	code  atomic.Int32
	posts atomic.Int64
}

func newHealthServer(t *testing.T) *healthServer {
	hs := &healthServer{}
	hs.code.Store(200)
	hs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/healthz":
			w.WriteHeader(int(hs.code.Load()))
		case r.Method == http.MethodPost && r.URL.Path == "/q":
			hs.posts.Add(1)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"data":1}`))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(hs.Close)
	return hs
}

func endpointHealth(t *testing.T, s *Set, backend string, i int) string {
	t.Helper()
	return state(t, s, backend).Endpoints[i].Health
}

// TestHealthLeavesRotation: an endpoint whose health path fails leaves the
// rotation before any request hits it, is logged at warn, comes back (info)
// when it passes again; with every endpoint down the call is refused at
// once with ErrUnhealthy (an ErrOpen: the route's fallback applies).
func TestHealthLeavesRotation(t *testing.T) {
	a, b := newHealthServer(t), newHealthServer(t)
	cfg := map[string]config.Backend{"sql": {
		Kind: config.KindHTTP, Endpoints: []string{a.URL + "/q", b.URL + "/q"},
		Health: config.Health{Interval: config.Duration(20 * time.Millisecond), Path: "/healthz"},
	}}
	b.code.Store(503)
	s, _, logs := newObservedSet(t, cfg)
	eventually(t, 5*time.Second, "b unhealthy and a healthy", func() bool {
		return endpointHealth(t, s, "sql", 1) == HealthUnhealthy && endpointHealth(t, s, "sql", 0) == HealthHealthy
	})
	p := mustPool(t, s, "sql")
	for range 10 {
		if err := call(p); err != nil {
			t.Fatalf("call with one healthy endpoint: %v", err)
		}
	}
	if a.posts.Load() != 10 || b.posts.Load() != 0 {
		t.Fatalf("posts a=%d b=%d, want 10 and 0: the unhealthy endpoint must not get calls", a.posts.Load(), b.posts.Load())
	}
	if e := state(t, s, "sql").Endpoints[1]; !strings.Contains(e.HealthDetail, "answered 503") || e.HealthChecked.IsZero() {
		t.Errorf("unhealthy endpoint state = %+v, want the 503 in the detail and a check time", e)
	}
	if !strings.Contains(logs.String(), `"level":"WARN","msg":"backend endpoint unhealthy","backend":"sql"`) {
		t.Errorf("no warn line for the unhealthy endpoint:\n%s", logs)
	}
	if err := s.Healthy("sql"); err != nil {
		t.Errorf("Healthy(sql) with one good endpoint = %v", err)
	}

	a.code.Store(500)
	eventually(t, 5*time.Second, "both unhealthy", func() bool { return endpointHealth(t, s, "sql", 0) == HealthUnhealthy })
	err := call(p)
	if !errors.Is(err, ErrUnhealthy) || !errors.Is(err, ErrOpen) || codeOf(err) != "backend_unavailable" {
		t.Fatalf("call with no healthy endpoint = %v, want ErrUnhealthy (an ErrOpen)", err)
	}
	if err := s.Healthy("sql"); err == nil || !strings.Contains(err.Error(), "answered 500") {
		t.Errorf("Healthy(sql) with none = %v, want the reasons", err)
	}

	b.code.Store(200)
	eventually(t, 5*time.Second, "b back", func() bool { return endpointHealth(t, s, "sql", 1) == HealthHealthy })
	// The checker logs the change just after it publishes the new state.
	eventually(t, 5*time.Second, "an info line when the endpoint came back", func() bool {
		return strings.Contains(logs.String(), `"msg":"backend endpoint healthy again"`)
	})
	if err := call(p); err != nil || b.posts.Load() != 1 {
		t.Fatalf("call after recovery = %v (b posts %d), want b to serve it", err, b.posts.Load())
	}
}

// TestHealthTCPAndOpenAI: without a health path the http kind checks that
// a TCP connection opens; the openai kind GETs /models and takes any
// answer below 500 as alive.
func TestHealthTCPAndOpenAI(t *testing.T) {
	var models atomic.Int32
	models.Store(404)
	var gotAuth atomic.Value
	llm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/v1/models" {
			gotAuth.Store(r.Header.Get("Authorization"))
			w.WriteHeader(int(models.Load()))
			return
		}
		http.NotFound(w, r)
	}))
	defer llm.Close()
	iv := config.Health{Interval: config.Duration(20 * time.Millisecond)}
	cfg := map[string]config.Backend{
		"dead": {Kind: config.KindHTTP, Endpoints: []string{"http://" + deadAddr(t) + "/q"}, Health: iv},
		"live": {Kind: config.KindHTTP, Endpoints: []string{llm.URL + "/q"}, Health: iv},
		"llm":  {Kind: config.KindOpenAI, Endpoints: []string{llm.URL + "/v1"}, Model: "m", APIKeyEnv: "K", Health: iv},
		"echo": {Kind: config.KindEcho},
	}
	m := telemetry.New("test")
	s, err := newSet(cfg, func(k string) (string, bool) { return "sk-test", k == "K" }, testLogger(t), clock.New(), WithMeter(m))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	eventually(t, 5*time.Second, "checks answered", func() bool {
		return endpointHealth(t, s, "dead", 0) == HealthUnhealthy && endpointHealth(t, s, "live", 0) == HealthHealthy &&
			endpointHealth(t, s, "llm", 0) == HealthHealthy
	})
	if d := state(t, s, "dead").Endpoints[0].HealthDetail; !strings.Contains(d, ErrConnect.Error()) {
		t.Errorf("dead endpoint detail = %q, want a connect failure", d)
	}
	if got, _ := gotAuth.Load().(string); got != "Bearer sk-test" {
		t.Errorf("/models Authorization = %q, want the API key", got)
	}
	if h := endpointHealth(t, s, "echo", 0); h != HealthUnchecked {
		t.Errorf("echo health = %q, want unchecked", h)
	}
	models.Store(502)
	eventually(t, 5*time.Second, "openai 502 unhealthy", func() bool { return endpointHealth(t, s, "llm", 0) == HealthUnhealthy })
}

// TestNATSDownAtStart: a NATS backend whose server is unreachable is
// unhealthy and logged as soon as New returns, not when requests fail.
func TestNATSDownAtStart(t *testing.T) {
	cfg := map[string]config.Backend{"rag": {
		Kind: config.KindNATS, URLs: []string{"nats://user:s3cret@" + deadAddr(t)}, Subject: "x",
	}}
	s, _, logs := newObservedSet(t, cfg)
	e := state(t, s, "rag").Endpoints[0]
	if e.Health != HealthUnhealthy {
		t.Fatalf("NATS endpoint health right after New = %q, want unhealthy", e.Health)
	}
	if strings.Contains(e.URL, "s3cret") || strings.Contains(logs.String(), "s3cret") {
		t.Errorf("the NATS password leaks: url %q, logs %s", e.URL, logs)
	}
	if !strings.Contains(logs.String(), `"msg":"backend endpoint unhealthy","backend":"rag"`) {
		t.Errorf("no warn line at start:\n%s", logs)
	}
	err := call(mustPool(t, s, "rag"))
	if !errors.Is(err, ErrUnhealthy) {
		t.Errorf("call = %v, want ErrUnhealthy without trying", err)
	}
}

// TestConnectFailureSaysSo: a refused TCP connect is reported as a
// connect failure, counted as connect_error, never as "backend status 502".
func TestConnectFailureSaysSo(t *testing.T) {
	cfg := map[string]config.Backend{"sql": {
		Kind: config.KindHTTP, Endpoints: []string{"http://" + deadAddr(t) + "/q"},
		Health: config.Health{Interval: config.Duration(time.Hour)},
	}}
	s, m, _ := newObservedSet(t, cfg)
	p := mustPool(t, s, "sql")
	p.eps[0].health.state.Store(healthUnknown) // as before the first check answers
	_, err := p.Call(context.Background(), &Request{ID: "1"}, noEmit)
	if !errors.Is(err, ErrConnect) || strings.Contains(err.Error(), "backend status") ||
		!strings.Contains(err.Error(), "connect to backend failed") {
		t.Fatalf("err = %v, want a connect failure", err)
	}
	if codeOf(err) != "backend_error" {
		t.Errorf("code = %s, want backend_error", codeOf(err))
	}
	if v := counter(t, m, "orchestratord_backend_calls_total", "connect_error"); v != 1 {
		t.Errorf("calls_total{connect_error} = %v, want 1", v)
	}
}

// TestLatencyFromMetrics: the snapshot's p50/p99 are read from the same
// histogram the metrics export; echo calls answered inline count too.
func TestLatencyFromMetrics(t *testing.T) {
	a := newHealthServer(t)
	s, m, _ := newObservedSet(t, map[string]config.Backend{
		"sql":  {Kind: config.KindHTTP, Endpoints: []string{a.URL + "/q"}},
		"echo": {Kind: config.KindEcho},
	})
	p := mustPool(t, s, "sql")
	for range 20 {
		if err := call(p); err != nil {
			t.Fatal(err)
		}
	}
	e := state(t, s, "sql").Endpoints[0]
	if e.Successes != 20 || e.LatencyP50 <= 0 || e.LatencyP99 < e.LatencyP50 {
		t.Errorf("endpoint = %+v, want 20 successes and p50 <= p99, both > 0", e)
	}
	if v := counter(t, m, "orchestratord_backend_calls_total", "ok"); v != 20 {
		t.Errorf("calls_total{ok} = %v, want 20", v)
	}
	ep := mustPool(t, s, "echo")
	ep.Inline(time.Millisecond)
	if _, err := ep.Call(context.Background(), &Request{ID: "2", Data: []byte("1")}, noEmit); err != nil {
		t.Fatal(err)
	}
	if got := state(t, s, "echo").Endpoints[0]; got.Successes != 2 || got.LatencyP50 <= 0 {
		t.Errorf("echo endpoint = %+v, want 2 successes (inline and called) and a latency", got)
	}
}

// TestEndpointLabelsRedacted: endpoints are shown and labelled through
// redact.String; two that differ only in masked parts stay distinct.
func TestEndpointLabelsRedacted(t *testing.T) {
	s, _, _ := newObservedSet(t, map[string]config.Backend{"sql": {
		Kind: config.KindHTTP, Endpoints: []string{"http://u:hunter2@127.0.0.1:1/q?api_key=a1", "http://u:hunter2@127.0.0.1:1/q?api_key=b2"},
		Health: config.Health{Interval: config.Duration(time.Hour)},
	}})
	eps := state(t, s, "sql").Endpoints
	if eps[0].URL != "http://xxxxx@127.0.0.1:1/q?api_key=xxxxx" || eps[1].URL != "http://xxxxx@127.0.0.1:1/q?api_key=xxxxx (2)" {
		t.Errorf("endpoint URLs = %q, %q", eps[0].URL, eps[1].URL)
	}
}

// counter sums the series of a counter family whose outcome label is
// outcome.
func counter(t *testing.T, m *telemetry.Metrics, name, outcome string) float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			if labelValue(s, "outcome") == outcome {
				sum += s.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
