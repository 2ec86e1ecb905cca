package main

import (
	"log/slog"
	"runtime/debug"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// gcTuner applies runtime.gc_percent to the Go runtime, at start and on
// every reload (docs/deploy.md, "Go's garbage collector and idle memory").
// start is the target the process started with (GOGC, else 100), which a
// gc_percent of 0 restores.
type gcTuner struct {
	start int
}

// newGCTuner reads the runtime's own target (GOGC) before anything sets it.
func newGCTuner() *gcTuner {
	start := debug.SetGCPercent(100)
	debug.SetGCPercent(start)
	return &gcTuner{start: start}
}

// target returns the GC target rt asks for.
func (g *gcTuner) target(rt config.Runtime) int {
	if rt.GCPercent == 0 {
		return g.start
	}
	return rt.GCPercent
}

// apply sets the GC target rt asks for and logs a change.
func (g *gcTuner) apply(rt config.Runtime, log *slog.Logger) {
	want := g.target(rt)
	if prev := debug.SetGCPercent(want); prev != want {
		log.Info("gc target set", "gc_percent", want, "was", prev)
	}
}
