package main

import (
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memWatch samples the process's RSS (the daemon runs in the test
// process) from its start to report: heap after GC and RSS before, at the
// peak and after.
type memWatch struct {
	heapBefore, rssBefore uint64
	peak                  atomic.Uint64
	stop                  chan struct{}
	halt                  sync.Once
}

func rssKB() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.ParseUint(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// goHeldKB is what the Go runtime holds from the OS and has not given
// back: all its memory classes less the released heap. Under -race, RSS
// also counts the race detector's shadow memory, which the runtime does
// not give back; rssBack then checks this instead.
func goHeldKB() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return (s[0].Value.Uint64() - s[1].Value.Uint64()) >> 10
}

// residentKB is RSS, or goHeldKB under -race.
func residentKB() uint64 {
	if raceBuild {
		return goHeldKB()
	}
	return rssKB()
}

func heapAfterGC() uint64 {
	runtime.GC() // twice: sync.Pool's victims survive one
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func watchMemory(t *testing.T) *memWatch {
	t.Helper()
	w := &memWatch{heapBefore: heapAfterGC(), rssBefore: residentKB(), stop: make(chan struct{})}
	w.peak.Store(w.rssBefore)
	t.Cleanup(func() { w.halt.Do(func() { close(w.stop) }) })
	go func() {
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tk.C:
				if r := residentKB(); r > w.peak.Load() {
					w.peak.Store(r)
				}
			}
		}
	}()
	return w
}

// report logs the figures (the test process: daemon and clients).
func (w *memWatch) report(t *testing.T) {
	w.halt.Do(func() { close(w.stop) })
	heap := heapAfterGC()
	t.Logf("memory (test process, daemon in it): heap after GC %.1f MiB before, %.1f MiB after; %s %.1f MiB before, %.1f MiB peak, %.1f MiB after",
		float64(w.heapBefore)/(1<<20), float64(heap)/(1<<20), residentName(),
		float64(w.rssBefore)/1024, float64(w.peak.Load())/1024, float64(residentKB())/1024)
}

func residentName() string {
	if raceBuild {
		return "Go memory not released (-race: RSS has the race detector's shadow)"
	}
	return "RSS"
}

// rssBack waits until RSS (see residentKB) is back near its start: within 10 % of the rise
// to the peak, and at least 16 MiB, above it. It fails with the figures if
// that does not happen within the time given, and reports them either way.
func (w *memWatch) rssBack(t *testing.T, within time.Duration) {
	t.Helper()
	defer w.report(t)
	peak := w.peak.Load()
	near := w.rssBefore + max(16<<10, (peak-min(peak, w.rssBefore))/10)
	deadline := time.Now().Add(within)
	for residentKB() > near {
		if time.Now().After(deadline) {
			t.Errorf("%s %.1f MiB %v after the sessions expired; started at %.1f MiB, peaked at %.1f MiB, want at most %.1f MiB",
				residentName(), float64(residentKB())/1024, within, float64(w.rssBefore)/1024, float64(peak)/1024, float64(near)/1024)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
