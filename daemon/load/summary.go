package load

import (
	"fmt"
	"sort"
	"strings"
)

// Summary is the human-readable report of a run.
func (r *Result) Summary() string {
	var b strings.Builder
	o := r.Options
	kind := "protocol route " + o.Route
	if o.Raw {
		kind = "raw echo"
	}
	fmt.Fprintf(&b, "mode %s against %s (%s), %d procs, %d loops each; machine: %d x %s, kernel %s\n",
		o.Mode, o.URL, kind, o.Procs, o.Loops, r.Machine.NProc, r.Machine.CPU, r.Machine.Kernel)
	if o.Mode != ModeChurn {
		fmt.Fprintf(&b, "connect: %d/%d ok, %d welcomed, %.1fs, %.0f upgrades/s\n",
			r.Connect.OK, r.Connect.Tried, r.Connect.Welcomed, r.Connect.Seconds, r.Connect.PerSecond)
	}
	switch o.Mode {
	case ModeEcho, ModeRate, ModeSlow:
		fmt.Fprintf(&b, "messages: %d sent, %d answered, %d unanswered in %.1fs: %.0f msgs/s (payload %d B, workers %d, rate %.0f/s)\n",
			r.Sent, r.Received, r.Unanswered, r.Seconds, r.MsgsPerSecond, o.Payload, o.Workers, o.Rate)
		l := r.Latency
		fmt.Fprintf(&b, "latency ms: p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f (n=%d)\n",
			l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean, l.Count)
	}
	if s := r.Slow; s != nil {
		fmt.Fprintf(&b, "slow peers: %d/%d connected; echo %.0f msgs/s without, %.0f with: ratio %.3f; late clients %d/%d got in\n",
			s.PeersConnected, s.Peers, s.BasePerSecond, s.SlowPerSecond, s.Ratio, s.LateOK, s.LateTried)
	}
	if c := r.Churn; c != nil {
		l := r.Latency
		fmt.Fprintf(&b, "churn: %d cycles, %d failed, %.0f connects/s; connect-to-welcome ms p50 %.3f p99 %.3f\n",
			c.Cycles, c.Failed, c.PerSecond, l.P50, l.P99)
	}
	if s := r.Server; s != nil && s.Before.RSSBytes >= 0 && s.Conns > 0 {
		fmt.Fprintf(&b, "server per conn (%d conns): RSS %.0f B, Go heap %.0f B + stack %.0f B, slab %.0f B, fds %.2f, goroutines %.3f\n",
			s.Conns, s.RSSPerConn, s.HeapPerConn, s.StackPerConn, s.SlabPerConn, s.FDsPerConn, s.GoroutinesPerConn)
	}
	if s := r.Server; s != nil && s.Before.RSSBytes >= 0 {
		fmt.Fprintf(&b, "server: RSS %d -> %d B, threads %d, goroutines %d; CPU %.2fs in %.1fs (%.1f%% of a core), %.0f msgs per CPU-second\n",
			s.Before.RSSBytes, s.Connected.RSSBytes, s.Connected.Threads, s.Connected.Goroutines,
			s.CPUSeconds, s.PhaseSeconds, s.CPUPercent, s.MsgsPerCPUSecond)
		if s.CPUPer100k > 0 {
			fmt.Fprintf(&b, "server: %.3f CPU-seconds per 100k messages\n", s.CPUPer100k)
		}
		if s.Connected.MetricsError != "" {
			fmt.Fprintf(&b, "server metrics: %s\n", s.Connected.MetricsError)
		}
	}
	fmt.Fprintf(&b, "load tool CPU: %.0f%% of a core; load average: %s before, %s after\n", r.ClientCPUPercent, r.LoadBefore, r.LoadAfter)
	fmt.Fprintf(&b, "alive at end: %d; errors: %d\n", r.Alive, r.ErrorCount)
	for _, m := range []map[string]uint64{r.Connect.Errors, r.Errors} {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "  %8d  %s\n", m[k], k)
		}
	}
	return b.String()
}
