package netpoll

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// BenchmarkVectorPass times one short pass over a 1 KiB payload, as the
// frame reader makes one per message, right after a gap, to see whether a
// wide-vector (AVX2) routine pays a warm-up that a scalar one does not:
// gobwas/ws Cipher (AVX2 here) and bytes.IndexByte (AVX2 from 32 bytes)
// against xorKey (the same unmask in plain Go) and utf8.Valid (plain Go).
// Gaps: none (hot), scalar work only (spin: no 256-bit instruction runs, so
// the vector unit's upper lanes may power down), reading 8 MiB (the passes'
// code and globals leave the caches, the payload is read again) and a sleep
// (the CPU idles). Each pass is timed alone; ns/pass and p90-ns/pass are the
// median and 90th percentile with the clock reads' own cost taken away.
//
//	go test -run X -bench VectorPass -benchtime 2000x ./netpoll/
func BenchmarkVectorPass(b *testing.B) {
	p := bytes.Repeat([]byte("0123456789abcdef"), 64)
	key := [4]byte{1, 2, 3, 4}
	passes := []struct {
		name string
		f    func()
	}{
		{"cipher", func() { ws.Cipher(p, key, 0) }},
		{"xorkey", func() { xorKey(p, key, 0) }},
		{"utf8", func() { utf8.Valid(p) }},
		{"indexbyte", func() { bytes.IndexByte(p, '!') }},
	}
	var sink uint64
	big := make([]byte, 8<<20)
	gaps := []struct {
		name string
		f    func()
	}{
		{"hot", func() {}},
		{"spin2us", func() { sink += spin(2 * time.Microsecond) }},
		{"spin20us", func() { sink += spin(20 * time.Microsecond) }},
		{"spin100us", func() { sink += spin(100 * time.Microsecond) }},
		{"spin300us", func() { sink += spin(300 * time.Microsecond) }},
		{"spin1ms", func() { sink += spin(time.Millisecond) }},
		{"spin3ms", func() { sink += spin(3 * time.Millisecond) }},
		{"evict8M", func() { sink += evict(big, p) }},
		{"sleep1ms", func() { time.Sleep(time.Millisecond) }},
	}
	for _, g := range gaps {
		for _, ps := range passes {
			b.Run(fmt.Sprintf("%s/%s", g.name, ps.name), func(b *testing.B) {
				pass := make([]float64, b.N)
				clock := make([]float64, b.N)
				for i := range b.N {
					g.f()
					t0 := time.Now()
					ps.f()
					t1 := time.Now()
					t2 := time.Now()
					pass[i], clock[i] = float64(t1.Sub(t0)), float64(t2.Sub(t1))
				}
				c := median(clock)
				b.ReportMetric(median(pass)-c, "ns/pass")
				b.ReportMetric(quantile(pass, 0.9)-c, "p90-ns/pass")
			})
		}
	}
	if sink == 0 {
		b.Log(sink) // keeps the spin's work
	}
}

// median is the middle of xs (sorted in place).
func median(xs []float64) float64 { return quantile(xs, 0.5) }

// quantile is the q-quantile of xs (sorted in place).
func quantile(xs []float64, q float64) float64 {
	slices.Sort(xs)
	return xs[int(q*float64(len(xs)-1))]
}

// evict reads big a byte per cache line (scalar loads), which pushes the
// code and data of the passes out of the core's caches, then reads p again
// so that only the passes' own code and globals are cold.
func evict(big, p []byte) uint64 {
	var x uint64
	for i := 0; i < len(big); i += 64 {
		x += uint64(big[i])
	}
	for i := 0; i < len(p); i += 64 {
		x += uint64(p[i])
	}
	return x + 1
}

// spin does scalar work for about d.
func spin(d time.Duration) uint64 {
	end := time.Now().Add(d)
	x := uint64(1)
	for time.Now().Before(end) {
		for range 64 {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	return x
}
