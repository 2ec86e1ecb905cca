// Command report runs the side-by-side benchmark (bench/run.sh calls it):
// for orchestratord (full daemon, echo route), netpoll-echo (the project's
// raw engine), gorilla, gws and nbio, back to back on this machine, with the
// server pinned to CPU 0 and the load tool (orchestratord-load) to CPU 1. It
// measures memory per idle connection at several counts, echo messages per
// server CPU-second at 1k and 10k connections, latency at fixed offered
// rates, the upgrade rate and slow-peer isolation, then rewrites its section
// of docs/benchmarks.md and the docs/img/bench-*.png plots.
package main

import (
	"context"
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
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/orchestratord/orchestratord/daemon/load"
)

// server is one system under test.
type server struct {
	Name    string
	Args    []string // binary and flags
	Addr    string   // client listener host:port
	Path    string
	Raw     bool
	Metrics string // Prometheus text URL
	PProf   string // base URL of /debug/pprof, "" when the server has none
	Env     []string
}

func (s server) url() string { return "ws://" + s.Addr + s.Path }

// config is what the flags set.
type config struct {
	bin, loadBin, daemonBin, daemonConfig string
	docs, img, results                    string
	secret                                string
	dur, rateDur, holdDur, idleDur        time.Duration
	holds, rates                          []int
	fixedRate                             int
	portBase                              int // servers listen on portBase+1.., admin on portBase+101..
	servers                               []string
	cmdline                               string
}

func main() {
	var c config
	var holds, rates, servers, from string
	var sc scaleRun
	flag.StringVar(&c.bin, "bin", "/tmp/orchestratord-bench", "directory with the built binaries")
	flag.StringVar(&c.daemonConfig, "daemon-config", "bench/config/daemon.yaml", "orchestratord config")
	flag.StringVar(&c.docs, "docs", "docs/benchmarks.md", "markdown file whose bench-report section is rewritten")
	flag.StringVar(&c.img, "img", "docs/img", "directory for the PNG plots")
	flag.StringVar(&c.results, "results", "bench/results", "directory for the raw JSON results and logs")
	flag.StringVar(&c.secret, "jwt-secret", "bench-secret-0123456789abcdef-0123456789", "HS256 key shared by daemon and load tool")
	flag.DurationVar(&c.dur, "duration", 10*time.Second, "echo, churn and slow-phase duration")
	flag.DurationVar(&c.rateDur, "rate-duration", 0, "duration of each fixed-rate run (default: -duration)")
	flag.DurationVar(&c.holdDur, "hold-duration", 5*time.Second, "idle time measured after connecting (idle CPU)")
	flag.DurationVar(&c.idleDur, "idle-duration", 30*time.Second, "idle time at the largest count: longer than one 25 s heartbeat, for the idle-CPU goal")
	flag.StringVar(&holds, "holds", "1000,5000,10000,19000", "idle connection counts (the largest is the table's)")
	flag.StringVar(&rates, "rates", "2000,5000,10000,20000,30000", "offered rates for the latency plot")
	flag.IntVar(&c.fixedRate, "fixed-rate", 10000, "the offered rate of the table's p50/p99 (must be in -rates)")
	flag.IntVar(&c.portBase, "port-base", 28000, "servers listen on port-base+1..+4 and +80, admin/metrics on +101..+104 and +90 (several people benchmarking on one host pick different bases)")
	flag.StringVar(&servers, "servers", "orchestratord,netpoll-echo,gorilla,gws,nbio", "servers to run")
	flag.StringVar(&sc.json, "scale", "", "only write the scale section from this load-scale result (bench/scale.sh)")
	flag.IntVar(&sc.daemons, "scale-daemons", 1, "daemon processes of the scale run")
	flag.IntVar(&sc.perDaemon, "scale-per-daemon", 16000, "connections per daemon the scale run planned for (SCALE_PER_DAEMON)")
	flag.StringVar(&sc.marker, "scale-marker", "bench-scale", "name of the docs section markers the scale run rewrites (bench/scale.sh: bench-scale-<N> for N other than 100000)")
	flag.StringVar(&sc.watch, "scale-watch", "", "the scale run's watchdog log (MemAvailable, RSS and slab every 2 s): peaks go into the section")
	flag.DurationVar(&sc.heartbeat, "scale-heartbeat", 25*time.Second, "the daemons' ws.heartbeat in the scale run (SCALE_HEARTBEAT)")
	flag.StringVar(&sc.command, "scale-command", "", "the scale run's command line, for the section (default: SCALE_CONNS=N bench/scale.sh)")
	flag.StringVar(&from, "from", "", "only rewrite the docs from this latest.json (no runs)")
	flag.Parse()
	if sc.json != "" {
		if err := writeScale(c.docs, sc); err != nil {
			log.Fatal(err)
		}
		return
	}
	if c.rateDur == 0 {
		c.rateDur = c.dur
	}
	var err error
	if c.holds, err = ints(holds); err == nil {
		c.rates, err = ints(rates)
	}
	if err != nil {
		log.Fatal(err)
	}
	c.servers = strings.Split(servers, ",")
	c.loadBin = filepath.Join(c.bin, "orchestratord-load")
	c.daemonBin = filepath.Join(c.bin, "orchestratord")
	c.cmdline = strings.Join(os.Args, " ")
	if from != "" {
		if err := rewrite(c, from); err != nil {
			log.Fatal(err)
		}
		return
	}
	if c.portBase != 28000 {
		if err := c.movePorts(); err != nil {
			log.Fatal(err)
		}
	}
	if err := run(context.Background(), c); err != nil {
		log.Fatal(err)
	}
}

// movePorts writes a copy of the daemon config (in the temp directory)
// listening on port-base+80 and +90 instead of 28080 and 28090, and uses it.
func (c *config) movePorts() error {
	b, err := os.ReadFile(c.daemonConfig)
	if err != nil {
		return err
	}
	s := strings.ReplaceAll(string(b), "127.0.0.1:28080", fmt.Sprintf("127.0.0.1:%d", c.portBase+80))
	s = strings.ReplaceAll(s, "127.0.0.1:28090", fmt.Sprintf("127.0.0.1:%d", c.portBase+90))
	f, err := os.CreateTemp("", "orchestratord-bench-*.yaml")
	if err != nil {
		return err
	}
	defer f.Close()
	c.daemonConfig = f.Name()
	_, err = f.WriteString(s)
	return err
}

func ints(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%q: %w", s, err)
		}
		out = append(out, n)
	}
	return out, nil
}

func (c config) systems() []server {
	p := func(off int) string { return fmt.Sprintf("127.0.0.1:%d", c.portBase+off) }
	all := map[string]server{
		"orchestratord": {Name: "orchestratord", Args: []string{c.daemonBin, "serve", "--config", c.daemonConfig},
			Addr: p(80), Path: "/ws", Metrics: "http://" + p(90) + "/metrics",
			PProf: "http://" + p(90) + "/debug/pprof", Env: []string{"ORCH_JWT_SECRET=" + c.secret}},
		"netpoll-echo": {Name: "netpoll-echo", Args: []string{filepath.Join(c.bin, "netpoll-echo"), "-addr", p(4), "-admin", p(104)},
			Addr: p(4), Path: "/ws", Raw: true, Metrics: "http://" + p(104) + "/metrics", PProf: "http://" + p(104) + "/debug/pprof"},
		"gorilla": {Name: "gorilla", Args: []string{filepath.Join(c.bin, "gorilla-echo"), "-addr", p(1), "-admin", p(101)},
			Addr: p(1), Path: "/ws", Raw: true, Metrics: "http://" + p(101) + "/metrics", PProf: "http://" + p(101) + "/debug/pprof"},
		"gws": {Name: "gws", Args: []string{filepath.Join(c.bin, "gws-echo"), "-addr", p(2), "-admin", p(102)},
			Addr: p(2), Path: "/ws", Raw: true, Metrics: "http://" + p(102) + "/metrics", PProf: "http://" + p(102) + "/debug/pprof"},
		"nbio": {Name: "nbio", Args: []string{filepath.Join(c.bin, "nbio-echo"), "-addr", p(3), "-admin", p(103)},
			Addr: p(3), Path: "/ws", Raw: true, Metrics: "http://" + p(103) + "/metrics", PProf: "http://" + p(103) + "/debug/pprof"},
	}
	var out []server
	for _, n := range c.servers {
		if s, ok := all[n]; ok {
			out = append(out, s)
		}
	}
	return out
}

// outcome is one server's results, by scenario.
type outcome struct {
	Server  string                  `json:"server"`
	Results map[string]*load.Result `json:"results"`
	Cmds    map[string]string       `json:"cmds"`
	Errors  map[string]string       `json:"errors,omitempty"`
}

func run(ctx context.Context, c config) error {
	if err := os.MkdirAll(c.results, 0o755); err != nil {
		return err
	}
	// Scenario by scenario, every server back to back: whatever else the
	// machine does changes between scenarios more than within one, so the
	// ratios of one scenario compare like with like.
	var all []*outcome
	systems := c.systems()
	for _, s := range systems {
		all = append(all, &outcome{Server: s.Name, Results: map[string]*load.Result{}, Cmds: map[string]string{}, Errors: map[string]string{}})
	}
	for _, sc := range c.scenarios() {
		for i, s := range systems {
			o := all[i]
			log.Printf("%s: %s", s.Name, sc.key)
			res, cmd, err := c.once(ctx, s, sc)
			o.Cmds[sc.key] = cmd
			if err != nil {
				log.Printf("%s %s: %v", s.Name, sc.key, err)
				o.Errors[sc.key] = err.Error()
			}
			if res != nil {
				o.Results[sc.key] = res
			}
		}
	}
	js, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.results, "latest.json"), js, 0o644); err != nil {
		return err
	}
	return writeReport(c, all)
}

// rewrite regenerates the docs section and plots from a saved latest.json.
func rewrite(c config, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var all []*outcome
	if err := json.Unmarshal(b, &all); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	// The phase lengths come from the results themselves.
	for _, o := range all {
		if r := o.Results["echo-1000"]; r != nil {
			c.dur = r.Options.Duration
		}
		if r := o.Results[fmt.Sprintf("rate-%d", c.fixedRate)]; r != nil {
			c.rateDur = r.Options.Duration
		}
	}
	c.cmdline += " (rewrote the docs from saved results; the runs' commands are listed below)"
	return writeReport(c, all)
}

// scenario is one load-tool invocation.
type scenario struct {
	key  string
	args []string
}

const sources = "127.0.0.2-127.0.0.9"

func (c config) scenarios() []scenario {
	var out []scenario
	for i, n := range c.holds {
		d := c.holdDur
		if i == len(c.holds)-1 {
			d = c.idleDur
		}
		procs := 1
		if n > 9000 {
			procs = (n + 9499) / 9500
		}
		out = append(out, scenario{key: fmt.Sprintf("hold-%d", n), args: []string{"-mode", "hold", "-conns", strconv.Itoa(n),
			"-procs", strconv.Itoa(procs), "-sources", sources, "-duration", d.String(), "-settle", "2s"}})
	}
	for _, n := range []int{1000, 10000} {
		out = append(out, scenario{key: fmt.Sprintf("echo-%d", n), args: []string{"-mode", "echo", "-conns", strconv.Itoa(n),
			"-workers", "200", "-payload", "1024", "-duration", c.dur.String(), "-sources", sources}})
	}
	for _, r := range c.rates {
		out = append(out, scenario{key: fmt.Sprintf("rate-%d", r), args: []string{"-mode", "rate", "-conns", "1000",
			"-rate", strconv.Itoa(r), "-payload", "1024", "-duration", c.rateDur.String(), "-sources", sources}})
	}
	out = append(out,
		scenario{key: "churn", args: []string{"-mode", "churn", "-churn-workers", "16", "-duration", c.dur.String(), "-sources", sources}},
		scenario{key: "slow", args: []string{"-mode", "slow", "-conns", "1000", "-workers", "200", "-payload", "1024",
			"-slow-peers", "2000", "-duration", c.dur.String(), "-sources", sources}},
	)
	return out
}

// once starts the server on CPU 0, runs the load tool on CPU 1 and stops the
// server. It returns the result and the load command line.
func (c config) once(ctx context.Context, s server, sc scenario) (*load.Result, string, error) {
	logf, err := os.Create(filepath.Join(c.results, s.Name+"-"+sc.key+".log"))
	if err != nil {
		return nil, "", err
	}
	defer logf.Close()
	srv := exec.Command("taskset", append([]string{"-c", "0"}, s.Args...)...)
	srv.Env = append(os.Environ(), s.Env...)
	srv.Stdout, srv.Stderr = logf, logf
	srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := srv.Start(); err != nil {
		return nil, "", fmt.Errorf("start %s: %w", s.Name, err)
	}
	defer stop(srv)
	if err := waitPort(s.Addr, 10*time.Second); err != nil {
		return nil, "", fmt.Errorf("%s did not listen: %w", s.Name, err)
	}
	out := filepath.Join(c.results, s.Name+"-"+sc.key+".json")
	args := []string{"-c", "1", c.loadBin, "-url", s.url(), "-json", out, "-label", s.Name + " " + sc.key}
	if s.Raw {
		args = append(args, "-raw")
	} else {
		args = append(args, "-jwt-secret", c.secret)
	}
	args = append(args, sc.args...)
	shown := "taskset " + strings.Join(append(args[:0:0], args...), " ")
	shown = strings.Replace(shown, c.secret, "$ORCH_JWT_SECRET", 1)
	args = append(args, "-server-pid", strconv.Itoa(srv.Process.Pid), "-metrics-url", s.Metrics)
	if strings.HasPrefix(sc.key, "hold-") && s.PProf != "" && reachable(s.PProf+"/") {
		// Go heap and stack "after GC": the server's pprof heap endpoint
		// runs a GC with ?gc=1 before each sample.
		args = append(args, "-gc-url", s.PProf+"/heap?gc=1")
	}
	lctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(lctx, "taskset", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	profDone := make(chan struct{})
	if sc.key == "echo-1000" && s.PProf != "" {
		go func() {
			defer close(profDone)
			c.profile(lctx, s, filepath.Join(c.results, s.Name+"-echo-1000.cpu.pprof"))
		}()
	} else {
		close(profDone)
	}
	runErr := cmd.Run()
	<-profDone
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, shown, errors.Join(runErr, err)
	}
	var res load.Result
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, shown, errors.Join(runErr, err)
	}
	return &res, shown, runErr
}

// profile takes a CPU profile of the server during the echo phase: it
// starts 1.5 s in (connections up, settle passed) and lasts the phase but
// one second. A server without /debug/pprof leaves no file.
func (c config) profile(ctx context.Context, s server, path string) {
	t := time.NewTimer(1500 * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return
	}
	secs := max(1, int(c.dur.Seconds())-1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/profile?seconds=%d", s.PProf, secs), nil)
	if err != nil {
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return
	}
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		_ = os.WriteFile(path, b, 0o644)
	}
}

// reachable reports whether GET url answers 200.
func reachable(url string) bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func waitPort(addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM to the server's process group, then SIGKILL after 10 s.
func stop(cmd *exec.Cmd) {
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	}
}
