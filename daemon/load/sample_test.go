package load

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
)

func TestProcParsers(t *testing.T) {
	status := []byte("Name:\tx\nVmRSS:\t  12345 kB\nThreads:\t7\n")
	if got := kbField(status, "VmRSS:"); got != 12345*1024 {
		t.Errorf("VmRSS = %d, want %d", got, 12345*1024)
	}
	if got := kbField(status, "Threads:") / 1024; got != 7 {
		t.Errorf("Threads = %d, want 7", got)
	}
	if got := kbField(status, "Missing:"); got != -1 {
		t.Errorf("missing field = %d, want -1", got)
	}
	stat := []byte("123 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20")
	if got := statCPU(stat); got != 4 {
		t.Errorf("cpu = %v s, want 4", got)
	}
	var sm Sample
	err := parseMetrics(strings.NewReader("# HELP x\ngo_goroutines 12\ngo_memstats_heap_inuse_bytes 2.58048e+06\ngo_memstats_stack_inuse_bytes 655360\nother 1\n"), &sm)
	if err != nil || sm.Goroutines != 12 || sm.HeapInuse != 2580480 || sm.StackInuse != 655360 {
		t.Errorf("metrics = %+v, %v", sm, err)
	}
}

func TestSamplerSelf(t *testing.T) {
	s := Sampler{PIDs: []int{os.Getpid(), os.Getpid()}}
	sm := s.Take(context.Background())
	if sm.RSSBytes <= 0 || sm.FDs <= 0 || sm.Threads <= 0 || sm.CPUSeconds < 0 || sm.SlabBytes <= 0 {
		t.Fatalf("sample of self = %+v, want every /proc field read", sm)
	}
	if one := procSample(os.Getpid()); sm.Threads < 2*one.Threads-2 {
		t.Fatalf("two PIDs: threads %d, want about twice %d", sm.Threads, one.Threads)
	}
	r := ServerReport{Conns: 10,
		Before:    Sample{RSSBytes: 1000, FDs: 5, HeapInuse: 100, StackInuse: 10, Goroutines: 3, SlabBytes: 0, CPUSeconds: 1},
		Connected: Sample{RSSBytes: 11000, FDs: 15, HeapInuse: 1100, StackInuse: 10, Goroutines: 3, SlabBytes: 500, CPUSeconds: 2, CPUBeforeGC: 1.5},
		After:     Sample{CPUSeconds: 4.5, CPUBeforeGC: 4},
	}
	r.fill(1000)
	if r.RSSPerConn != 1000 || r.FDsPerConn != 1 || r.GoPerConn != 100 || r.GoroutinesPerConn != 0 || r.SlabPerConn != 50 || r.MsgsPerCPUSecond != 500 || r.CPUPer100k != 200 || r.ConnectCPUSeconds != 0.5 {
		t.Fatalf("report = %+v", r)
	}
}

func TestOptions(t *testing.T) {
	o, err := Options{Mode: ModeEcho, URL: "ws://127.0.0.1:1/ws", Conns: 10, Procs: 3, Workers: 200, Rate: 300, ConnectRate: 600}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for i := range 3 {
		s := o.forShard(i)
		total += s.Conns
		if s.Rate != 100 {
			t.Errorf("shard %d rate = %v, want 100", i, s.Rate)
		}
		if s.ConnectRate != 200 {
			t.Errorf("shard %d connect rate = %v, want 200", i, s.ConnectRate)
		}
	}
	if total != 10 {
		t.Errorf("conns over shards = %d, want 10", total)
	}
	bad := []Options{
		{Mode: "nope", URL: "ws://x/ws", Conns: 1},
		{Mode: ModeEcho, URL: "http://x", Conns: 1},
		{Mode: ModeRate, URL: "ws://x/ws", Conns: 1},
		{Mode: ModeEcho, URL: "ws://x/ws", Conns: 1, Raw: true, Payload: 10},
		{Mode: ModeHold, URL: "ws://x/ws"},
		{Mode: ModeHold, URL: "ws://x/ws", Conns: 1, ConnectRate: -1},
		{Mode: ModeChurn, URL: "ws://x/ws", ConnectRate: 10},
	}
	for _, b := range bad {
		if _, err := b.WithDefaults(); err == nil {
			t.Errorf("%+v: accepted, want an error", b)
		}
	}
	src, err := ParseSources("127.0.0.2-127.0.0.4,127.0.0.9")
	if err != nil || len(src) != 4 || src[3].String() != "127.0.0.9" {
		t.Errorf("sources = %v, %v", src, err)
	}
}

func TestSamplerMetricsAndGC(t *testing.T) {
	var mu sync.Mutex
	var order []string
	mux := http.NewServeMux()
	mux.HandleFunc("/gc", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		order = append(order, "gc")
		mu.Unlock()
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		order = append(order, "metrics")
		mu.Unlock()
		fmt.Fprint(w, "go_goroutines 5\ngo_memstats_heap_inuse_bytes 1000\ngo_memstats_stack_inuse_bytes 100\n")
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	s := Sampler{MetricsURLs: []string{srv.URL + "/metrics", srv.URL + "/metrics"}, GCURLs: []string{srv.URL + "/gc"}}
	sm := s.Take(context.Background())
	if sm.Goroutines != 10 || sm.HeapInuse != 2000 || sm.StackInuse != 200 || sm.MetricsError != "" {
		t.Fatalf("sample = %+v, want sums over both endpoints", sm)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(order, ",") != "gc,metrics,metrics" {
		t.Fatalf("requests %v, want the GC first", order)
	}
	bad := Sampler{MetricsURLs: []string{srv.URL + "/missing"}}
	if sm := bad.Take(context.Background()); sm.MetricsError == "" || sm.Goroutines != -1 {
		t.Fatalf("sample from a 404 = %+v, want an error and unknown gauges", sm)
	}
}
