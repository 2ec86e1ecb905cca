// Command abba is an independent check of the side-by-side benchmark: a
// client that shares no code with the project's load tool
// (daemon/load, orchestratord-load), written on gorilla/websocket's client,
// that runs A-B-B-A ordered pairs of two servers (by default the project's
// engine, netpoll-echo, against gws-echo, and the full daemon against
// gws-echo) and gives per pair the ratio of each figure, then the median
// and range of those ratios.
//
// Each run starts the server fresh on CPU 0 (taskset), opens -conns
// connections from this process (run it on CPU 1: bench/abba.sh does), and
// measures two phases on the same connections:
//
//   - closed loop: request (1 KiB text frame), answer, next request, with
//     -inflight requests in flight over all connections; messages per
//     server CPU-second (utime+stime of the server from /proc/PID/stat over
//     the measured window), p50/p99 latency, the server's busy share and
//     the client's own CPU, so that a saturated client shows;
//   - open loop: -rate requests per second in total, sent on schedule
//     whatever the answers do, latency from the intended send time; server
//     CPU-seconds per 100k messages and p50/p99/p99.9.
//
// It prints markdown tables ready to paste into docs/benchmarks.md and
// writes the raw results as JSON.
package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

type options struct {
	bin, daemonConfig, secret string
	comparisons               [][2]string
	blocks                    int
	conns, inflight, payload  int
	dur, warm                 time.Duration
	rate                      int
	rateDur, rateWarm         time.Duration
	sources                   []net.IP
	portBase                  int
	serverCPU                 string
	dialers                   int
	jsonOut, from             string
	behindMs                  float64
	cmdline                   string
	current                   atomic.Pointer[proc] // the running server, stopped on SIGINT/SIGTERM
}

func main() {
	var c options
	var compare, sources string
	flag.StringVar(&c.bin, "bin", "/tmp/orchestratord-bench", "directory with the built servers (orchestratord, netpoll-echo, gws-echo, …)")
	flag.StringVar(&c.daemonConfig, "daemon-config", "bench/config/daemon.yaml", "orchestratord config (its 127.0.0.1:28080/28090 are moved to the run's ports)")
	flag.StringVar(&c.secret, "jwt-secret", "bench-secret-0123456789abcdef-0123456789", "HS256 key given to the daemon; this tool signs its own JWT with it")
	flag.StringVar(&compare, "compare", "netpoll-echo:gws,orchestratord:gws", "comparisons A:B, each run as ABBA blocks (servers: orchestratord, netpoll-echo, gws, gorilla, nbio)")
	flag.IntVar(&c.blocks, "blocks", 2, "ABBA blocks per comparison (each gives two pairs)")
	flag.IntVar(&c.conns, "conns", 1000, "connections")
	flag.IntVar(&c.inflight, "inflight", 200, "closed loop: requests in flight over all connections (0: one per connection)")
	flag.IntVar(&c.payload, "payload", 1024, "bytes per request frame (the daemon's whole JSON envelope)")
	flag.DurationVar(&c.dur, "duration", 10*time.Second, "closed loop: measured window")
	flag.DurationVar(&c.warm, "warmup", 2*time.Second, "closed loop: time before the window")
	flag.IntVar(&c.rate, "rate", 10000, "open loop: requests per second over all connections (0: no open loop)")
	flag.DurationVar(&c.rateDur, "rate-duration", 10*time.Second, "open loop: measured window")
	flag.DurationVar(&c.rateWarm, "rate-warmup", time.Second, "open loop: time before the window")
	flag.StringVar(&sources, "sources", "127.0.0.2-127.0.0.9", "source addresses to dial from (\"\": the kernel's choice)")
	flag.IntVar(&c.portBase, "port-base", 29000, "servers listen on port-base+1..+4 and +80 (daemon admin +90); below the ephemeral range (32768-60999), where a client's own source port can take it")
	flag.StringVar(&c.serverCPU, "server-cpu", "0", "taskset CPU list for the server (run this tool on another one)")
	flag.IntVar(&c.dialers, "dialers", 16, "goroutines opening connections")
	flag.StringVar(&c.jsonOut, "json", "bench/results/abba.json", "raw results (\"\": none)")
	flag.Float64Var(&c.behindMs, "fell-behind", 10, "open loop: a run whose p50 exceeds this many ms fell behind the rate; its pair's open-loop ratios are left out (0: keep all)")
	flag.StringVar(&c.from, "from", "", "only print the tables of a saved -json result (with this run's -fell-behind)")
	flag.Parse()
	var err error
	if c.sources, err = parseSources(sources); err != nil {
		log.Fatal(err)
	}
	for pair := range strings.SplitSeq(compare, ",") {
		a, b, ok := strings.Cut(strings.TrimSpace(pair), ":")
		if !ok {
			log.Fatalf("-compare %q: want A:B", pair)
		}
		c.comparisons = append(c.comparisons, [2]string{a, b})
	}
	c.cmdline = strings.Join(os.Args, " ")
	if c.from != "" {
		b, err := os.ReadFile(c.from)
		if err != nil {
			log.Fatal(err)
		}
		var rep report
		if err := json.Unmarshal(b, &rep); err != nil {
			log.Fatalf("%s: %v", c.from, err)
		}
		rep.BehindMs = c.behindMs
		fmt.Print(markdown(&rep))
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		if p := c.current.Load(); p != nil {
			p.stop()
		}
		log.Fatalf("stopped by %v", s)
	}()
	if err := c.main(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// server is one system under test. argv gives its command line for a
// client port (the daemon's admin listener takes port+10).
type server struct {
	name   string
	off    int // first port: port-base+off
	env    []string
	daemon bool
	argv   func(port int) ([]string, error)
}

func (c *options) servers(tmp string) (map[string]server, error) {
	tmpl, err := os.ReadFile(c.daemonConfig)
	if err != nil {
		return nil, err
	}
	bin := func(n string) string { return filepath.Join(c.bin, n) }
	echo := func(name, binName string, off int) server {
		return server{name: name, off: off, argv: func(port int) ([]string, error) {
			return []string{bin(binName), "-addr", fmt.Sprintf("127.0.0.1:%d", port)}, nil
		}}
	}
	return map[string]server{
		"orchestratord": {name: "orchestratord", off: 80, daemon: true, env: []string{"ORCH_JWT_SECRET=" + c.secret},
			argv: func(port int) ([]string, error) {
				cfg := strings.ReplaceAll(string(tmpl), "127.0.0.1:28080", fmt.Sprintf("127.0.0.1:%d", port))
				cfg = strings.ReplaceAll(cfg, "127.0.0.1:28090", fmt.Sprintf("127.0.0.1:%d", port+10))
				path := filepath.Join(tmp, "daemon.yaml")
				if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
					return nil, err
				}
				return []string{bin("orchestratord"), "serve", "--config", path}, nil
			}},
		"netpoll-echo": echo("netpoll-echo", "netpoll-echo", 4),
		"gorilla":      echo("gorilla", "gorilla-echo", 1),
		"gws":          echo("gws", "gws-echo", 2),
		"nbio":         echo("nbio", "nbio-echo", 3),
	}, nil
}

// report is everything one invocation measured.
type report struct {
	Started     time.Time     `json:"started"`
	Cmdline     string        `json:"cmdline"`
	Conns       int           `json:"conns"`
	Inflight    int           `json:"inflight"`
	Payload     int           `json:"payload"`
	Duration    time.Duration `json:"duration"`
	Rate        int           `json:"rate"`
	RateDur     time.Duration `json:"rate_duration"`
	BehindMs    float64       `json:"fell_behind_p50_ms"`
	Comparisons []*comparison `json:"comparisons"`
}

type comparison struct {
	A     string  `json:"a"`
	B     string  `json:"b"`
	Pairs []*pair `json:"pairs"`
}

// pair is one A run and one B run next to each other; Order says which ran
// first ("AB" or "BA").
type pair struct {
	Order string     `json:"order"`
	A     *runResult `json:"a"`
	B     *runResult `json:"b"`
}

type runResult struct {
	Server     string `json:"server"`
	LoadBefore string `json:"loadavg_before"`
	LoadAfter  string `json:"loadavg_after"`
	Closed     *phase `json:"closed"`
	Open       *phase `json:"open,omitempty"`
}

type phase struct {
	Msgs          int64            `json:"msgs"`
	Seconds       float64          `json:"seconds"`
	MsgsPerSec    float64          `json:"msgs_per_sec"`
	ServerCPU     float64          `json:"server_cpu_seconds"`
	ServerBusy    float64          `json:"server_busy_percent"`
	PerServerCPUs float64          `json:"msgs_per_server_cpu_second"`
	CPUPer100k    float64          `json:"server_cpu_seconds_per_100k_msgs"`
	ClientCPU     float64          `json:"client_cpu_percent"`
	CSPerMsg      float64          `json:"server_ctx_switches_per_msg"`
	VolCSPerMsg   float64          `json:"server_voluntary_ctx_switches_per_msg"`
	Threads       int              `json:"server_threads"`
	Lat           latency          `json:"latency_ms"`
	Errors        map[string]int64 `json:"errors,omitempty"`
}

func (c *options) main(ctx context.Context) error {
	tmp, err := os.MkdirTemp("", "orchestratord-abba-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	srv, err := c.servers(tmp)
	if err != nil {
		return err
	}
	for _, cmp := range c.comparisons {
		for _, n := range cmp {
			if _, ok := srv[n]; !ok {
				return fmt.Errorf("unknown server %q", n)
			}
		}
	}
	rep := &report{Started: time.Now().UTC(), Cmdline: c.cmdline, Conns: c.conns, Inflight: c.inflight,
		Payload: c.payload, Duration: c.dur, Rate: c.rate, RateDur: c.rateDur, BehindMs: c.behindMs}
	var failed []error
	for _, cmp := range c.comparisons {
		cr := &comparison{A: cmp[0], B: cmp[1]}
		rep.Comparisons = append(rep.Comparisons, cr)
		for blk := range c.blocks {
			// A B B A: the first pair runs A first, the second B first, so
			// that a drift of the machine during the block (a neighbour's
			// job starting or ending) favours neither.
			var runs [4]*runResult
			for i, n := range []string{cmp[0], cmp[1], cmp[1], cmp[0]} {
				log.Printf("%s vs %s, block %d/%d: run %d/4: %s", cmp[0], cmp[1], blk+1, c.blocks, i+1, n)
				r, err := c.run(ctx, srv[n])
				if err != nil {
					log.Printf("%s: %v", n, err)
					failed = append(failed, fmt.Errorf("%s (%s vs %s, block %d): %w", n, cmp[0], cmp[1], blk+1, err))
				}
				runs[i] = r
			}
			cr.Pairs = append(cr.Pairs, &pair{Order: "AB", A: runs[0], B: runs[1]}, &pair{Order: "BA", A: runs[3], B: runs[2]})
		}
	}
	if c.jsonOut != "" {
		js, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(c.jsonOut), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(c.jsonOut, js, 0o644); err != nil {
			return err
		}
	}
	fmt.Print(markdown(rep))
	return errors.Join(failed...)
}

// run starts s, measures both phases and stops it.
func (c *options) run(ctx context.Context, s server) (*runResult, error) {
	res := &runResult{Server: s.name, LoadBefore: loadavg()}
	defer func() { res.LoadAfter = loadavg() }()
	logf, err := os.CreateTemp("", "abba-"+s.name+"-*.log")
	if err != nil {
		return res, err
	}
	defer func() { _ = logf.Close(); _ = os.Remove(logf.Name()) }()
	sp, err := c.start(s, logf)
	if err != nil {
		return res, err
	}
	c.current.Store(sp)
	defer func() { c.current.Store(nil); sp.stop() }()
	pid := sp.cmd.Process.Pid // taskset execs the server: same pid
	d := &dialer{url: "ws://" + sp.addr + "/ws", sources: c.sources, daemon: s.daemon}
	if s.daemon {
		tok, err := mintHS256([]byte(c.secret), "abba", time.Hour)
		if err != nil {
			return res, err
		}
		d.header = http.Header{"Authorization": {"Bearer " + tok}}
	}
	p, err := newProto(s.daemon, c.payload)
	if err != nil {
		return res, err
	}
	conns, err := d.connectAll(ctx, c.conns, c.dialers)
	if err != nil {
		return res, err
	}
	defer closeAll(conns)

	// Closed loop.
	var stopFlag atomic.Bool
	start := time.Now()
	w := window{start: start.Add(c.warm), end: start.Add(c.warm + c.dur)}
	done := make(chan []*tally, 1)
	go func() { done <- closedLoop(conns, p, w, c.inflight, &stopFlag) }()
	res.Closed, err = measure(pid, w, func() []*tally {
		stopFlag.Store(true)
		select {
		case t := <-done:
			return t
		case <-time.After(15 * time.Second):
			// A connection still waits for an answer: end its read.
			for _, c := range conns {
				_ = c.SetReadDeadline(time.Now())
			}
			return <-done
		}
	})
	if err != nil || c.rate <= 0 || len(res.Closed.Errors) > 0 {
		return res, errors.Join(err, phaseErr("closed loop", res.Closed))
	}

	// Open loop, on the same connections.
	base := time.Now().Add(100 * time.Millisecond)
	w = window{start: base.Add(c.rateWarm), end: base.Add(c.rateWarm + c.rateDur)}
	go func() { done <- openLoop(conns, p, base, w, c.rate) }()
	res.Open, err = measure(pid, w, func() []*tally { return <-done })
	return res, errors.Join(err, phaseErr("open loop", res.Open))
}

func phaseErr(name string, ph *phase) error {
	if ph == nil || len(ph.Errors) == 0 {
		return nil
	}
	var parts []string
	for k, v := range ph.Errors {
		parts = append(parts, fmt.Sprintf("%d× %s", v, k))
	}
	return fmt.Errorf("%s: %s", name, strings.Join(parts, "; "))
}

// measure samples the server and this process at the window's start and
// end, then collects the connections' tallies with finish.
func measure(pid int, w window, finish func() []*tally) (*phase, error) {
	time.Sleep(time.Until(w.start))
	s0, err := sample(pid)
	if err != nil {
		finish()
		return nil, err
	}
	time.Sleep(time.Until(w.end))
	s1, err := sample(pid)
	tallies := finish()
	if err != nil {
		return nil, err
	}
	ph := &phase{Seconds: s1.at.Sub(s0.at).Seconds(), Threads: s1.threads}
	var lat []int64
	for _, t := range tallies {
		ph.Msgs += t.n
		lat = append(lat, t.lat...)
		for k, v := range t.errs {
			if ph.Errors == nil {
				ph.Errors = map[string]int64{}
			}
			ph.Errors[k] += v
		}
	}
	ph.ServerCPU = s1.serverCPU - s0.serverCPU
	ph.ServerBusy = 100 * ph.ServerCPU / ph.Seconds
	ph.ClientCPU = 100 * (s1.clientCPU - s0.clientCPU) / ph.Seconds
	ph.MsgsPerSec = float64(ph.Msgs) / ph.Seconds
	if ph.ServerCPU > 0 {
		ph.PerServerCPUs = float64(ph.Msgs) / ph.ServerCPU
	}
	if ph.Msgs > 0 {
		ph.CPUPer100k = ph.ServerCPU / float64(ph.Msgs) * 1e5
		ph.CSPerMsg = float64(s1.vcs+s1.ivcs-s0.vcs-s0.ivcs) / float64(ph.Msgs)
		ph.VolCSPerMsg = float64(s1.vcs-s0.vcs) / float64(ph.Msgs)
	}
	ph.Lat = percentiles(lat)
	return ph, nil
}

// mintHS256 signs a JWT {sub, iat, exp} with HMAC-SHA256, written here
// rather than with the daemon's auth package so that nothing but the
// secret is shared with the server under test.
func mintHS256(secret []byte, sub string, ttl time.Duration) (string, error) {
	now := time.Now()
	claims, err := json.Marshal(map[string]any{"sub": sub, "iat": now.Unix(), "exp": now.Add(ttl).Unix()})
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	msg := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(claims)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(msg))
	return msg + "." + enc.EncodeToString(m.Sum(nil)), nil
}

// proc is a running server.
type proc struct {
	cmd    *exec.Cmd
	addr   string
	exited chan struct{}
}

// start runs s on the server CPU and waits until it listens. The ports of
// this range are inside the host's ephemeral range, so another program's
// outgoing connection can hold one for a while: a port that cannot be
// bound is skipped for the next of port-base+off, +100, … +900 (for at most
// a minute).
func (c *options) start(s server, logf *os.File) (*proc, error) {
	giveUp := time.Now().Add(time.Minute)
	for k := 0; ; k = (k + 1) % 10 {
		if k == 0 && time.Now().After(giveUp) {
			return nil, fmt.Errorf("%s: no free port among %d+%d+100k", s.name, c.portBase, s.off)
		}
		port := c.portBase + s.off + 100*k
		if !bindable(port) || (s.daemon && !bindable(port+10)) {
			if k == 9 {
				time.Sleep(time.Second)
			}
			continue
		}
		argv, err := s.argv(port)
		if err != nil {
			return nil, err
		}
		off, _ := logf.Seek(0, io.SeekEnd)
		cmd := exec.Command("taskset", append([]string{"-c", c.serverCPU}, argv...)...)
		cmd.Env = append(os.Environ(), s.env...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		p := &proc{cmd: cmd, addr: fmt.Sprintf("127.0.0.1:%d", port), exited: make(chan struct{})}
		go func() { _ = cmd.Wait(); close(p.exited) }()
		if err := p.waitListening(15 * time.Second); err != nil {
			out := tailFrom(logf.Name(), off)
			p.stop()
			if strings.Contains(out, "address already in use") {
				log.Printf("%s: %s was taken meanwhile, trying another port", s.name, p.addr)
				continue
			}
			return nil, fmt.Errorf("%s on %s: %w (log: %s)", s.name, p.addr, err, out)
		}
		return p, nil
	}
}

// bindable reports whether 127.0.0.1:port can be listened on now.
func bindable(port int) bool {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	_ = ln.Close()
	return true
}

func (p *proc) waitListening(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		conn, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err == nil {
			return conn.Close()
		}
		select {
		case <-p.exited:
			return errors.New("exited before listening")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening after %s: %w", limit, err)
		}
	}
}

// stop sends SIGTERM to the server's process group, then SIGKILL after 10 s.
func (p *proc) stop() {
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.exited
	}
}

func tailFrom(path string, off int64) string {
	b, _ := os.ReadFile(path)
	if off > 0 && off <= int64(len(b)) {
		b = b[off:]
	}
	if len(b) > 500 {
		b = b[len(b)-500:]
	}
	return strings.TrimSpace(string(b))
}
