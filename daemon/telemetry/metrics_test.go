package telemetry

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape serves m's registry through promhttp and parses the text format.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{}))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Accept", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type = %q, want text/plain", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse scrape: %v", err)
	}
	return fams
}

// value finds the sample of family name whose labels include want.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) (*dto.Metric, bool) {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		return nil, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		return m, true
	}
	return nil, false
}

func TestMetricsScrape(t *testing.T) {
	m := New("v1.2.3")
	for range 3 {
		m.MessageIn()
	}
	for range 5 {
		m.MessageOut()
	}
	m.Request("echo", "result", 2*time.Millisecond)
	m.Request("echo", "result", 3*time.Millisecond)
	m.Request("chat", "timeout", 20*time.Second)
	m.Handshake("accepted")
	m.Handshake("accepted")
	m.Handshake("unauthorized")
	m.StoreError("save")
	m.Closed(1000)
	m.Closed(4008)
	m.Closed(4008)
	m.SetGauges(func() Gauges { return Gauges{Connections: 7, Sessions: 9, InFlight: 2, Draining: true} })
	m.SetBackends(func() []Backend {
		return []Backend{
			{Name: "sql", InFlight: 3, Capacity: 128, Endpoints: []Endpoint{
				{URL: "http://a", Breaker: "closed", Healthy: true, InFlight: 2},
				{URL: "http://b", Breaker: "open", Healthy: false, InFlight: 1},
			}},
			{Name: "llm", Capacity: 256, Endpoints: []Endpoint{{URL: "http://c", Breaker: "half-open", Healthy: true}}},
		}
	})
	fams := scrape(t, m)

	counters := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"orchestratord_messages_total", map[string]string{"direction": "in"}, 3},
		{"orchestratord_messages_total", map[string]string{"direction": "out"}, 5},
		{"orchestratord_handshakes_total", map[string]string{"outcome": "accepted"}, 2},
		{"orchestratord_handshakes_total", map[string]string{"outcome": "unauthorized"}, 1},
		{"orchestratord_store_errors_total", map[string]string{"op": "save"}, 1},
		{"orchestratord_closes_total", map[string]string{"code": "1000"}, 1},
		{"orchestratord_closes_total", map[string]string{"code": "4008"}, 2},
	}
	for _, tc := range counters {
		s, ok := value(t, fams, tc.name, tc.labels)
		if !ok {
			t.Errorf("%s%v missing", tc.name, tc.labels)
			continue
		}
		if got := s.GetCounter().GetValue(); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	gauges := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"orchestratord_connections", nil, 7},
		{"orchestratord_sessions", nil, 9},
		{"orchestratord_requests_in_flight", nil, 2},
		{"orchestratord_draining", nil, 1},
		{"orchestratord_build_info", map[string]string{"version": "v1.2.3", "goversion": runtime.Version()}, 1},
		{"orchestratord_breaker_state", map[string]string{"backend": "sql", "endpoint": "http://a", "state": "closed"}, 1},
		{"orchestratord_breaker_state", map[string]string{"backend": "sql", "endpoint": "http://a", "state": "open"}, 0},
		{"orchestratord_breaker_state", map[string]string{"backend": "sql", "endpoint": "http://b", "state": "open"}, 1},
		{"orchestratord_breaker_state", map[string]string{"backend": "sql", "endpoint": "http://b", "state": "closed"}, 0},
		{"orchestratord_breaker_state", map[string]string{"backend": "llm", "endpoint": "http://c", "state": "half-open"}, 1},
		{"orchestratord_endpoint_healthy", map[string]string{"backend": "sql", "endpoint": "http://a"}, 1},
		{"orchestratord_endpoint_healthy", map[string]string{"backend": "sql", "endpoint": "http://b"}, 0},
		{"orchestratord_endpoint_in_flight", map[string]string{"backend": "sql", "endpoint": "http://a"}, 2},
		{"orchestratord_backend_in_flight", map[string]string{"backend": "sql"}, 3},
		{"orchestratord_backend_capacity", map[string]string{"backend": "sql"}, 128},
		{"orchestratord_backend_capacity", map[string]string{"backend": "llm"}, 256},
	}
	for _, tc := range gauges {
		s, ok := value(t, fams, tc.name, tc.labels)
		if !ok {
			t.Errorf("%s%v missing", tc.name, tc.labels)
			continue
		}
		if got := s.GetGauge().GetValue(); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	h, ok := value(t, fams, "orchestratord_request_duration_seconds", map[string]string{"route": "echo", "outcome": "result"})
	if !ok {
		t.Fatal("request_duration_seconds{echo,result} missing")
	}
	if got := h.GetHistogram().GetSampleCount(); got != 2 {
		t.Errorf("echo/result sample count = %d, want 2", got)
	}
	if got, want := h.GetHistogram().GetSampleSum(), 0.005; got < want-1e-9 || got > want+1e-9 {
		t.Errorf("echo/result sample sum = %v, want %v", got, want)
	}
	h, ok = value(t, fams, "orchestratord_request_duration_seconds", map[string]string{"route": "chat", "outcome": "timeout"})
	if !ok || h.GetHistogram().GetSampleCount() != 1 {
		t.Errorf("chat/timeout histogram = %v, want one sample", h)
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("%s missing: Go and process collectors not registered", name)
		}
	}
}

func TestGaugesDefaultZero(t *testing.T) {
	m := New("dev")
	fams := scrape(t, m)
	for _, name := range []string{"orchestratord_connections", "orchestratord_draining"} {
		s, ok := value(t, fams, name, nil)
		if !ok || s.GetGauge().GetValue() != 0 {
			t.Errorf("%s = %v, want 0 before SetGauges", name, s)
		}
	}
	if _, ok := fams["orchestratord_breaker_state"]; ok {
		t.Errorf("breaker_state exported before SetBackends")
	}
}

func TestBackendDuplicatesSkipped(t *testing.T) {
	m := New("dev")
	m.SetBackends(func() []Backend {
		return []Backend{
			{Name: "a", Endpoints: []Endpoint{{URL: "x", Breaker: "open"}, {URL: "x", Breaker: "closed"}}},
			{Name: "a"},
		}
	})
	fams := scrape(t, m)
	if n := len(fams["orchestratord_breaker_state"].GetMetric()); n != len(BreakerStates) {
		t.Errorf("breaker_state series = %d, want %d", n, len(BreakerStates))
	}
	if n := len(fams["orchestratord_backend_capacity"].GetMetric()); n != 1 {
		t.Errorf("backend_capacity series = %d, want 1", n)
	}
}

// TestCountersPresentFromStart: every counter an alert or dashboard reads
// has its series at 0 before anything happened.
func TestCountersPresentFromStart(t *testing.T) {
	m := New("dev")
	m.Endpoint("sql", "http://a/q")
	m.Refusals("sql")
	fams := scrape(t, m)
	want := []struct {
		name   string
		labels map[string]string
	}{
		{"orchestratord_store_errors_total", map[string]string{"op": "get"}},
		{"orchestratord_store_errors_total", map[string]string{"op": "attach"}},
		{"orchestratord_closes_total", map[string]string{"code": "1000"}},
		{"orchestratord_closes_total", map[string]string{"code": "other"}},
		{"orchestratord_handshakes_total", map[string]string{"outcome": "unauthorized"}},
		{"orchestratord_reloads_total", map[string]string{"result": "success"}},
		{"orchestratord_reloads_total", map[string]string{"result": "failure"}},
		{"orchestratord_message_bytes_total", map[string]string{"direction": "in"}},
		{"orchestratord_backend_calls_total", map[string]string{"backend": "sql", "endpoint": "http://a/q", "outcome": "connect_error"}},
		{"orchestratord_backend_refusals_total", map[string]string{"backend": "sql", "reason": "breaker_open"}},
	}
	for _, w := range want {
		s, ok := value(t, fams, w.name, w.labels)
		if !ok || s.GetCounter().GetValue() != 0 {
			t.Errorf("%s%v = %v (found %v), want 0 from the start", w.name, w.labels, s, ok)
		}
	}
	if _, ok := value(t, fams, "orchestratord_backend_call_duration_seconds", map[string]string{"backend": "sql", "outcome": "ok"}); !ok {
		t.Errorf("backend_call_duration_seconds{outcome=ok} missing before the first call")
	}
	if s, ok := value(t, fams, "orchestratord_last_reload_success_timestamp_seconds", nil); !ok || s.GetGauge().GetValue() < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last_reload_success_timestamp_seconds = %v, want the start time", s)
	}
}

// TestClosesFolded: a code outside the contract is counted as other, so a
// client cannot create series.
func TestClosesFolded(t *testing.T) {
	m := New("dev")
	for c := 3000; c < 5000; c += 7 {
		m.Closed(c)
	}
	m.Closed(4008)
	fams := scrape(t, m)
	if n, want := len(fams["orchestratord_closes_total"].GetMetric()), len(CloseCodes)+1; n != want {
		t.Errorf("closes_total series = %d, want %d", n, want)
	}
	if s, _ := value(t, fams, "orchestratord_closes_total", map[string]string{"code": "4008"}); s.GetCounter().GetValue() != 2 {
		t.Errorf("closes_total{4008} = %v, want 2 (4008 sent once and once within the loop)", s.GetCounter().GetValue())
	}
}

func TestReloaded(t *testing.T) {
	m := New("dev")
	m.Reloaded(errors.New("bad"))
	m.Reloaded(nil)
	m.Reloaded(nil)
	fams := scrape(t, m)
	for result, want := range map[string]float64{"success": 2, "failure": 1} {
		if s, _ := value(t, fams, "orchestratord_reloads_total", map[string]string{"result": result}); s.GetCounter().GetValue() != want {
			t.Errorf("reloads_total{%s} = %v, want %v", result, s.GetCounter().GetValue(), want)
		}
	}
}

func TestEndpointCalls(t *testing.T) {
	m := New("dev")
	observe, quantiles := m.Endpoint("llm", "http://h/v1")
	if p50, p99 := quantiles(); p50 != 0 || p99 != 0 {
		t.Fatalf("quantiles without calls = %v, %v, want 0, 0", p50, p99)
	}
	for range 98 {
		observe("ok", 3*time.Millisecond) // bucket (2.5ms, 5ms]
	}
	observe("timeout", 20*time.Second)
	observe("timeout", 20*time.Second)
	observe("canceled", 100*time.Second) // not in the percentiles
	observe("bogus", time.Millisecond)   // counted as error
	p50, p99 := quantiles()
	if p50 <= 2.5 || p50 > 5 {
		t.Errorf("p50 = %vms, want within the 2.5-5ms bucket", p50)
	}
	if p99 <= 10000 || p99 > 30000 {
		t.Errorf("p99 = %vms, want within the 10-30s bucket", p99)
	}
	// The same names again (a reload) share the series.
	again, _ := m.Endpoint("llm", "http://h/v1")
	again("ok", time.Millisecond)
	fams := scrape(t, m)
	for outcome, want := range map[string]float64{"ok": 99, "timeout": 2, "canceled": 1, "error": 1, "rejected": 0} {
		s, ok := value(t, fams, "orchestratord_backend_calls_total", map[string]string{"backend": "llm", "endpoint": "http://h/v1", "outcome": outcome})
		if !ok || s.GetCounter().GetValue() != want {
			t.Errorf("backend_calls_total{%s} = %v, want %v", outcome, s.GetCounter().GetValue(), want)
		}
	}
	h, _ := value(t, fams, "orchestratord_backend_call_duration_seconds", map[string]string{"backend": "llm", "outcome": "ok"})
	if h.GetHistogram().GetSampleCount() != 99 {
		t.Errorf("call duration{ok} count = %d, want 99", h.GetHistogram().GetSampleCount())
	}
	refused := m.Refusals("llm")
	refused("overloaded")
	fams = scrape(t, m)
	if s, _ := value(t, fams, "orchestratord_backend_refusals_total", map[string]string{"backend": "llm", "reason": "overloaded"}); s.GetCounter().GetValue() != 1 {
		t.Errorf("refusals{overloaded} = %v, want 1", s.GetCounter().GetValue())
	}
}

// TestRequestObserver: the resolved recorder and Request write the same
// series, and each route and outcome only its own.
func TestRequestObserver(t *testing.T) {
	m := New("dev")
	echo := m.RequestObserver("echo", "result")
	for range 5 {
		echo(time.Millisecond)
	}
	m.Request("echo", "result", time.Millisecond)
	m.Request("echo", "timeout", time.Second)
	m.RequestObserver("chat", "result")(time.Second)
	fams := scrape(t, m)
	for labels, want := range map[[2]string]uint64{{"echo", "result"}: 6, {"echo", "timeout"}: 1, {"chat", "result"}: 1} {
		s, ok := value(t, fams, "orchestratord_request_duration_seconds", map[string]string{"route": labels[0], "outcome": labels[1]})
		if !ok || s.GetHistogram().GetSampleCount() != want {
			t.Errorf("request_duration_seconds%v count = %d, want %d", labels, s.GetHistogram().GetSampleCount(), want)
		}
	}
}

func TestBucketQuantile(t *testing.T) {
	cum := make([]uint64, len(requestBuckets)+1)
	if got := bucketQuantile(0.5, cum); got != 0 {
		t.Errorf("empty = %v, want 0", got)
	}
	for i := range cum {
		cum[i] = 10 // all ten in the first bucket (0, 0.5ms]
	}
	if got := bucketQuantile(0.5, cum); got != 0.00025 {
		t.Errorf("p50 of ten in the first bucket = %v, want 0.00025", got)
	}
	for i := range requestBuckets {
		cum[i] = 0
	}
	if got := bucketQuantile(0.99, cum); got != 120 {
		t.Errorf("all in +Inf = %v, want the highest bound", got)
	}
}

func TestHotPathNoAlloc(t *testing.T) {
	m := New("dev")
	route, outcome := "echo", "result"
	m.Request(route, outcome, time.Millisecond)
	m.Handshake("accepted")
	m.Closed(1000)
	m.StoreError("load")
	observe, _ := m.Endpoint("b", "http://e")
	result := m.RequestObserver(route, outcome)
	allocs := testing.AllocsPerRun(1000, func() {
		result(time.Millisecond)
		m.MessageIn()
		m.MessageOut()
		m.BytesIn(10)
		m.BytesOut(10)
		m.Closed(3999)
		observe("ok", time.Millisecond)
		m.Request(route, outcome, time.Millisecond)
		m.Handshake("accepted")
		m.Closed(1000)
		m.StoreError("load")
	})
	if allocs != 0 {
		t.Errorf("hot path allocs per run = %v, want 0", allocs)
	}
}

func TestConcurrentNewLabels(t *testing.T) {
	m := New("dev")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 100 {
				m.Request("r", string(rune('a'+(i+j)%5)), time.Millisecond)
				m.Closed(1000 + j%3)
			}
		})
	}
	wg.Wait()
	fams := scrape(t, m)
	var total uint64
	for _, s := range fams["orchestratord_request_duration_seconds"].GetMetric() {
		total += s.GetHistogram().GetSampleCount()
	}
	if total != 800 {
		t.Errorf("total observations = %d, want 800", total)
	}
}

func BenchmarkRequest(b *testing.B) {
	m := New("dev")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Request("echo", "result", time.Millisecond)
			m.MessageIn()
		}
	})
}

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log, lv := NewLogger(&buf, "warn")
	log.Info("hidden")
	log.Warn("shown", "session", "s1")
	if strings.Contains(buf.String(), "hidden") || !strings.Contains(buf.String(), `"msg":"shown"`) {
		t.Fatalf("level warn: got %q", buf.String())
	}
	if !strings.Contains(buf.String(), `"session":"s1"`) || !strings.Contains(buf.String(), `"time":`) {
		t.Errorf("want JSON with time and attrs, got %q", buf.String())
	}
	if err := SetLevel(lv, "debug"); err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	log.Debug("now shown")
	if !strings.Contains(buf.String(), "now shown") {
		t.Errorf("after SetLevel(debug) got %q", buf.String())
	}
	if err := SetLevel(lv, "loud"); err == nil {
		t.Errorf("SetLevel(loud) = nil, want error")
	}
	if lv.Level().String() != "DEBUG" {
		t.Errorf("level after failed SetLevel = %v, want DEBUG", lv.Level())
	}
	buf.Reset()
	_, lv = NewLogger(&buf, "nope")
	if lv.Level().String() != "INFO" || !strings.Contains(buf.String(), "invalid log level") {
		t.Errorf("invalid level: level %v, log %q", lv.Level(), buf.String())
	}
}

// TestLoggerRedacts: no URL secret reaches a log line, whatever the value
// carrying it.
func TestLoggerRedacts(t *testing.T) {
	var buf bytes.Buffer
	log, _ := NewLogger(&buf, "debug")
	log = log.With("endpoint", "http://dbuser:hunter2@db/q?api_key=k3y")
	log.Info("calling http://u:pw1@h/", "err", errors.New(`Post "http://a:pw2@h/?token=t0k": refused`),
		"urls", []string{"nats://x:pw3@n1"}, slog.Group("g", "u", "http://h/?secret=pw4"))
	out := buf.String()
	for _, secret := range []string{"hunter2", "k3y", "pw1", "pw2", "t0k", "pw3", "pw4"} {
		if strings.Contains(out, secret) {
			t.Errorf("log line leaks %q: %s", secret, out)
		}
	}
	if !strings.Contains(out, "http://xxxxx@db/q?api_key=xxxxx") {
		t.Errorf("log line lacks the redacted endpoint: %s", out)
	}
}
