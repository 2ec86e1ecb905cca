package load

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1 µs to 60 s, 3 significant
// figures.
const (
	histMin = 1
	histMax = 60_000_000
	histSig = 3
)

// Hist is a latency histogram in microseconds.
type Hist struct {
	h *hdrhistogram.Histogram
}

// NewHist returns an empty histogram.
func NewHist() *Hist { return &Hist{h: hdrhistogram.New(histMin, histMax, histSig)} }

func clampUS(d time.Duration) int64 {
	us := d.Microseconds()
	return min(max(us, histMin), histMax)
}

// Record adds one latency.
func (h *Hist) Record(d time.Duration) { _ = h.h.RecordValue(clampUS(d)) }

// RecordCorrected adds one latency measured in a loop that meant to send
// every interval, back-filling the samples a stalled sender never took
// (coordinated omission). Open-loop callers that measure from the intended
// send time are already corrected and use Record.
func (h *Hist) RecordCorrected(d, interval time.Duration) {
	_ = h.h.RecordCorrectedValue(clampUS(d), max(interval.Microseconds(), 1))
}

// Merge adds every sample of o.
func (h *Hist) Merge(o *Hist) {
	if o != nil {
		h.h.Merge(o.h)
	}
}

// Count returns the number of samples.
func (h *Hist) Count() int64 { return h.h.TotalCount() }

// Snapshot exports the histogram for another process to merge.
func (h *Hist) Snapshot() *hdrhistogram.Snapshot { return h.h.Export() }

// HistFromSnapshot rebuilds a histogram exported by Snapshot.
func HistFromSnapshot(s *hdrhistogram.Snapshot) *Hist {
	if s == nil {
		return NewHist()
	}
	return &Hist{h: hdrhistogram.Import(s)}
}

// Latency is a histogram's summary in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

// Summary returns the percentiles.
func (h *Hist) Summary() Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	if h.h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		Count: h.h.TotalCount(),
		Mean:  h.h.Mean() / 1000,
		P50:   ms(h.h.ValueAtQuantile(50)),
		P90:   ms(h.h.ValueAtQuantile(90)),
		P99:   ms(h.h.ValueAtQuantile(99)),
		P999:  ms(h.h.ValueAtQuantile(99.9)),
		Max:   ms(h.h.Max()),
	}
}
