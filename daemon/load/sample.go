package load

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat; 100
// on every Linux architecture Go supports.
const clockTicks = 100

// Sample is the server's state at one moment. Fields that could not be read
// are -1.
type Sample struct {
	At         time.Time `json:"at"`
	RSSBytes   int64     `json:"rss_bytes"`
	FDs        int64     `json:"fds"`
	Threads    int64     `json:"threads"`
	CPUSeconds float64   `json:"cpu_seconds"`
	// CPUBeforeGC is CPUSeconds read before the sampler forced a GC: a
	// phase ends at this reading and starts at the next sample's
	// CPUSeconds, so the GCs the sampler asks for are billed to no phase.
	CPUBeforeGC  float64 `json:"cpu_before_gc_seconds"`
	SlabBytes    int64   `json:"slab_bytes"`
	SUnreclaim   int64   `json:"sunreclaim_bytes"`
	Goroutines   int64   `json:"goroutines"`
	HeapInuse    int64   `json:"heap_inuse_bytes"`
	StackInuse   int64   `json:"stack_inuse_bytes"`
	MetricsError string  `json:"metrics_error,omitempty"`
}

// Sampler reads server processes' figures from /proc and, for each of
// MetricsURLs, the Go runtime gauges from a Prometheus text endpoint. With
// several processes (daemons sharing a port with SO_REUSEPORT) the figures
// are sums.
type Sampler struct {
	PIDs        []int
	MetricsURLs []string
	GCURLs      []string // fetched before each sample to force a GC (/debug/pprof/heap?gc=1)
	Client      *http.Client
}

// Take reads one sample.
func (s *Sampler) Take(ctx context.Context) Sample {
	pre := s.cpu()
	var gcErr error
	for _, u := range s.GCURLs {
		if err := s.get(ctx, u, io.Discard); err != nil {
			gcErr = err
		}
	}
	sm := Sample{At: time.Now(), RSSBytes: -1, FDs: -1, Threads: -1, CPUSeconds: -1,
		SlabBytes: -1, SUnreclaim: -1, Goroutines: -1, HeapInuse: -1, StackInuse: -1}
	for i, pid := range s.PIDs {
		one := procSample(pid)
		if i == 0 {
			sm.RSSBytes, sm.FDs, sm.Threads = one.RSSBytes, one.FDs, one.Threads
			continue
		}
		sm.RSSBytes = addKnown(sm.RSSBytes, one.RSSBytes)
		sm.FDs = addKnown(sm.FDs, one.FDs)
		sm.Threads = addKnown(sm.Threads, one.Threads)
	}
	sm.CPUBeforeGC, sm.CPUSeconds = pre, pre
	if len(s.GCURLs) > 0 {
		sm.CPUSeconds = s.cpu()
	}
	if mi, err := os.ReadFile("/proc/meminfo"); err == nil {
		sm.SlabBytes = kbField(mi, "Slab:")
		sm.SUnreclaim = kbField(mi, "SUnreclaim:")
	}
	for i, u := range s.MetricsURLs {
		var one Sample
		one.Goroutines, one.HeapInuse, one.StackInuse = -1, -1, -1
		if err := s.metrics(ctx, u, &one); err != nil {
			sm.MetricsError = err.Error()
		}
		if i == 0 {
			sm.Goroutines, sm.HeapInuse, sm.StackInuse = one.Goroutines, one.HeapInuse, one.StackInuse
			continue
		}
		sm.Goroutines = addKnown(sm.Goroutines, one.Goroutines)
		sm.HeapInuse = addKnown(sm.HeapInuse, one.HeapInuse)
		sm.StackInuse = addKnown(sm.StackInuse, one.StackInuse)
	}
	if gcErr != nil {
		sm.MetricsError = "forced GC: " + gcErr.Error()
	}
	return sm
}

// cpu returns the summed CPU seconds of the PIDs, -1 when unknown.
func (s *Sampler) cpu() float64 {
	cpu := float64(-1)
	for i, pid := range s.PIDs {
		c := procSample(pid).CPUSeconds
		switch {
		case i == 0:
			cpu = c
		case cpu >= 0 && c >= 0:
			cpu += c
		default:
			cpu = -1
		}
	}
	return cpu
}

// addKnown adds two figures, -1 (unknown) when either is.
func addKnown(a, b int64) int64 {
	if a < 0 || b < 0 {
		return -1
	}
	return a + b
}

// procSample reads RSS, fds, threads and CPU time of one process.
func procSample(pid int) Sample {
	sm := Sample{RSSBytes: -1, FDs: -1, Threads: -1, CPUSeconds: -1}
	dir := "/proc/" + strconv.Itoa(pid)
	if st, err := os.ReadFile(dir + "/status"); err == nil {
		sm.RSSBytes = kbField(st, "VmRSS:")
		if v := kbField(st, "Threads:"); v >= 0 {
			sm.Threads = v / 1024
		}
	}
	if ents, err := os.ReadDir(dir + "/fd"); err == nil {
		sm.FDs = int64(len(ents))
	}
	if st, err := os.ReadFile(dir + "/stat"); err == nil {
		sm.CPUSeconds = statCPU(st)
	}
	return sm
}

// kbField returns the value of "Name:   123 kB" in bytes (a bare number is
// multiplied by 1024 too; callers divide back).
func kbField(b []byte, name string) int64 {
	i := bytes.Index(b, []byte("\n"+name))
	if i < 0 {
		if !bytes.HasPrefix(b, []byte(name)) {
			return -1
		}
	} else {
		b = b[i+1:]
	}
	line, _, _ := bytes.Cut(b[len(name):], []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) == 0 {
		return -1
	}
	v, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil {
		return -1
	}
	return v * 1024
}

// statCPU returns utime+stime in seconds from /proc/PID/stat.
func statCPU(b []byte) float64 {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	// After the comm field: state is f[0]; utime and stime are fields 14 and
	// 15 of the line, f[11] and f[12] here.
	if len(f) < 13 {
		return -1
	}
	u, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return (u + st) / clockTicks
}

func (s *Sampler) metrics(ctx context.Context, url string, sm *Sample) error {
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() { errc <- parseMetrics(pr, sm); _ = pr.Close() }()
	err := s.get(ctx, url, pw)
	_ = pw.CloseWithError(err)
	return errors.Join(err, <-errc)
}

// get fetches url into w.
func (s *Sampler) get(ctx context.Context, url string, w io.Writer) error {
	c := s.Client
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("request %s: %w", url, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: status %d", url, resp.StatusCode)
	}
	if _, err := io.Copy(w, io.LimitReader(resp.Body, 64<<20)); err != nil {
		return fmt.Errorf("read %s: %w", url, err)
	}
	return nil
}

// parseMetrics picks the Go runtime gauges out of Prometheus text.
func parseMetrics(r io.Reader, sm *Sample) error {
	want := map[string]*int64{
		"go_goroutines":                 &sm.Goroutines,
		"go_memstats_heap_inuse_bytes":  &sm.HeapInuse,
		"go_memstats_stack_inuse_bytes": &sm.StackInuse,
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if p, ok := want[name]; ok {
			v, err := strconv.ParseFloat(strings.Fields(val)[0], 64)
			if err == nil {
				*p = int64(v)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read metrics: %w", err)
	}
	return nil
}

// ServerReport is the server's cost over a run.
type ServerReport struct {
	Before    Sample `json:"before"`    // before any connection
	Connected Sample `json:"connected"` // every connection up, before the measured phase
	After     Sample `json:"after"`     // after the measured phase
	Conns     int    `json:"conns"`     // connections the deltas are divided by

	RSSPerConn        float64 `json:"rss_per_conn_bytes"`
	HeapPerConn       float64 `json:"heap_per_conn_bytes"`
	StackPerConn      float64 `json:"stack_per_conn_bytes"`
	GoPerConn         float64 `json:"go_per_conn_bytes"` // heap + stack in use
	SlabPerConn       float64 `json:"slab_per_conn_bytes"`
	FDsPerConn        float64 `json:"fds_per_conn"`
	GoroutinesPerConn float64 `json:"goroutines_per_conn"`
	CPUSeconds        float64 `json:"cpu_seconds"`    // during the measured phase
	CPUPercent        float64 `json:"cpu_percent"`    // of one core during the phase
	MsgsPerCPUSecond  float64 `json:"msgs_per_cpu_s"` // echoes answered per server CPU-second
	// CPUPer100k is server CPU-seconds per 100,000 answered messages: at a
	// fixed offered rate (open loop) it is the cost a saturated client
	// cannot hide.
	CPUPer100k        float64 `json:"cpu_s_per_100k_msgs"`
	PhaseSeconds      float64 `json:"phase_seconds"` // wall time of the measured phase
	ConnectCPUSeconds float64 `json:"connect_cpu_s"` // server CPU spent accepting the connections
}

func perConn(a, b int64, n int) float64 {
	if a < 0 || b < 0 || n <= 0 {
		return -1
	}
	return float64(b-a) / float64(n)
}

// fill computes the per-connection deltas.
func (r *ServerReport) fill(msgs uint64) {
	n := r.Conns
	b, c, a := r.Before, r.Connected, r.After
	r.RSSPerConn = perConn(b.RSSBytes, c.RSSBytes, n)
	r.HeapPerConn = perConn(b.HeapInuse, c.HeapInuse, n)
	r.StackPerConn = perConn(b.StackInuse, c.StackInuse, n)
	if r.HeapPerConn >= 0 && r.StackPerConn >= 0 {
		r.GoPerConn = r.HeapPerConn + r.StackPerConn
	} else {
		r.GoPerConn = -1
	}
	r.SlabPerConn = perConn(b.SlabBytes, c.SlabBytes, n)
	r.FDsPerConn = perConn(b.FDs, c.FDs, n)
	r.GoroutinesPerConn = perConn(b.Goroutines, c.Goroutines, n)
	r.PhaseSeconds = a.At.Sub(c.At).Seconds()
	if a.CPUBeforeGC >= 0 && c.CPUSeconds >= 0 {
		r.CPUSeconds = a.CPUBeforeGC - c.CPUSeconds
		r.ConnectCPUSeconds = c.CPUBeforeGC - b.CPUSeconds
		if r.PhaseSeconds > 0 {
			r.CPUPercent = 100 * r.CPUSeconds / r.PhaseSeconds
		}
		if r.CPUSeconds > 0 {
			r.MsgsPerCPUSecond = float64(msgs) / r.CPUSeconds
		}
		if msgs > 0 {
			r.CPUPer100k = r.CPUSeconds * 1e5 / float64(msgs)
		}
	}
}
