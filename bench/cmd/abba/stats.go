package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// latency is a phase's latency distribution in milliseconds, from every
// answer inside the measured window (exact, no histogram buckets).
type latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

func percentiles(ns []int64) latency {
	if len(ns) == 0 {
		return latency{}
	}
	slices.Sort(ns)
	q := func(p float64) float64 {
		// Nearest rank: the smallest value with at least p of the samples
		// at or below it.
		i := int(math.Ceil(p*float64(len(ns)))) - 1
		i = min(max(i, 0), len(ns)-1)
		return float64(ns[i]) / 1e6
	}
	return latency{Count: int64(len(ns)), P50: q(0.50), P99: q(0.99), P999: q(0.999), Max: float64(ns[len(ns)-1]) / 1e6}
}

// spread is the median and range of a list of ratios.
type spread struct{ med, lo, hi float64 }

func spreadOf(v []float64) (spread, bool) {
	var ok []float64
	for _, x := range v {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			ok = append(ok, x)
		}
	}
	if len(ok) == 0 {
		return spread{}, false
	}
	slices.Sort(ok)
	n := len(ok)
	med := ok[n/2]
	if n%2 == 0 {
		med = (ok[n/2-1] + ok[n/2]) / 2
	}
	return spread{med: med, lo: ok[0], hi: ok[n-1]}, true
}

func (s spread) String() string {
	return fmt.Sprintf("**%.2fx** (%.2f–%.2f)", s.med, s.lo, s.hi)
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// metric is one figure compared between A and B.
type metric struct {
	name   string
	open   bool // from the open-loop phase
	get    func(*phase) float64
	better string // "higher" or "lower": which way A ÷ B should go
}

var metrics = []metric{
	{name: "msgs per server CPU-s (closed)", get: func(p *phase) float64 { return p.PerServerCPUs }, better: "higher"},
	{name: "p50 (closed)", get: func(p *phase) float64 { return p.Lat.P50 }, better: "lower"},
	{name: "p99 (closed)", get: func(p *phase) float64 { return p.Lat.P99 }, better: "lower"},
	{name: "server CPU-s per 100k msgs (open)", open: true, get: func(p *phase) float64 { return p.CPUPer100k }, better: "lower"},
	{name: "p50 (open)", open: true, get: func(p *phase) float64 { return p.Lat.P50 }, better: "lower"},
	{name: "p99 (open)", open: true, get: func(p *phase) float64 { return p.Lat.P99 }, better: "lower"},
	{name: "p99.9 (open)", open: true, get: func(p *phase) float64 { return p.Lat.P999 }, better: "lower"},
}

func (m metric) phase(r *runResult) *phase {
	if r == nil {
		return nil
	}
	if m.open {
		return r.Open
	}
	return r.Closed
}

// fellBehind reports whether an open-loop run's server did not keep up
// with the offered rate: its median answer came later than behind ms after
// the intended send time. Such a server batches what piled up and looks
// cheaper per message than it is, so the pair's open-loop ratios are left
// out (on a shared machine this is a neighbour holding the server's CPU).
func fellBehind(p *phase, behind float64) bool { return behind > 0 && p.Lat.P50 > behind }

// ratios returns A ÷ B of m for every pair where both runs have it (and,
// for the open loop, both servers kept up).
func (m metric) ratios(c *comparison, behind float64) []float64 {
	var out []float64
	for _, p := range c.Pairs {
		a, b := m.phase(p.A), m.phase(p.B)
		if a == nil || b == nil || (m.open && (fellBehind(a, behind) || fellBehind(b, behind))) {
			out = append(out, math.NaN())
			continue
		}
		out = append(out, ratio(m.get(a), m.get(b)))
	}
	return out
}

// goal is an issue 17 goal against gws, stated as a bound on the median
// ratio.
type goal struct {
	a, b, metric string
	bound        float64
	atLeast      bool
}

var goals = []goal{
	{a: "netpoll-echo", b: "gws", metric: "msgs per server CPU-s (closed)", bound: 1.2, atLeast: true},
	{a: "netpoll-echo", b: "gws", metric: "p50 (open)", bound: 1.0},
	{a: "netpoll-echo", b: "gws", metric: "p99 (open)", bound: 1.0},
	{a: "netpoll-echo", b: "gws", metric: "server CPU-s per 100k msgs (open)", bound: 1.0},
	{a: "orchestratord", b: "gws", metric: "msgs per server CPU-s (closed)", bound: 1.0, atLeast: true},
	{a: "orchestratord", b: "gws", metric: "p99 (open)", bound: 2.0},
}

func (g goal) judge(s spread) string {
	met := func(x float64) bool {
		if g.atLeast {
			return x >= g.bound
		}
		return x <= g.bound
	}
	switch {
	case met(s.lo) && met(s.hi):
		return "met in every pair"
	case met(s.med):
		return "met by the median, not in every pair"
	default:
		return "missed"
	}
}

func ms(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// markdown renders the report as tables ready to paste.
func markdown(r *report) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	inflight := fmt.Sprintf("%d requests in flight over all connections", r.Inflight)
	if r.Inflight <= 0 || r.Inflight >= r.Conns {
		inflight = "one request in flight per connection"
	}
	w("\nIndependent ABBA check (bench/cmd/abba, gorilla/websocket client), %s UTC: %d connections, %d-byte text frames; closed loop with %s, %s window; open loop at %d msg/s, %s window. Server on CPU 0, client on CPU 1.\n\n",
		r.Started.Format("2006-01-02 15:04"), r.Conns, r.Payload, inflight, r.Duration, r.Rate, r.RateDur)
	w("Command: `%s`\n", r.Cmdline)
	behindRuns := 0
	for _, c := range r.Comparisons {
		w("\n#### %s vs %s\n\n", c.A, c.B)
		w("| pair | order | server | load avg (1/5/15 min) | msgs/s | msgs per server CPU-s | server busy | client CPU | p50 / p99 ms | ctx sw / msg | open: server CPU-s per 100k | open: p50 / p99 / p99.9 ms | open: client CPU |\n")
		w("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for i, p := range c.Pairs {
			runs := []*runResult{p.A, p.B}
			if p.Order == "BA" {
				runs = []*runResult{p.B, p.A}
			}
			for _, run := range runs {
				if run == nil {
					w("| %d | %s | (failed) | | | | | | | | | | |\n", i+1, p.Order)
					continue
				}
				cl := "| | | | | |"
				if x := run.Closed; x != nil {
					cl = fmt.Sprintf("| %.0f | %.0f | %.0f %% | %.0f %% | %s / %s | %.3f |", x.MsgsPerSec, x.PerServerCPUs, x.ServerBusy, x.ClientCPU, ms(x.Lat.P50), ms(x.Lat.P99), x.CSPerMsg)
				}
				op := " | | |"
				if x := run.Open; x != nil {
					mark := ""
					if fellBehind(x, r.BehindMs) {
						mark = " (fell behind)"
						behindRuns++
					}
					op = fmt.Sprintf(" %.3f%s | %s / %s / %s | %.0f %% |", x.CPUPer100k, mark, ms(x.Lat.P50), ms(x.Lat.P99), ms(x.Lat.P999), x.ClientCPU)
				}
				w("| %d | %s | %s | %s → %s %s%s\n", i+1, p.Order, run.Server, run.LoadBefore, run.LoadAfter, cl, op)
			}
		}
		w("\n| %s ÷ %s |", c.A, c.B)
		for i := range c.Pairs {
			w(" pair %d (%s) |", i+1, c.Pairs[i].Order)
		}
		w(" median (range) |\n|---|")
		for range c.Pairs {
			w("---|")
		}
		w("---|\n")
		for _, m := range metrics {
			rs := m.ratios(c, r.BehindMs)
			w("| %s (%s is better) |", m.name, m.better)
			for _, x := range rs {
				if math.IsNaN(x) {
					w(" – |")
				} else {
					w(" %.2f |", x)
				}
			}
			if s, ok := spreadOf(rs); ok {
				w(" %s |\n", s)
			} else {
				w(" – |\n")
			}
		}
	}
	if behindRuns > 0 {
		w("\n%d open-loop run(s) fell behind the offered rate (median answer later than %.0f ms: the server's CPU was held by other work); the open-loop ratios of their pairs are left out (–).\n", behindRuns, r.BehindMs)
	}
	var rows []string
	for _, g := range goals {
		for _, c := range r.Comparisons {
			if c.A != g.a || c.B != g.b {
				continue
			}
			for _, m := range metrics {
				if m.name != g.metric {
					continue
				}
				s, ok := spreadOf(m.ratios(c, r.BehindMs))
				if !ok {
					continue
				}
				op := "≤"
				if g.atLeast {
					op = "≥"
				}
				rows = append(rows, fmt.Sprintf("| %s ÷ %s: %s %s %.1fx | %s | %s |", g.a, g.b, g.metric, op, g.bound, s, g.judge(s)))
			}
		}
	}
	if len(rows) > 0 {
		w("\n#### Issue 17 goals in this check\n\n| goal | median (range) over the pairs | verdict |\n|---|---|---|\n%s\n", strings.Join(rows, "\n"))
	}
	return b.String()
}
