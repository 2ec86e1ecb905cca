package load

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"
)

// ConnectReport is how the connection phase went.
type ConnectReport struct {
	Tried     int               `json:"tried"`
	OK        int               `json:"ok"`
	Welcomed  int               `json:"welcomed"`
	Seconds   float64           `json:"seconds"`
	PerSecond float64           `json:"per_second"` // upgrades per second
	Errors    map[string]uint64 `json:"errors,omitempty"`
}

// ShardResult is one process's part of a run, merged by the parent.
type ShardResult struct {
	Connect    ConnectReport          `json:"connect"`
	ConnectCPU float64                `json:"connect_cpu_s"` // this process's CPU time while connecting
	Alive      int                    `json:"alive"`         // connections open at the end
	Sent       uint64                 `json:"sent"`
	Received   uint64                 `json:"received"`
	Unanswered uint64                 `json:"unanswered"`
	Seconds    float64                `json:"seconds"`
	Hist       *hdrhistogram.Snapshot `json:"hist,omitempty"`
	Errors     map[string]uint64      `json:"errors,omitempty"`
	Slow       *SlowReport            `json:"slow,omitempty"`
	Churn      *ChurnReport           `json:"churn,omitempty"`
	CPUSeconds float64                `json:"cpu_seconds"` // this process's CPU time during the measured phase
}

// shard is the client work of one process: loops, connections, phases.
type shard struct {
	o     Options
	w     *wire
	d     *Dialer
	log   *slog.Logger
	loops []*loop
	wg    sync.WaitGroup
	res   ShardResult
}

func newShard(o Options, log *slog.Logger) (*shard, error) {
	w := &wire{raw: o.Raw, route: o.Route, size: o.Payload, base: time.Now()}
	w.filler = make([]byte, o.Payload)
	for i := range w.filler {
		w.filler[i] = 'x'
	}
	if !o.Raw {
		w.data = echoData(o.Payload)
	}
	w.slowMsg = appendFrame(nil, opText, w.filler, [4]byte{1, 2, 3, 4})
	s := &shard{o: o, w: w, log: log, d: &Dialer{URL: o.URL, Token: o.Token, Sources: o.Sources, Timeout: o.DialTimeout}}
	s.res.Errors = map[string]uint64{}
	if o.Mode == ModeChurn {
		return s, nil
	}
	for i := range o.Loops {
		l, err := newLoop(w, uint64(o.Shard)<<32|uint64(i)+1)
		if err != nil {
			s.close()
			return nil, err
		}
		s.loops = append(s.loops, l)
		s.wg.Go(l.run)
	}
	return s, nil
}

// close stops the loops, closing every connection, and waits for them.
func (s *shard) close() {
	for _, l := range s.loops {
		l.do(func() { l.stopped = true })
	}
	s.wg.Wait()
}

// onLoops runs fn on every loop goroutine and waits for all of them.
func (s *shard) onLoops(fn func(*loop)) {
	var wg sync.WaitGroup
	for _, l := range s.loops {
		wg.Add(1)
		l.do(func() { fn(l); wg.Done() })
	}
	wg.Wait()
}

// connect opens n connections with the handshake pool and hands them to the
// loops; workers are spread over them. With ConnectRate the handshakes
// start at most that often (Dialers still bounds those in flight).
func (s *shard) connect(ctx context.Context, n, workers int, slow bool) ConnectReport {
	rep := ConnectReport{Tried: n, Errors: map[string]uint64{}}
	var next, ok atomic.Int64
	var mu sync.Mutex
	pace := newPacer(s.o.ConnectRate)
	start := time.Now()
	var wg sync.WaitGroup
	for range min(s.o.Dialers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || pace.wait(ctx) != nil {
					return
				}
				dc, err := s.d.dial(ctx)
				if err != nil {
					mu.Lock()
					rep.Errors[dialErrKey(err)]++
					mu.Unlock()
					continue
				}
				ok.Add(1)
				l := s.loops[i%len(s.loops)]
				wk := 0
				if !slow && n > 0 {
					wk = share(workers, i, n)
				}
				l.do(func() { l.add(dc, slow, wk) })
			}
		})
	}
	wg.Wait()
	rep.OK = int(ok.Load())
	rep.Seconds = time.Since(start).Seconds()
	if rep.Seconds > 0 {
		rep.PerSecond = float64(rep.OK) / rep.Seconds
	}
	rep.Welcomed = s.waitWelcomed(ctx, 10*time.Second)
	return rep
}

// waitWelcomed waits until every open connection has its welcome (protocol
// mode) or the timeout passes, and returns the welcomed count.
func (s *shard) waitWelcomed(ctx context.Context, limit time.Duration) int {
	deadline := time.Now().Add(limit)
	for {
		var welcomed, open int
		var mu sync.Mutex
		s.onLoops(func(l *loop) {
			mu.Lock()
			welcomed += l.welcomed
			open += len(l.conns)
			mu.Unlock()
		})
		if welcomed >= open || time.Now().After(deadline) || ctx.Err() != nil {
			return welcomed
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// prepare is the part before the measured phase.
func (s *shard) prepare(ctx context.Context) ConnectReport {
	if s.o.Mode == ModeChurn {
		return ConnectReport{}
	}
	s.res.Connect = s.connect(ctx, s.o.Conns, s.o.Workers, false)
	return s.res.Connect
}

// phase runs one measured interval on every loop and merges the results.
func (s *shard) phase(kind string, d time.Duration) (sent, recv, unanswered uint64, h *Hist, secs float64) {
	done := make(chan phaseResult, len(s.loops))
	start := time.Now()
	rate := s.o.Rate / float64(len(s.loops))
	for _, l := range s.loops {
		l.do(func() { l.startPhase(kind, d, rate, done) })
	}
	h = NewHist()
	for range s.loops {
		r := <-done
		sent += r.sent
		recv += r.recv
		unanswered += r.unanswered
		h.Merge(r.hist)
	}
	return sent, recv, unanswered, h, min(time.Since(start), d).Seconds()
}

// execute runs the measured phase of the mode.
func (s *shard) execute(ctx context.Context) ShardResult {
	var h *Hist
	switch s.o.Mode {
	case ModeHold:
		t := time.NewTimer(s.o.Duration)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		s.res.Seconds = s.o.Duration.Seconds()
	case ModeEcho, ModeRate:
		s.res.Sent, s.res.Received, s.res.Unanswered, h, s.res.Seconds = s.phase(s.o.Mode, s.o.Duration)
	case ModeSlow:
		h = s.slow(ctx)
	case ModeChurn:
		s.res.Churn, h = s.churn(ctx)
		s.res.Seconds = s.o.Duration.Seconds()
	}
	if h != nil {
		s.res.Hist = h.Snapshot()
	}
	var mu sync.Mutex
	s.onLoops(func(l *loop) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range l.conns {
			if !c.slow {
				s.res.Alive++
			}
		}
		for k, v := range l.errs {
			s.res.Errors[k] += v
		}
	})
	return s.res
}

// runLocal runs one shard in this process between the hooks: ready is called
// with the connect report once every connection is up and must return when
// the measured phase may start; finished (if not nil) is called with the
// result when the measured phase is over, while every connection is still
// open, and must return when they may be closed. The server's end-of-phase
// sample belongs there: closing thousands of connections costs the server
// CPU (one teardown per connection) that is no part of what a phase
// measures (an idle hold would otherwise report the teardown as idle CPU).
func runLocal(ctx context.Context, o Options, log *slog.Logger, ready func(ConnectReport) error, finished func(ShardResult) error) (ShardResult, error) {
	s, err := newShard(o, log)
	if err != nil {
		return ShardResult{}, err
	}
	defer s.close()
	cpuStart := selfCPU()
	rep := s.prepare(ctx)
	s.res.ConnectCPU = selfCPU() - cpuStart
	if err := ready(rep); err != nil {
		return ShardResult{}, err
	}
	if ctx.Err() != nil {
		return ShardResult{}, fmt.Errorf("run: %w", context.Cause(ctx))
	}
	if o.Mode != ModeChurn && rep.OK == 0 {
		return s.res, nil // nothing to measure; the connect errors say why
	}
	cpu0 := selfCPU()
	r := s.execute(ctx)
	r.CPUSeconds = selfCPU() - cpu0
	if finished != nil {
		if err := finished(r); err != nil {
			return r, err
		}
	}
	return r, nil
}

// selfCPU returns this process's user+system CPU seconds.
func selfCPU() float64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// errNoConns is returned when no connection could be opened at all.
var errNoConns = errors.New("load: no connection could be opened")
