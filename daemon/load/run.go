package load

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ChildEnv names the environment variable that carries a shard's options
// (JSON) to a re-executed child process. A main that sees it calls
// RunChild instead of parsing flags.
const ChildEnv = "ORCHESTRATORD_LOAD_SHARD"

// tokenEnv carries the JWT to children so it is not in their argv.
const tokenEnv = "ORCHESTRATORD_LOAD_TOKEN"

// Machine describes where a run happened.
type Machine struct {
	NProc  int    `json:"nproc"`
	CPU    string `json:"cpu"`
	Kernel string `json:"kernel"`
}

// ThisMachine reads the processor count, the CPU model and the kernel
// release.
func ThisMachine() Machine {
	// NProc counts the machine's processors, not runtime.NumCPU, which
	// honours the affinity mask (taskset) the tool may run under.
	m := Machine{NProc: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		n := 0
		for line := range strings.SplitSeq(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			switch k = strings.TrimSpace(k); {
			case !ok:
			case k == "processor":
				n++
			case k == "model name" && m.CPU == "":
				m.CPU = strings.TrimSpace(v)
			}
		}
		if n > 0 {
			m.NProc = n
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// Result is the outcome of a run, merged over its processes.
type Result struct {
	Options       Options           `json:"options"`
	Machine       Machine           `json:"machine"`
	Connect       ConnectReport     `json:"connect"`
	Alive         int               `json:"alive"`
	Sent          uint64            `json:"sent"`
	Received      uint64            `json:"received"`
	Unanswered    uint64            `json:"unanswered"`
	Seconds       float64           `json:"seconds"`
	MsgsPerSecond float64           `json:"msgs_per_second"`
	Latency       Latency           `json:"latency"`
	Errors        map[string]uint64 `json:"errors,omitempty"`
	ErrorCount    uint64            `json:"error_count"`
	Server        *ServerReport     `json:"server,omitempty"`
	Slow          *SlowReport       `json:"slow,omitempty"`
	Churn         *ChurnReport      `json:"churn,omitempty"`
	// LoadBefore and LoadAfter are /proc/loadavg at the start and the end:
	// a busy machine explains a noisy figure.
	LoadBefore string `json:"loadavg_before"`
	// ClientCPUPercent is the load tool's own CPU during the measured phase,
	// in percent of one core, summed over its processes: near 100 per
	// core it was given, the client and not the server set the pace.
	ClientCPUPercent float64 `json:"client_cpu_percent"`
	// ClientConnectCPU is the load tool's own CPU while connecting, in
	// seconds, summed over its processes.
	ClientConnectCPU float64 `json:"client_connect_cpu_s"`
	LoadAfter        string  `json:"loadavg_after"`
}

// loadAvg returns the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// Run executes a run: the server is sampled before connecting, once every
// connection is up (after Settle), and after the measured phase, before
// any connection is closed. With
// Procs > 1 the shards run as child processes of Options.Executable, which
// must call RunChild when ChildEnv is set.
func Run(ctx context.Context, o Options, log *slog.Logger) (*Result, error) {
	o, err := o.WithDefaults()
	if err != nil {
		return nil, err
	}
	smp := &Sampler{PIDs: o.ServerPIDs, MetricsURLs: o.MetricsURLs, GCURLs: o.GCURLs}
	loadBefore := loadAvg()
	srv := &ServerReport{Before: smp.Take(ctx)}
	ready := func(reps []ConnectReport) error {
		t := time.NewTimer(o.Settle)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		srv.Connected = smp.Take(ctx)
		return nil
	}
	// The phase ends before the connections close: their teardown is
	// server CPU of no phase (see runLocal).
	var after *Sample
	finished := func() {
		if after == nil {
			sm := smp.Take(ctx)
			after = &sm
		}
	}
	var shards []ShardResult
	if o.Procs == 1 {
		r, err := runLocal(ctx, o, log, func(c ConnectReport) error { return ready([]ConnectReport{c}) },
			func(ShardResult) error { finished(); return nil })
		if err != nil {
			return nil, err
		}
		shards = []ShardResult{r}
	} else {
		shards, err = runChildren(ctx, o, log, ready, finished)
		if err != nil {
			return nil, err
		}
	}
	finished() // a shard without connections returns without the hook
	srv.After = *after
	res := merge(o, shards)
	res.LoadBefore, res.LoadAfter = loadBefore, loadAvg()
	srv.Conns = res.Alive
	if o.Mode == ModeSlow && res.Slow != nil {
		srv.Conns = res.Alive + res.Slow.PeersConnected
	}
	srv.fill(res.Received)
	res.Server = srv
	if res.Connect.OK == 0 && o.Mode != ModeChurn {
		return res, errNoConns
	}
	return res, nil
}

func merge(o Options, shards []ShardResult) *Result {
	res := &Result{Options: o, Machine: ThisMachine(), Errors: map[string]uint64{}}
	res.Connect.Errors = map[string]uint64{}
	h := NewHist()
	var cpu float64
	for _, s := range shards {
		cpu += s.CPUSeconds
		res.ClientConnectCPU += s.ConnectCPU
		res.Connect.Tried += s.Connect.Tried
		res.Connect.OK += s.Connect.OK
		res.Connect.Welcomed += s.Connect.Welcomed
		res.Connect.Seconds = max(res.Connect.Seconds, s.Connect.Seconds)
		for k, v := range s.Connect.Errors {
			res.Connect.Errors[k] += v
		}
		res.Alive += s.Alive
		res.Sent += s.Sent
		res.Received += s.Received
		res.Unanswered += s.Unanswered
		res.Seconds = max(res.Seconds, s.Seconds)
		for k, v := range s.Errors {
			res.Errors[k] += v
		}
		if s.Hist != nil {
			h.Merge(HistFromSnapshot(s.Hist))
		}
		if s.Slow != nil {
			if res.Slow == nil {
				res.Slow = &SlowReport{LateErrors: map[string]uint64{}}
			}
			r := res.Slow
			r.Peers += s.Slow.Peers
			r.PeersConnected += s.Slow.PeersConnected
			r.BaseMsgs += s.Slow.BaseMsgs
			r.SlowMsgs += s.Slow.SlowMsgs
			r.BaseSeconds = max(r.BaseSeconds, s.Slow.BaseSeconds)
			r.SlowSeconds = max(r.SlowSeconds, s.Slow.SlowSeconds)
			r.LateTried += s.Slow.LateTried
			r.LateOK += s.Slow.LateOK
			for k, v := range s.Slow.LateErrors {
				r.LateErrors[k] += v
			}
		}
		if s.Churn != nil {
			if res.Churn == nil {
				res.Churn = &ChurnReport{Errors: map[string]uint64{}}
			}
			res.Churn.Cycles += s.Churn.Cycles
			res.Churn.Failed += s.Churn.Failed
			res.Churn.PerSecond += s.Churn.PerSecond
			for k, v := range s.Churn.Errors {
				res.Churn.Errors[k] += v
			}
		}
	}
	if res.Slow != nil {
		res.Slow.fill()
	}
	if res.Connect.Seconds > 0 {
		res.Connect.PerSecond = float64(res.Connect.OK) / res.Connect.Seconds
	}
	if res.Seconds > 0 {
		res.MsgsPerSecond = float64(res.Received) / res.Seconds
		res.ClientCPUPercent = 100 * cpu / res.Seconds
	}
	res.Latency = h.Summary()
	for _, v := range res.Errors {
		res.ErrorCount += v
	}
	for _, v := range res.Connect.Errors {
		res.ErrorCount += v
	}
	return res
}

// childMsg is one line a child writes on stdout.
type childMsg struct {
	Ready  *ConnectReport `json:"ready,omitempty"`
	Result *ShardResult   `json:"result,omitempty"`
	Error  string         `json:"error,omitempty"`
}

// RunChild is a shard process: it reads its options from ChildEnv, connects,
// writes {"ready":…} on out, waits for a line on in, runs the measured phase,
// writes {"result":…} and keeps its connections open until in gives another
// line or ends (the parent samples the server in between).
func RunChild(ctx context.Context, in io.Reader, out io.Writer, log *slog.Logger) error {
	var o Options
	if err := json.Unmarshal([]byte(os.Getenv(ChildEnv)), &o); err != nil {
		return fmt.Errorf("shard options: %w", err)
	}
	o.Token = os.Getenv(tokenEnv)
	enc := json.NewEncoder(out)
	br := bufio.NewReader(in)
	sent := false
	r, err := runLocal(ctx, o, log, func(c ConnectReport) error {
		if err := enc.Encode(childMsg{Ready: &c}); err != nil {
			return fmt.Errorf("write ready: %w", err)
		}
		if _, err := br.ReadString('\n'); err != nil {
			return fmt.Errorf("wait for go: %w", err)
		}
		return nil
	}, func(r ShardResult) error {
		sent = true
		if err := enc.Encode(childMsg{Result: &r}); err != nil {
			return fmt.Errorf("write result: %w", err)
		}
		_, _ = br.ReadString('\n') // a line or the end of in: close
		return nil
	})
	if err != nil {
		if !sent {
			_ = enc.Encode(childMsg{Error: err.Error()})
		}
		return err
	}
	if sent {
		return nil
	}
	return enc.Encode(childMsg{Result: &r})
}

// child is one running shard process.
type child struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *json.Decoder
}

func (c *child) next() (childMsg, error) {
	var m childMsg
	if err := c.out.Decode(&m); err != nil {
		return m, fmt.Errorf("read shard output: %w", err)
	}
	if m.Error != "" {
		return m, fmt.Errorf("shard: %s", m.Error)
	}
	return m, nil
}

func runChildren(ctx context.Context, o Options, log *slog.Logger, ready func([]ConnectReport) error, finished func()) ([]ShardResult, error) {
	children := make([]*child, 0, o.Procs)
	defer func() {
		for _, c := range children {
			_ = c.in.Close()
			_ = c.cmd.Wait()
		}
	}()
	for i := range o.Procs {
		so := o.forShard(i)
		js, err := json.Marshal(so)
		if err != nil {
			return nil, fmt.Errorf("shard options: %w", err)
		}
		cmd := exec.CommandContext(ctx, o.Executable)
		cmd.Env = append(os.Environ(), ChildEnv+"="+string(js), tokenEnv+"="+o.Token)
		cmd.Stderr = os.Stderr
		// A shard outlives no parent: a killed parent (SIGKILL, no
		// cleanup) must not leave thousands of connections behind.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, fmt.Errorf("shard %d stdin: %w", i, err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, fmt.Errorf("shard %d stdout: %w", i, err)
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start shard %d: %w", i, err)
		}
		children = append(children, &child{cmd: cmd, in: in, out: json.NewDecoder(out)})
	}
	log.Info("shards started", "procs", o.Procs)
	reps := make([]ConnectReport, len(children))
	if err := each(children, func(i int, c *child) error {
		m, err := c.next()
		if err == nil && m.Ready == nil {
			err = fmt.Errorf("shard %d: expected ready", i)
		}
		if err == nil {
			reps[i] = *m.Ready
		}
		return err
	}); err != nil {
		return nil, err
	}
	if err := ready(reps); err != nil {
		return nil, err
	}
	for i, c := range children {
		if _, err := io.WriteString(c.in, "go\n"); err != nil {
			return nil, fmt.Errorf("start shard %d: %w", i, err)
		}
	}
	results := make([]ShardResult, len(children))
	err := each(children, func(i int, c *child) error {
		m, err := c.next()
		if err == nil && m.Result == nil {
			err = fmt.Errorf("shard %d: expected result", i)
		}
		if err == nil {
			results[i] = *m.Result
		}
		return err
	})
	if err == nil {
		// Every shard still holds its connections (RunChild waits for
		// the end of its stdin, which the deferred cleanup closes).
		finished()
	}
	return results, err
}

// each runs fn for every child concurrently and returns the first error.
func each(cs []*child, fn func(int, *child) error) error {
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() { errs[i] = fn(i, c) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
