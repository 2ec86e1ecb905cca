package main

import (
	"os"
	"runtime"
	"strconv"
	"strings"
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

func heapAfterGC() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func watchMemory(t *testing.T) *memWatch {
	t.Helper()
	w := &memWatch{heapBefore: heapAfterGC(), rssBefore: rssKB(), stop: make(chan struct{})}
	w.peak.Store(w.rssBefore)
	go func() {
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tk.C:
				if r := rssKB(); r > w.peak.Load() {
					w.peak.Store(r)
				}
			}
		}
	}()
	return w
}

// report logs the figures (the test process: daemon and clients).
func (w *memWatch) report(t *testing.T) {
	close(w.stop)
	heap := heapAfterGC()
	t.Logf("memory (test process, daemon in it): heap after GC %.1f MiB before, %.1f MiB after; RSS %.1f MiB before, %.1f MiB peak, %.1f MiB after",
		float64(w.heapBefore)/(1<<20), float64(heap)/(1<<20),
		float64(w.rssBefore)/1024, float64(w.peak.Load())/1024, float64(rssKB())/1024)
}
