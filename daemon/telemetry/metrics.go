package telemetry

import (
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const namespace = "orchestratord"

// requestBuckets are the bucket bounds (seconds) of
// orchestratord_request_duration_seconds: from an in-process echo (sub-ms)
// to a long LLM stream (two minutes).
var requestBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// Gauges is the node state read at scrape time through the callback given
// to SetGauges.
type Gauges struct {
	// Connections is the number of open client connections.
	Connections int
	// Sessions is the number of sessions attached to a connection on this
	// node.
	Sessions int
	// Detached is the number of detached sessions this node keeps for
	// resume in its process memory (memory store; 0 with Redis).
	Detached int
	// SessionBytes is what the node holds for sessions in process memory
	// (replay logs, contexts, histories, terminals waiting for the store).
	SessionBytes int64
	// InFlight is the number of requests in flight on this node.
	InFlight int
	// Draining is true once drain has started.
	Draining bool
}

// Metrics owns the daemon's Prometheus registry and collectors. Its methods
// are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	msgIn, msgOut     prometheus.Counter
	bytesIn, bytesOut prometheus.Counter

	reqDur      *prometheus.HistogramVec
	handshakes  *prometheus.CounterVec
	storeErrors *prometheus.CounterVec
	closes      *prometheus.CounterVec
	reloads     *prometheus.CounterVec
	lastReload  prometheus.Gauge

	reqCache   cowMap[routeOutcome, prometheus.Observer]
	hsCache    cowMap[string, prometheus.Counter]
	storeCache cowMap[string, prometheus.Counter]
	closeCodes map[int]prometheus.Counter // fixed after New
	closeOther prometheus.Counter

	calls *backendMetrics

	gauges   atomic.Pointer[func() Gauges]
	backends atomic.Pointer[func() []Backend]
}

type routeOutcome struct{ route, outcome string }

// New returns Metrics registered on a fresh registry, together with the Go
// runtime and process collectors and orchestratord_build_info{version,
// revision, goversion} (revision from the binary's VCS stamp, "unknown"
// without one).
func New(version string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	msgs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "messages_total",
		Help: "WebSocket data messages, by direction (in: from clients, out: to clients).",
	}, []string{"direction"})
	m.msgIn = msgs.WithLabelValues("in")
	m.msgOut = msgs.WithLabelValues("out")
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "message_bytes_total",
		Help: "Payload bytes of WebSocket data messages, by direction (in: from clients, out: to clients).",
	}, []string{"direction"})
	m.bytesIn = bytes.WithLabelValues("in")
	m.bytesOut = bytes.WithLabelValues("out")
	m.reqDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "request_duration_seconds",
		Help:    "Time from a request's arrival to its terminal message, by route and outcome (result or the error code).",
		Buckets: requestBuckets,
	}, []string{"route", "outcome"})
	m.handshakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "handshakes_total",
		Help: "WebSocket handshakes, by outcome (accepted or the refusal code).",
	}, []string{"outcome"})
	for _, o := range HandshakeOutcomes {
		m.hsCache.store(o, func() prometheus.Counter { return m.handshakes.WithLabelValues(o) })
	}
	m.storeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "store_errors_total",
		Help: "Failed session store operations, by operation.",
	}, []string{"op"})
	for _, op := range StoreOps {
		m.storeCache.store(op, func() prometheus.Counter { return m.storeErrors.WithLabelValues(op) })
	}
	m.closes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "closes_total",
		Help: "Closed client connections, by WebSocket close code (the contract's codes, else other).",
	}, []string{"code"})
	m.closeCodes = make(map[int]prometheus.Counter, len(CloseCodes))
	for _, c := range CloseCodes {
		m.closeCodes[c] = m.closes.WithLabelValues(strconv.Itoa(c))
	}
	m.closeOther = m.closes.WithLabelValues("other")
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "reloads_total",
		Help: "Configuration reloads (SIGHUP), by result (success or failure).",
	}, []string{"result"})
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	m.lastReload = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "last_reload_success_timestamp_seconds",
		Help: "Unix time of the last successful configuration load: the start, then each successful reload.",
	})
	m.lastReload.SetToCurrentTime()
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help: "Always 1; the labels say which build is running.",
	}, []string{"version", "revision", "goversion"})
	build.WithLabelValues(version, revision(), runtime.Version()).Set(1)
	m.calls = newBackendMetrics()
	m.reg.MustRegister(msgs, bytes, m.reqDur, m.handshakes, m.storeErrors, m.closes, m.reloads, m.lastReload, build,
		&stateCollector{m: m})
	m.calls.register(m.reg, m)
	return m
}

// revision returns the VCS revision stamped in the binary (with "-dirty"
// for a modified tree), or "unknown".
func revision() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "unknown"
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}

// Registry returns the registry holding every metric, for promhttp and for
// packages that register collectors of their own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// MessageIn counts one message received from a client.
func (m *Metrics) MessageIn() { m.msgIn.Inc() }

// MessageOut counts one message sent to a client.
func (m *Metrics) MessageOut() { m.msgOut.Inc() }

// BytesIn counts n payload bytes received from a client.
func (m *Metrics) BytesIn(n int) { m.bytesIn.Add(float64(n)) }

// BytesOut counts n payload bytes queued to a client.
func (m *Metrics) BytesOut(n int) { m.bytesOut.Add(float64(n)) }

// Request observes one finished request: its route, its outcome ("result"
// or the error code) and its duration. It does not allocate once the
// (route, outcome) pair has been seen.
func (m *Metrics) Request(route, outcome string, d time.Duration) {
	m.requestObserver(route, outcome).Observe(d.Seconds())
}

// RequestObserver returns the recorder of route's requests that end with
// outcome: Request(route, outcome, d) without the series lookup, for a
// caller that records many requests of one route and outcome.
func (m *Metrics) RequestObserver(route, outcome string) func(d time.Duration) {
	o := m.requestObserver(route, outcome)
	return func(d time.Duration) { o.Observe(d.Seconds()) }
}

func (m *Metrics) requestObserver(route, outcome string) prometheus.Observer {
	k := routeOutcome{route, outcome}
	o, ok := m.reqCache.load(k)
	if !ok {
		o = m.reqCache.store(k, func() prometheus.Observer { return m.reqDur.WithLabelValues(route, outcome) })
	}
	return o
}

// Handshake counts one handshake by outcome: "accepted" or the refusal code.
func (m *Metrics) Handshake(outcome string) {
	c, ok := m.hsCache.load(outcome)
	if !ok {
		c = m.hsCache.store(outcome, func() prometheus.Counter { return m.handshakes.WithLabelValues(outcome) })
	}
	c.Inc()
}

// StoreError counts one failed session store operation (op: load, save, …).
func (m *Metrics) StoreError(op string) {
	c, ok := m.storeCache.load(op)
	if !ok {
		c = m.storeCache.store(op, func() prometheus.Counter { return m.storeErrors.WithLabelValues(op) })
	}
	c.Inc()
}

// Closed counts one closed client connection by its close code; a code the
// contract does not define counts as "other".
func (m *Metrics) Closed(code int) {
	if c, ok := m.closeCodes[code]; ok {
		c.Inc()
		return
	}
	m.closeOther.Inc()
}

// Reloaded counts one configuration reload: a nil err is a success and
// sets the last-success timestamp.
func (m *Metrics) Reloaded(err error) {
	if err != nil {
		m.reloads.WithLabelValues("failure").Inc()
		return
	}
	m.reloads.WithLabelValues("success").Inc()
	m.lastReload.SetToCurrentTime()
}

// SetGauges sets the callback read at every scrape for
// orchestratord_connections, _sessions, _requests_in_flight and _draining.
// It is called once per scrape, from the scraping goroutine, and must be
// cheap and safe for concurrent use. Until it is set those gauges are 0.
func (m *Metrics) SetGauges(fn func() Gauges) {
	if fn == nil {
		m.gauges.Store(nil)
		return
	}
	m.gauges.Store(&fn)
}

// stateCollector exports the gauges read from the SetGauges callback,
// calling it once per scrape.
type stateCollector struct{ m *Metrics }

var (
	descConnections = prometheus.NewDesc(namespace+"_connections", "Open client connections.", nil, nil)
	descSessions    = prometheus.NewDesc(namespace+"_sessions", "Sessions attached to a connection on this node.", nil, nil)
	descDetached    = prometheus.NewDesc(namespace+"_sessions_detached", "Detached sessions kept for resume in this node's memory.", nil, nil)
	descSessBytes   = prometheus.NewDesc(namespace+"_session_bytes", "Bytes held for sessions in process memory (logs, contexts, histories, waiting terminals).", nil, nil)
	descInFlight    = prometheus.NewDesc(namespace+"_requests_in_flight", "Requests in flight on this node.", nil, nil)
	descDraining    = prometheus.NewDesc(namespace+"_draining", "1 once drain has started, else 0.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descConnections
	ch <- descSessions
	ch <- descDetached
	ch <- descSessBytes
	ch <- descInFlight
	ch <- descDraining
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	var g Gauges
	if fn := c.m.gauges.Load(); fn != nil {
		g = (*fn)()
	}
	draining := 0.0
	if g.Draining {
		draining = 1
	}
	ch <- prometheus.MustNewConstMetric(descConnections, prometheus.GaugeValue, float64(g.Connections))
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(g.Sessions))
	ch <- prometheus.MustNewConstMetric(descDetached, prometheus.GaugeValue, float64(g.Detached))
	ch <- prometheus.MustNewConstMetric(descSessBytes, prometheus.GaugeValue, float64(g.SessionBytes))
	ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(g.InFlight))
	ch <- prometheus.MustNewConstMetric(descDraining, prometheus.GaugeValue, draining)
}

// cowMap is a copy-on-write map: load is lock-free and allocation-free,
// store (rare: a new label combination) copies the map under mu.
type cowMap[K comparable, V any] struct {
	mu sync.Mutex // serialises store
	p  atomic.Pointer[map[K]V]
}

func (c *cowMap[K, V]) load(k K) (V, bool) {
	if m := c.p.Load(); m != nil {
		v, ok := (*m)[k]
		return v, ok
	}
	var zero V
	return zero, false
}

// store returns the value for k, creating it with mk if it is absent.
func (c *cowMap[K, V]) store(k K, mk func() V) V {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.p.Load()
	if old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
	}
	n := make(map[K]V, 1+lenOf(old))
	if old != nil {
		for ok, ov := range *old {
			n[ok] = ov
		}
	}
	v := mk()
	n[k] = v
	c.p.Store(&n)
	return v
}

func lenOf[K comparable, V any](m *map[K]V) int {
	if m == nil {
		return 0
	}
	return len(*m)
}
