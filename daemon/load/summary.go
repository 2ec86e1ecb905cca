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
		bf, c := s.Before, s.Connected
		fmt.Fprintf(&b, "server per conn (%d conns): RSS %s, Go heap %s + stack %s, slab %s, fds %s, goroutines %s\n",
			s.Conns, perConnText(s.RSSPerConn, bf.RSSBytes, c.RSSBytes, "%.0f B"),
			perConnText(s.HeapPerConn, bf.HeapInuse, c.HeapInuse, "%.0f B"),
			perConnText(s.StackPerConn, bf.StackInuse, c.StackInuse, "%.0f B"),
			perConnText(s.SlabPerConn, bf.SlabBytes, c.SlabBytes, "%.0f B"),
			perConnText(s.FDsPerConn, bf.FDs, c.FDs, "%.2f"),
			perConnText(s.GoroutinesPerConn, bf.Goroutines, c.Goroutines, "%.3f"))
		if s.RSSPerConn < 0 && bf.RSSBytes >= 0 && c.RSSBytes >= 0 {
			// RSS is the whole process's: the Go runtime returning freed
			// pages to the OS between the two samples (the scavenger, or
			// a GC of what came before) can outweigh what the
			// connections took. The heap and stack figures say more.
			fmt.Fprintf(&b, "server: RSS fell while connecting (%d -> %d B): memory returned to the OS outweighed the connections' cost; RSS per conn is not a cost here\n",
				bf.RSSBytes, c.RSSBytes)
		}
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

// perConnText formats a per-connection delta, or "n/a" when either sample
// could not be read (perConn's -1, which a measured delta can also be).
func perConnText(v float64, before, after int64, format string) string {
	if before < 0 || after < 0 {
		return "n/a"
	}
	return fmt.Sprintf(format, v)
}
