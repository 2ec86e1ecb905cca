package load

import (
	"encoding/json"
	"math"
	"testing"
	"time"
)

func TestHistSummary(t *testing.T) {
	h := NewHist()
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	s := h.Summary()
	tests := []struct {
		name      string
		got, want float64
	}{
		{"p50", s.P50, 500},
		{"p90", s.P90, 900},
		{"p99", s.P99, 990},
		{"max", s.Max, 1000},
		{"mean", s.Mean, 500.5},
	}
	for _, tc := range tests {
		if math.Abs(tc.got-tc.want) > tc.want*0.002 {
			t.Errorf("%s = %v ms, want %v ms (within 0.2%%)", tc.name, tc.got, tc.want)
		}
	}
	if s.Count != 1000 {
		t.Errorf("count = %d, want 1000", s.Count)
	}
}

func TestHistCorrected(t *testing.T) {
	// One 100 ms stall in a loop meant to send every 10 ms hides 9 sends
	// that would have waited 90, 80, ... 10 ms: correction adds them back.
	plain, corrected := NewHist(), NewHist()
	for range 100 {
		plain.Record(time.Millisecond)
		corrected.RecordCorrected(time.Millisecond, 10*time.Millisecond)
	}
	plain.Record(100 * time.Millisecond)
	corrected.RecordCorrected(100*time.Millisecond, 10*time.Millisecond)
	if got := plain.Count(); got != 101 {
		t.Fatalf("plain count = %d, want 101", got)
	}
	if got := corrected.Count(); got != 110 {
		t.Fatalf("corrected count = %d, want 110", got)
	}
	if p, c := plain.Summary().P99, corrected.Summary().P99; c <= p {
		t.Fatalf("corrected p99 %v ms should exceed plain p99 %v ms", c, p)
	}
}

func TestHistClampAndMerge(t *testing.T) {
	a, b := NewHist(), NewHist()
	a.Record(0)                // below 1 µs: clamped up
	a.Record(10 * time.Minute) // above 60 s: clamped down
	b.Record(2 * time.Millisecond)
	js, err := json.Marshal(b.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	var snap = b.Snapshot()
	if err := json.Unmarshal(js, snap); err != nil {
		t.Fatal(err)
	}
	a.Merge(HistFromSnapshot(snap))
	s := a.Summary()
	if s.Count != 3 {
		t.Fatalf("merged count = %d, want 3", s.Count)
	}
	if s.Max < 59_000 || s.Max > 61_000 {
		t.Fatalf("max = %v ms, want about 60000", s.Max)
	}
	if got := NewHist().Summary(); got != (Latency{}) {
		t.Fatalf("empty summary = %+v, want zero", got)
	}
}
