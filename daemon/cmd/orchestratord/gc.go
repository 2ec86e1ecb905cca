package main

import (
	"log/slog"
	"os"
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

// warnEnv logs, at start, that runtime.gc_percent overrides a GOGC set in
// the environment.
func (g *gcTuner) warnEnv(rt config.Runtime, log *slog.Logger) {
	if v, ok := os.LookupEnv("GOGC"); ok && rt.GCPercent != 0 {
		log.Warn("GOGC ignored: runtime.gc_percent sets the GC target (0 keeps GOGC)", "GOGC", v, "gc_percent", rt.GCPercent)
	}
}

// apply sets the GC target rt asks for and logs a change.
func (g *gcTuner) apply(rt config.Runtime, log *slog.Logger) {
	want := g.target(rt)
	if prev := debug.SetGCPercent(want); prev != want {
		log.Info("gc target set", "gc_percent", want, "was", prev)
	}
}
