package backends

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/facebookgo/clock"
	circuit "github.com/rubyist/circuitbreaker"
)

// Balancing policies.
const (
	balanceRoundRobin    = "round_robin"
	balanceLeastInflight = "least_inflight"
)

// Pool is one configured backend: its endpoints, each behind a circuit
// breaker, a balancer and a bulkhead. It is safe for concurrent use; a Pool
// is immutable after New except for its counters.
type Pool struct {
	name     string
	kind     string
	least    bool // balance least_inflight, else round robin
	max      int64
	eps      []*endpoint
	clock    clock.Clock
	cooldown time.Duration
	health   healthOpts
	log      *slog.Logger

	inflight   atomic.Int64
	rr         atomic.Uint64
	openErrs   atomic.Uint64 // calls answered ErrOpen or ErrUnhealthy
	overloaded atomic.Uint64 // calls answered ErrOverloaded
	refused    func(reason string)
}

// endpoint is one URL of a pool with its breaker, health and counters.
type endpoint struct {
	url     string // for display and labels: redact.String of the URL
	backend Backend
	cb      *circuit.Breaker
	health  health
	check   checkFunc // nil: not checked (echo)
	// observe records a finished call in the metrics; quantiles reads the
	// recent p50/p99 (ms) back from the same histogram.
	observe   func(outcome string, d time.Duration)
	quantiles func() (p50, p99 float64)

	probing    atomic.Bool  // a half-open probe is in flight
	inflight   atomic.Int64 // calls in flight on this endpoint
	successes  atomic.Uint64
	failures   atomic.Uint64
	rejections atomic.Uint64 // calls refused by this endpoint's open breaker
	lastFail   atomic.Int64  // pool clock, unix ns, of the last failure
}

// Name returns the backend's name.
func (p *Pool) Name() string { return p.name }

// Kind returns the backend's kind (echo, http, openai, nats).
func (p *Pool) Kind() string { return p.kind }

// Call runs one call: the balancer picks an endpoint whose breaker admits it
// (ErrOpen at once when none does), the bulkhead admits the call
// (ErrOverloaded at once when full), then the endpoint's kind runs it on the
// calling goroutine. The outcome is recorded in the endpoint's breaker.
func (p *Pool) Call(ctx context.Context, req *Request, emit Emit) (Result, error) {
	e, probe, unhealthy := p.pick()
	if e == nil {
		p.openErrs.Add(1)
		if unhealthy {
			p.refused(refusedUnhealthy)
			return Result{}, ErrUnhealthy
		}
		p.refused(refusedOpen)
		return Result{}, ErrOpen
	}
	if p.inflight.Add(1) > p.max {
		p.inflight.Add(-1)
		if probe {
			e.probing.Store(false)
		}
		p.overloaded.Add(1)
		p.refused(refusedOverloaded)
		return Result{}, ErrOverloaded
	}
	e.inflight.Add(1)
	recorded := false
	defer func() {
		if !recorded { // the kind panicked: undo the accounting, free the probe
			e.inflight.Add(-1)
			p.inflight.Add(-1)
			if probe {
				e.probing.Store(false)
			}
		}
	}()
	start := time.Now()
	res, err := e.backend.Call(ctx, req, emit)
	elapsed := time.Since(start)
	e.inflight.Add(-1)
	p.inflight.Add(-1)
	recorded = true
	p.record(ctx, e, err, elapsed, probe)
	if err != nil {
		return Result{}, fmt.Errorf("backend %s (%s): %w", p.name, e.url, err)
	}
	return res, nil
}

// pick returns an endpoint that is not known unhealthy and whose breaker
// admits a call, and whether that call is the endpoint's half-open probe.
// It returns nil when there is none; unhealthy then says that every
// endpoint was left out for failing its health check.
func (p *Pool) pick() (e *endpoint, probe, unhealthy bool) {
	n := uint64(len(p.eps))
	if n == 1 {
		e := p.eps[0]
		if e.health.down() {
			return nil, false, true
		}
		if probe, ok := e.admit(p); ok {
			return e, probe, false
		}
		return nil, false, false
	}
	start := p.rr.Add(1) - 1
	if p.least {
		// The fewest calls in flight among endpoints that look available;
		// ties go to the first from a rotating start, spreading idle load.
		var best *endpoint
		var bestIn int64
		for i := range n {
			e := p.eps[(start+i)%n]
			if e.health.down() || !e.available(p) {
				continue
			}
			if in := e.inflight.Load(); best == nil || in < bestIn {
				best, bestIn = e, in
			}
		}
		if best != nil {
			if probe, ok := best.admit(p); ok {
				return best, probe, false
			}
		}
	}
	down := uint64(0)
	for i := range n {
		e := p.eps[(start+i)%n]
		if e.health.down() {
			down++
			continue
		}
		if probe, ok := e.admit(p); ok {
			return e, probe, false
		}
	}
	return nil, false, down == n
}

// available reports, without side effects, whether admit would likely
// succeed: the breaker is closed, or cooled down with no probe in flight.
func (e *endpoint) available(p *Pool) bool {
	if !e.cb.Tripped() {
		return true
	}
	return !e.probing.Load() && p.clock.Now().UnixNano()-e.lastFail.Load() > int64(p.cooldown)
}

// admit asks the endpoint's breaker for one call. A closed breaker admits
// every call. A tripped one admits exactly one probe once the cool-down has
// passed (the library's Ready lets every caller through while half-open, so
// the probing flag keeps it to one) and refuses the rest.
func (e *endpoint) admit(p *Pool) (probe, ok bool) {
	if !e.cb.Tripped() {
		return false, true
	}
	// Fast refusal while cooling down, without the library's mutex: our
	// lastFail is stored just before the library's, so when ours says
	// "not yet", so would Ready.
	cooling := p.clock.Now().UnixNano()-e.lastFail.Load() <= int64(p.cooldown)
	if !cooling && !e.probing.Load() && e.cb.Ready() && e.probing.CompareAndSwap(false, true) {
		return true, true
	}
	e.rejections.Add(1)
	return false, false
}

// outcome of a call for the breaker.
type outcome int

const (
	outcomeNeutral outcome = iota // client cancel, drain: says nothing of the backend
	outcomeSuccess                // an answer, including a 4xx
	outcomeFailure                // 5xx, transport, malformed, deadline, no responders
)

// classify decides what a call's error says about the endpoint.
func classify(ctx context.Context, err error) outcome {
	if err == nil {
		return outcomeSuccess
	}
	if ctx.Err() != nil {
		if ctx.Err() == context.DeadlineExceeded || errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			return outcomeFailure
		}
		return outcomeNeutral
	}
	if errors.Is(err, errInvalidInput) {
		return outcomeNeutral // refused before any backend was called
	}
	var be *Error
	if errors.As(err, &be) {
		if be.Status >= 500 || be.Status < 400 {
			return outcomeFailure
		}
		return outcomeSuccess
	}
	if errors.Is(err, ErrOverloaded) {
		return outcomeNeutral
	}
	return outcomeFailure
}

// Metric outcomes of a call (telemetry's CallOutcomes).
const (
	callOK           = "ok"
	callRejected     = "rejected"
	callError        = "error"
	callConnectError = "connect_error"
	callNoResponders = "no_responders"
	callTimeout      = "timeout"
	callCanceled     = "canceled"
)

// Reasons a pool refuses a call without calling an endpoint (telemetry's
// RefusalReasons).
const (
	refusedOpen       = "breaker_open"
	refusedUnhealthy  = "unhealthy"
	refusedOverloaded = "overloaded"
)

// callOutcome names what a call's error says, for the metrics.
func callOutcome(ctx context.Context, err error) string {
	if err == nil {
		return callOK
	}
	if ctx.Err() != nil {
		if ctx.Err() == context.DeadlineExceeded || errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			return callTimeout
		}
		return callCanceled
	}
	var be *Error
	switch {
	case errors.Is(err, ErrConnect):
		return callConnectError
	case errors.Is(err, ErrNoResponders):
		return callNoResponders
	case errors.As(err, &be) && be.Rejected():
		return callRejected
	}
	return callError
}

// record feeds a call's outcome to the endpoint's breaker, counters and
// metrics.
func (p *Pool) record(ctx context.Context, e *endpoint, err error, elapsed time.Duration, probe bool) {
	e.observe(callOutcome(ctx, err), elapsed)
	switch classify(ctx, err) {
	case outcomeSuccess:
		e.successes.Add(1)
		if probe {
			// The library closes a half-open breaker on Success only when
			// its own state check happens to say half-open at that moment;
			// a successful probe closes it here without that race.
			e.cb.Reset()
			p.log.LogAttrs(ctx, slog.LevelInfo, "breaker closed", slog.String("endpoint", e.url))
		} else {
			e.cb.Success()
		}
	case outcomeFailure:
		e.failures.Add(1)
		was := e.cb.Tripped()
		e.lastFail.Store(p.clock.Now().UnixNano())
		e.cb.Fail()
		if !was && e.cb.Tripped() {
			p.log.LogAttrs(ctx, slog.LevelWarn, "breaker opened",
				slog.String("endpoint", e.url), slog.Any("err", err))
		}
	}
	if probe {
		e.probing.Store(false)
	}
}

// reset closes every breaker of the pool.
func (p *Pool) reset() {
	for _, e := range p.eps {
		e.cb.Reset()
		e.probing.Store(false)
	}
}

// newBreaker builds an endpoint breaker from config: a rate breaker when
// rate > 0, else a consecutive-failures breaker; a constant back-off of the
// cool-down (the library's default is exponential).
func newBreaker(failures int, rate float64, minSamples int, cooldown time.Duration, clk clock.Clock) *circuit.Breaker {
	trip := circuit.ConsecutiveTripFunc(int64(failures))
	if rate > 0 {
		trip = circuit.RateTripFunc(rate, int64(minSamples))
	}
	return circuit.NewBreakerWithOptions(&circuit.Options{
		BackOff:    constantBackOff(cooldown),
		Clock:      clk,
		ShouldTrip: trip,
	})
}

// constantBackOff waits the same cool-down before every half-open probe. It
// implements the library's backoff.BackOff.
type constantBackOff time.Duration

func (b constantBackOff) NextBackOff() time.Duration { return time.Duration(b) }
func (b constantBackOff) Reset()                     {}

// Inline records a successful call answered in the caller's goroutine
// without Call (dispatch answers delay-less echo routes inline): the
// endpoint's counters and metrics count it like any other call.
func (p *Pool) Inline(d time.Duration) {
	e := p.eps[0]
	e.successes.Add(1)
	e.observe(callOK, d)
}

// A Pool is a Backend: dispatch calls a Pool (or its fallback's) the same
// way as a single endpoint.
var _ Backend = (*Pool)(nil)
