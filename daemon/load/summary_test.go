package load

import (
	"strings"
	"testing"
)

// TestSummaryServerPerConn: a per-connection figure whose samples could not
// be read says n/a (not perConn's -1, which reads like a measurement), and
// an RSS that fell while connecting is reported as such, not as a cost.
func TestSummaryServerPerConn(t *testing.T) {
	s := &ServerReport{Conns: 200,
		Before:    Sample{RSSBytes: 16289792, FDs: 10, Goroutines: -1, HeapInuse: -1, StackInuse: -1, SlabBytes: 1000},
		Connected: Sample{RSSBytes: 15933440, FDs: 416, Goroutines: -1, HeapInuse: -1, StackInuse: -1, SlabBytes: 947200},
	}
	s.fill(0)
	got := (&Result{Server: s}).Summary()
	for _, want := range []string{
		"server per conn (200 conns): RSS -1782 B, Go heap n/a + stack n/a, slab 4731 B, fds 2.03, goroutines n/a\n",
		"server: RSS fell while connecting (16289792 -> 15933440 B)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary\n%s\nwant it to contain %q", got, want)
		}
	}
	s.Connected.RSSBytes = s.Before.RSSBytes + 200*4096
	s.fill(0)
	got = (&Result{Server: s}).Summary()
	if !strings.Contains(got, "RSS 4096 B,") || strings.Contains(got, "RSS fell") {
		t.Errorf("summary\n%s\nwant RSS 4096 B per conn and no note", got)
	}
}
