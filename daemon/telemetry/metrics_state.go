package telemetry

import "github.com/prometheus/client_golang/prometheus"

// Gauges is the node state read at scrape time through the callback given
// to SetGauges.
type Gauges struct {
	// Connections is the number of open client connections.
	Connections int
	// Sessions is the number of sessions known to this node.
	Sessions int
	// InFlight is the number of requests in flight on this node.
	InFlight int
	// Draining is true once drain has started.
	Draining bool
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
	descSessions    = prometheus.NewDesc(namespace+"_sessions", "Sessions known to this node.", nil, nil)
	descInFlight    = prometheus.NewDesc(namespace+"_requests_in_flight", "Requests in flight on this node.", nil, nil)
	descDraining    = prometheus.NewDesc(namespace+"_draining", "1 once drain has started, else 0.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descConnections
	ch <- descSessions
	ch <- descInFlight
	ch <- descDraining
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	var g Gauges
	if fn := c.m.gauges.Load(); fn != nil {
		g = (*fn)()
	}
	ch <- prometheus.MustNewConstMetric(descConnections, prometheus.GaugeValue, float64(g.Connections))
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(g.Sessions))
	ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(g.InFlight))
	ch <- prometheus.MustNewConstMetric(descDraining, prometheus.GaugeValue, boolValue(g.Draining))
}
