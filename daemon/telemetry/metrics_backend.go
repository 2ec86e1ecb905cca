package telemetry

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// CallOutcomes are the outcomes of one backend endpoint call, the outcome
// label of orchestratord_backend_calls_total and
// orchestratord_backend_call_duration_seconds. Every one is a counter
// series from the moment the endpoint exists.
var CallOutcomes = []string{"ok", "rejected", "error", "connect_error", "no_responders", "timeout", "canceled"}

// RefusalReasons are the reasons a backend refuses a call without calling
// any endpoint (orchestratord_backend_refusals_total).
var RefusalReasons = []string{"breaker_open", "unhealthy", "overloaded"}

// quantileWindow is the span the admin page's p50/p99 cover: between one
// and two windows of the most recent calls.
const quantileWindow = time.Minute

// backendMetrics are the per-backend and per-endpoint instruments.
type backendMetrics struct {
	dur      *prometheus.HistogramVec
	calls    *prometheus.CounterVec
	refusals *prometheus.CounterVec

	eps cowMap[[2]string, *endpointMetrics]
}

func newBackendMetrics() *backendMetrics {
	return &backendMetrics{
		dur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "backend_call_duration_seconds",
			Help:    "Duration of backend endpoint calls, by backend, endpoint (redacted URL) and outcome.",
			Buckets: requestBuckets,
		}, []string{"backend", "endpoint", "outcome"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "backend_calls_total",
			Help: "Backend endpoint calls, by backend, endpoint (redacted URL) and outcome.",
		}, []string{"backend", "endpoint", "outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "backend_refusals_total",
			Help: "Calls a backend refused without calling an endpoint, by reason (breaker_open, unhealthy, overloaded).",
		}, []string{"backend", "reason"}),
	}
}

func (b *backendMetrics) register(reg *prometheus.Registry, m *Metrics) {
	reg.MustRegister(b.dur, b.calls, b.refusals, &backendCollector{m: m})
}

// endpointMetrics are one endpoint's instruments. The histogram children
// of outcomes other than ok are created at their first call (a series per
// bucket is costly); the counters all exist from the start.
type endpointMetrics struct {
	backend, endpoint string
	b                 *backendMetrics
	outcomes          map[string]*outcomeMetrics // fixed after creation
	// ok and okHist are outcomes["ok"] and its histogram (created with the
	// endpoint): the one outcome of nearly every call, recorded without a
	// map lookup.
	ok     *outcomeMetrics
	okHist prometheus.Histogram

	mu sync.Mutex // guards the window snapshots and histogram creation
	// cur and prev are cumulative bucket counts taken at curAt; quantiles
	// cover the calls since prev.
	cur, prev []uint64
	curAt     time.Time
}

// outcomeMetrics are the series of one (endpoint, outcome).
type outcomeMetrics struct {
	calls prometheus.Counter
	hist  atomic.Pointer[histogramBox] // nil until the first call
}

type histogramBox struct{ h prometheus.Histogram }

// Endpoint returns the recorder of one backend endpoint's calls and the
// reader of its recent p50/p99 latency in milliseconds (over calls of
// every outcome but canceled, in the last one to two minutes; zeros
// without calls). endpoint must already be redacted. Calling it again with
// the same names (a reload) returns instruments on the same series.
func (m *Metrics) Endpoint(backend, endpoint string) (observe func(outcome string, d time.Duration), quantiles func() (p50, p99 float64)) {
	b := m.calls
	k := [2]string{backend, endpoint}
	e, ok := b.eps.load(k)
	if !ok {
		e = b.eps.store(k, func() *endpointMetrics {
			e := &endpointMetrics{backend: backend, endpoint: endpoint, b: b,
				outcomes: make(map[string]*outcomeMetrics, len(CallOutcomes))}
			for _, o := range CallOutcomes {
				e.outcomes[o] = &outcomeMetrics{calls: b.calls.WithLabelValues(backend, endpoint, o)}
			}
			e.ok = e.outcomes["ok"]
			e.okHist = e.histogram("ok")
			return e
		})
	}
	return e.observe, e.quantiles
}

// Refusals returns the counter of calls backend refused, by reason (one
// of RefusalReasons; every one is exported from the start).
func (m *Metrics) Refusals(backend string) func(reason string) {
	cs := make(map[string]prometheus.Counter, len(RefusalReasons))
	for _, r := range RefusalReasons {
		cs[r] = m.calls.refusals.WithLabelValues(backend, r)
	}
	return func(reason string) {
		if c, ok := cs[reason]; ok {
			c.Inc()
			return
		}
		m.calls.refusals.WithLabelValues(backend, reason).Inc()
	}
}

// histogram returns the histogram child of outcome, creating it.
func (e *endpointMetrics) histogram(outcome string) prometheus.Histogram {
	om := e.outcomes[outcome]
	if hb := om.hist.Load(); hb != nil {
		return hb.h
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if hb := om.hist.Load(); hb != nil {
		return hb.h
	}
	h := e.b.dur.WithLabelValues(e.backend, e.endpoint, outcome).(prometheus.Histogram)
	om.hist.Store(&histogramBox{h})
	return h
}

// observe records one call; an outcome not in CallOutcomes counts as
// error. It takes no lock once the outcome's histogram exists.
func (e *endpointMetrics) observe(outcome string, d time.Duration) {
	if outcome == "ok" {
		e.ok.calls.Inc()
		e.okHist.Observe(d.Seconds())
		return
	}
	om, ok := e.outcomes[outcome]
	if !ok {
		outcome = "error"
		om = e.outcomes[outcome]
	}
	om.calls.Inc()
	e.histogram(outcome).Observe(d.Seconds())
}

// quantiles returns p50 and p99 in milliseconds over the calls since the
// previous window snapshot, from the histogram's buckets (interpolated
// linearly inside a bucket, as histogram_quantile does).
func (e *endpointMetrics) quantiles() (p50, p99 float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	counts := make([]uint64, len(requestBuckets)+1) // +Inf last
	var m dto.Metric
	for o, om := range e.outcomes {
		hb := om.hist.Load()
		if o == "canceled" || hb == nil {
			continue
		}
		if err := hb.h.Write(&m); err != nil {
			continue
		}
		hist := m.GetHistogram()
		for i, bk := range hist.GetBucket() {
			counts[i] += bk.GetCumulativeCount()
		}
		counts[len(requestBuckets)] += hist.GetSampleCount()
	}
	now := time.Now()
	if e.curAt.IsZero() {
		e.cur, e.curAt = counts, now
	} else if now.Sub(e.curAt) >= quantileWindow {
		e.prev = e.cur
		e.cur, e.curAt = counts, now
	}
	window := counts
	if e.prev != nil {
		window = make([]uint64, len(counts))
		for i := range counts {
			window[i] = counts[i] - e.prev[i]
		}
	}
	return bucketQuantile(0.5, window) * 1000, bucketQuantile(0.99, window) * 1000
}

// bucketQuantile estimates quantile q (seconds) from cumulative counts of
// requestBuckets, the last being the total; 0 without observations. A
// quantile in the +Inf bucket is reported as the highest bound.
func bucketQuantile(q float64, cum []uint64) float64 {
	total := cum[len(cum)-1]
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	lower, below := 0.0, uint64(0)
	for i, upper := range requestBuckets {
		if float64(cum[i]) >= rank {
			in := cum[i] - below
			if in == 0 {
				return upper
			}
			return lower + (upper-lower)*(rank-float64(below))/float64(in)
		}
		lower, below = upper, cum[i]
	}
	return requestBuckets[len(requestBuckets)-1]
}

// Backend is one backend's state, read at scrape time through the
// callback given to SetBackends.
type Backend struct {
	Name      string
	InFlight  int // calls in flight (the bulkhead's use)
	Capacity  int // max_concurrent (the bulkhead's size)
	Endpoints []Endpoint
}

// Endpoint is one endpoint of a Backend.
type Endpoint struct {
	URL      string // redacted
	Breaker  string // closed, half-open or open
	Healthy  bool   // its last health check passed (true when unchecked)
	InFlight int
}

// BreakerStates are the values of the state label of
// orchestratord_breaker_state.
var BreakerStates = []string{"closed", "half-open", "open"}

// SetBackends sets the callback read at every scrape for the bulkhead,
// breaker and health gauges. It is called once per scrape and must be
// safe for concurrent use.
func (m *Metrics) SetBackends(fn func() []Backend) {
	if fn == nil {
		m.backends.Store(nil)
		return
	}
	m.backends.Store(&fn)
}

var (
	descBackendInFlight = prometheus.NewDesc(namespace+"_backend_in_flight",
		"Calls in flight on a backend (its bulkhead's use).", []string{"backend"}, nil)
	descBackendCapacity = prometheus.NewDesc(namespace+"_backend_capacity",
		"Bulkhead size of a backend (max_concurrent calls).", []string{"backend"}, nil)
	descEndpointInFlight = prometheus.NewDesc(namespace+"_endpoint_in_flight",
		"Calls in flight on a backend endpoint.", []string{"backend", "endpoint"}, nil)
	descEndpointHealthy = prometheus.NewDesc(namespace+"_endpoint_healthy",
		"1 when a backend endpoint passed its last health check (or has none), else 0.", []string{"backend", "endpoint"}, nil)
	descBreaker = prometheus.NewDesc(namespace+"_breaker_state",
		"Circuit breaker of a backend endpoint: one series per state, 1 for the current one.", []string{"backend", "endpoint", "state"}, nil)
)

// backendCollector exports the scrape-time backend gauges. Duplicate
// backends and (backend, endpoint) pairs are skipped, since the registry
// refuses them.
type backendCollector struct{ m *Metrics }

func (c *backendCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descBackendInFlight
	ch <- descBackendCapacity
	ch <- descEndpointInFlight
	ch <- descEndpointHealthy
	ch <- descBreaker
}

func (c *backendCollector) Collect(ch chan<- prometheus.Metric) {
	fn := c.m.backends.Load()
	if fn == nil {
		return
	}
	seenB := make(map[string]bool)
	seenE := make(map[[2]string]bool)
	for _, b := range (*fn)() {
		if seenB[b.Name] {
			continue
		}
		seenB[b.Name] = true
		ch <- prometheus.MustNewConstMetric(descBackendInFlight, prometheus.GaugeValue, float64(b.InFlight), b.Name)
		ch <- prometheus.MustNewConstMetric(descBackendCapacity, prometheus.GaugeValue, float64(b.Capacity), b.Name)
		for _, e := range b.Endpoints {
			k := [2]string{b.Name, e.URL}
			if seenE[k] {
				continue
			}
			seenE[k] = true
			ch <- prometheus.MustNewConstMetric(descEndpointInFlight, prometheus.GaugeValue, float64(e.InFlight), b.Name, e.URL)
			ch <- prometheus.MustNewConstMetric(descEndpointHealthy, prometheus.GaugeValue, boolValue(e.Healthy), b.Name, e.URL)
			for _, s := range BreakerStates {
				ch <- prometheus.MustNewConstMetric(descBreaker, prometheus.GaugeValue, boolValue(s == e.Breaker), b.Name, e.URL, s)
			}
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
