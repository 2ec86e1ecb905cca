package main

import (
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestMetricsCountTraffic sends known traffic through the real daemon and
// checks the scraped counters, parsed with the Prometheus text parser.
func TestMetricsCountTraffic(t *testing.T) {
	s := startStack(t, baseYAML)
	c := s.dial(t, "alice", "")
	c.expect(2 * time.Second)
	const n = 7
	for i := 0; i < n; i++ {
		c.send(`{"type":"echo","id":"e` + string(rune('0'+i)) + `","data":1}`)
		c.expect(2 * time.Second)
	}
	c.send(`{"type":"nope","id":"u"}`)
	c.expect(2 * time.Second)
	rawHandshake(t, s.addr, "/ws", nil) // one 401

	fams := scrape(t, "http://"+s.admin+"/metrics")
	checks := []struct {
		name   string
		labels map[string]string
		want   func(float64) bool
		desc   string
	}{
		{"orchestratord_messages_total", map[string]string{"direction": "in"}, func(v float64) bool { return v == n+1 }, "n+1 messages in"},
		{"orchestratord_messages_total", map[string]string{"direction": "out"}, func(v float64) bool { return v == n+2 }, "welcome + n results + 1 error out"},
		{"orchestratord_request_duration_seconds", map[string]string{"route": "echo", "outcome": "result"}, func(v float64) bool { return v == n }, "n echo results observed"},
		{"orchestratord_handshakes_total", map[string]string{"outcome": "accepted"}, func(v float64) bool { return v == 1 }, "1 accepted handshake"},
		{"orchestratord_handshakes_total", map[string]string{"outcome": "unauthorized"}, func(v float64) bool { return v == 1 }, "1 refused handshake"},
		{"orchestratord_connections", nil, func(v float64) bool { return v == 1 }, "1 open connection"},
		{"orchestratord_draining", nil, func(v float64) bool { return v == 0 }, "not draining"},
	}
	for _, ck := range checks {
		v, ok := metricValue(fams, ck.name, ck.labels)
		if !ok || !ck.want(v) {
			t.Errorf("%s%v = %v (found %v), want %s", ck.name, ck.labels, v, ok, ck.desc)
		}
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Errorf("Go runtime metrics missing")
	}
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// metricValue returns the value of the series of name whose labels include
// labels: counter, gauge, or a histogram's sample count.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for k, v := range labels {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// TestNodeTotalsSurviveClosedConnections: the admin API's message totals
// count every message since start, not only those of open connections.
func TestNodeTotalsSurviveClosedConnections(t *testing.T) {
	s := startStack(t, baseYAML)
	c := s.dial(t, "alice", "")
	c.expect(2 * time.Second)
	for i := 0; i < 3; i++ {
		c.send(`{"type":"ping","id":"p` + string(rune('0'+i)) + `"}`)
		c.expect(2 * time.Second)
	}
	c.conn.Close()
	waitUntil(t, 3*time.Second, func() bool { return nodeView(t, s)["connections"] == 0 })
	v := nodeView(t, s)
	if v["msgs_in_total"] != 3 || v["msgs_out_total"] != 4 {
		t.Fatalf("after the connection closed: in %v out %v, want 3 in and 4 out (welcome + 3 pongs)", v["msgs_in_total"], v["msgs_out_total"])
	}
}

func nodeView(t *testing.T, s *stack) map[string]float64 {
	t.Helper()
	raw := getJSON[map[string]any](t, "http://"+s.admin+"/api/node")
	out := map[string]float64{}
	for k, v := range raw {
		if f, ok := v.(float64); ok {
			out[k] = f
		}
	}
	return out
}
