package main

import (
	"io"
	"log/slog"
	"runtime/debug"
	"testing"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// TestGCTuner: runtime.gc_percent sets the runtime's GC target at start and
// on reload, and 0 gives back the target the process started with.
func TestGCTuner(t *testing.T) {
	orig := debug.SetGCPercent(137) // the "GOGC" this process started with
	defer debug.SetGCPercent(orig)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	g := newGCTuner()
	if g.start != 137 {
		t.Fatalf("start = %d, want 137", g.start)
	}
	for _, tc := range []struct{ pct, want int }{
		{config.Default().Runtime.GCPercent, 50},
		{200, 200},
		{0, 137},
		{10, 10},
	} {
		g.apply(config.Runtime{GCPercent: tc.pct}, log)
		if got := debug.SetGCPercent(tc.want); got != tc.want {
			t.Fatalf("gc_percent %d: runtime target %d, want %d", tc.pct, got, tc.want)
		}
	}
}
