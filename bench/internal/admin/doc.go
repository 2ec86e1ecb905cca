// Package admin serves what the load tool samples from a baseline echo
// server: /metrics (the go_goroutines and go_memstats_* gauges the daemon's
// Prometheus Go collector also exports) and /debug/pprof/ (whose
// /debug/pprof/heap?gc=1 forces a GC before a sample).
package admin
