package telemetry

import (
	"bytes"
	"net/http"
	"net/http/httptest"
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
	m.SetBreakers(func() []Breaker {
		return []Breaker{
			{Backend: "sql", Endpoint: "http://a", State: "closed"},
			{Backend: "sql", Endpoint: "http://b", State: "open"},
			{Backend: "llm", Endpoint: "http://c", State: "half-open"},
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
		{"orchestratord_build_info", map[string]string{"version": "v1.2.3"}, 1},
		{"orchestratord_breaker_state", map[string]string{"backend": "sql", "endpoint": "http://a"}, 0},
		{"orchestratord_breaker_state", map[string]string{"backend": "sql", "endpoint": "http://b"}, 2},
		{"orchestratord_breaker_state", map[string]string{"backend": "llm", "endpoint": "http://c"}, 1},
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
		t.Errorf("breaker_state exported before SetBreakers")
	}
}

func TestBreakerDuplicatesSkipped(t *testing.T) {
	m := New("dev")
	m.SetBreakers(func() []Breaker {
		return []Breaker{{"a", "x", "open"}, {"a", "x", "closed"}}
	})
	fams := scrape(t, m)
	if n := len(fams["orchestratord_breaker_state"].GetMetric()); n != 1 {
		t.Errorf("breaker_state series = %d, want 1", n)
	}
}

func TestBreakerValue(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
	}{{"closed", 0}, {"half-open", 1}, {"open", 2}, {"weird", -1}} {
		if got := BreakerValue(tc.in); got != tc.want {
			t.Errorf("BreakerValue(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestHotPathNoAlloc(t *testing.T) {
	m := New("dev")
	route, outcome := "echo", "result"
	m.Request(route, outcome, time.Millisecond)
	m.Handshake("accepted")
	m.Closed(1000)
	m.StoreError("load")
	allocs := testing.AllocsPerRun(1000, func() {
		m.MessageIn()
		m.MessageOut()
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
