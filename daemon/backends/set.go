package backends

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/facebookgo/clock"
	"github.com/nats-io/nats.go"
	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/redact"
)

// Set is every configured backend, built at once from the config. A reload
// builds a new Set and swaps it; the old one is closed once its in-flight
// calls have ended. Its pools are fixed after New.
type Set struct {
	pools map[string]*Pool
	names []string // sorted
	meter Meter

	transports []*http.Transport
	conns      []*nats.Conn
	closeOnce  sync.Once

	stop context.CancelFunc // stops the health checkers
	wg   sync.WaitGroup     // health checker goroutines
}

// Meter is where a Set reports its calls (telemetry.Metrics implements
// it). Endpoint returns the recorder of one endpoint's calls (outcome: ok,
// rejected, error, connect_error, no_responders, timeout, canceled) and
// the reader of its recent p50/p99 latency in milliseconds; Refusals the
// counter of calls a backend refused without calling an endpoint (reason:
// breaker_open, unhealthy, overloaded). Both are called while New builds
// the set, so that every series exists from the start.
type Meter interface {
	Endpoint(backend, endpoint string) (observe func(outcome string, d time.Duration), quantiles func() (p50, p99 float64))
	Refusals(backend string) func(reason string)
}

// noMeter records nothing and reads zeros.
type noMeter struct{}

func (noMeter) Endpoint(string, string) (func(string, time.Duration), func() (float64, float64)) {
	return func(string, time.Duration) {}, func() (float64, float64) { return 0, 0 }
}
func (noMeter) Refusals(string) func(string) { return func(string) {} }

// Option configures New.
type Option func(*Set)

// WithMeter reports calls to m (default: nowhere).
func WithMeter(m Meter) Option {
	return func(s *Set) {
		if m != nil {
			s.meter = m
		}
	}
}

// New builds a pool for every backend of cfg and starts the endpoints'
// health checks (stopped by Close). env resolves the environment variables
// named by headers and api_key_env. A NATS server that is down is not an
// error (the client reconnects in the background, and the endpoint is
// unhealthy meanwhile); a config the package cannot use is.
func New(cfg map[string]config.Backend, env func(string) (string, bool), log *slog.Logger, opts ...Option) (*Set, error) {
	return newSet(cfg, env, log, clock.New(), opts...)
}

// newSet is New with the breakers' clock given (tests use a mock).
func newSet(cfg map[string]config.Backend, env func(string) (string, bool), log *slog.Logger, clk clock.Clock, opts ...Option) (*Set, error) {
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	s := &Set{pools: make(map[string]*Pool, len(cfg)), meter: noMeter{}, stop: func() {}}
	for _, o := range opts {
		o(s)
	}
	for name, b := range cfg {
		p, err := s.newPool(name, b, env, log, clk)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("backend %s: %w", name, err)
		}
		s.pools[name] = p
		s.names = append(s.names, name)
	}
	slices.Sort(s.names)
	s.startChecks()
	return s, nil
}

// startChecks runs the health check of every checked endpoint on its own
// goroutine, owned by the set. A NATS endpoint is checked once at once, so
// that a backend whose server is down is logged and shown unhealthy from
// the start.
func (s *Set) startChecks() {
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	for _, name := range s.names {
		p := s.pools[name]
		for _, e := range p.eps {
			if e.check == nil {
				continue
			}
			if p.kind == config.KindNATS {
				p.runCheck(ctx, e)
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				p.checkLoop(ctx, e)
			}()
		}
	}
}

// newPool builds one backend's pool and its endpoints.
func (s *Set) newPool(name string, b config.Backend, env func(string) (string, bool), log *slog.Logger, clk clock.Clock) (*Pool, error) {
	// Guards for a config that did not go through config.Load (whose
	// defaults are the real ones): never a zero bulkhead or breaker.
	if b.MaxConcurrent <= 0 {
		b.MaxConcurrent = 256
	}
	if b.Breaker.Failures <= 0 {
		b.Breaker.Failures = 5
	}
	if b.Breaker.MinSamples <= 0 {
		b.Breaker.MinSamples = 20
	}
	if b.Breaker.Cooldown <= 0 {
		b.Breaker.Cooldown = config.Duration(5 * time.Second)
	}
	if b.Health.Interval <= 0 {
		b.Health.Interval = config.Duration(10 * time.Second)
	}
	if b.Health.Timeout <= 0 {
		b.Health.Timeout = config.Duration(2 * time.Second)
	}
	p := &Pool{
		name:     name,
		kind:     b.Kind,
		least:    b.Balance == balanceLeastInflight,
		max:      int64(b.MaxConcurrent),
		clock:    clk,
		cooldown: b.Breaker.Cooldown.D(),
		health:   healthOpts{interval: b.Health.Interval.D(), timeout: b.Health.Timeout.D(), path: b.Health.Path},
		log:      log.With(slog.String("backend", name)),
		refused:  s.meter.Refusals(name),
	}
	add := func(raw string, be Backend, check checkFunc) {
		// Two URLs that differ only in what redaction masks would share a
		// label: number the later ones.
		shown := redact.String(raw)
		for n, base := 2, shown; slices.ContainsFunc(p.eps, func(e *endpoint) bool { return e.url == shown }); n++ {
			shown = fmt.Sprintf("%s (%d)", base, n)
		}
		e := &endpoint{
			url:     shown,
			backend: be,
			cb:      newBreaker(b.Breaker.Failures, b.Breaker.Rate, b.Breaker.MinSamples, b.Breaker.Cooldown.D(), clk),
			check:   check,
		}
		e.observe, e.quantiles = s.meter.Endpoint(name, shown)
		p.eps = append(p.eps, e)
	}
	switch b.Kind {
	case config.KindEcho:
		add("echo:", echoBackend{delay: b.Delay.D(), stream: b.Stream}, nil)
	case config.KindHTTP, config.KindOpenAI:
		if len(b.Endpoints) == 0 {
			return nil, fmt.Errorf("kind %s needs at least one endpoint", b.Kind)
		}
		headers := make(http.Header, len(b.Headers)+1)
		for k, h := range b.Headers {
			headers.Set(k, h.Resolve(env))
		}
		if b.Kind == config.KindOpenAI && b.APIKeyEnv != "" {
			if key, ok := env(b.APIKeyEnv); ok && key != "" {
				headers.Set("Authorization", "Bearer "+key)
			}
		}
		t := newTransport(b.MaxConcurrent)
		s.transports = append(s.transports, t)
		client := newClient(t)
		for _, raw := range b.Endpoints {
			u, err := url.Parse(raw)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, fmt.Errorf("endpoint %q is not an http(s) URL", raw)
			}
			if b.Kind == config.KindHTTP {
				check := tcpCheck(u)
				if b.Health.Path != "" {
					check = httpGetCheck(client, healthURL(u, b.Health.Path), headers, func(st int) bool { return st >= 200 && st <= 299 })
				}
				add(raw, &httpBackend{url: raw, client: client, headers: headers}, check)
				continue
			}
			// A 4xx from /models (no such route, a key without that
			// scope) still shows a live server: only 5xx and transport
			// failures are unhealthy.
			check := httpGetCheck(client, openaiModelsURL(raw), headers, func(st int) bool { return st < 500 })
			add(raw, &openaiBackend{
				url:     strings.TrimSuffix(raw, "/") + "/chat/completions",
				client:  client,
				headers: headers,
				model:   b.Model,
				system:  b.SystemPrompt,
			}, check)
		}
	case config.KindNATS:
		if len(b.URLs) == 0 || b.Subject == "" {
			return nil, fmt.Errorf("kind nats needs urls and a subject")
		}
		nc, err := openNATS(name, b.URLs, b.CredentialsFile, log)
		if err != nil {
			return nil, err
		}
		s.conns = append(s.conns, nc)
		add(strings.Join(b.URLs, ","), &natsBackend{nc: nc, subject: b.Subject}, natsCheck(nc))
	default:
		return nil, fmt.Errorf("unknown kind %q", b.Kind)
	}
	return p, nil
}

// Pool returns the named backend.
func (s *Set) Pool(name string) (*Pool, bool) {
	p, ok := s.pools[name]
	return p, ok
}

// Reset closes every breaker of the named backend (the admin's "reset").
func (s *Set) Reset(name string) error {
	p, ok := s.pools[name]
	if !ok {
		return fmt.Errorf("reset %q: %w", name, ErrUnknownBackend)
	}
	p.reset()
	p.log.Info("breakers reset")
	return nil
}

// Close stops the health checks and waits for them, then releases the
// transports' idle connections and the NATS connections. Call it after a
// reload swap, once in-flight calls have ended. It is idempotent.
func (s *Set) Close() {
	s.closeOnce.Do(func() {
		s.stop()
		s.wg.Wait()
		for _, t := range s.transports {
			t.CloseIdleConnections()
		}
		for _, nc := range s.conns {
			nc.Close()
		}
	})
}

// BackendState is what admin and metrics read of one backend.
type BackendState struct {
	Name          string `json:"name"`
	Kind          string `json:"kind"`
	MaxConcurrent int    `json:"max_concurrent"`
	Inflight      int    `json:"inflight"`
	// Unavailable counts calls answered ErrOpen (every breaker open) or
	// ErrUnhealthy (no endpoint passes its health check).
	Unavailable uint64 `json:"unavailable"`
	// Overloaded counts calls refused by the bulkhead.
	Overloaded uint64          `json:"overloaded"`
	Endpoints  []EndpointState `json:"endpoints"`
}

// EndpointState is one endpoint of a BackendState.
type EndpointState struct {
	// URL through redact.String; NATS URLs are joined by commas.
	URL string `json:"url"`
	// Health is healthy, unhealthy or unchecked (HealthHealthy, …).
	Health string `json:"health"`
	// HealthDetail says why the last check failed (redacted); "" when
	// healthy.
	HealthDetail string `json:"health_detail,omitempty"`
	// HealthChecked is when the last check answered; zero if never.
	HealthChecked time.Time `json:"health_checked,omitzero"`
	// Breaker is "closed", "open" or "half-open" (cooled down: the next
	// call is a probe, or a probe is in flight).
	Breaker   string `json:"breaker"`
	Successes uint64 `json:"successes"`
	Failures  uint64 `json:"failures"`
	// Rejections counts calls this endpoint's open breaker refused.
	Rejections uint64 `json:"rejections"`
	Inflight   int    `json:"inflight"`
	// LatencyP50 and LatencyP99 (ms) are read from the endpoint's call
	// duration histogram (the metrics): calls of the last one to two
	// minutes, canceled ones left out.
	LatencyP50 float64 `json:"latency_p50_ms"`
	LatencyP99 float64 `json:"latency_p99_ms"`
}

// Breaker states of EndpointState.
const (
	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half-open"
)

// Snapshot returns the state of every backend, sorted by name. Counters
// are cumulative since New.
func (s *Set) Snapshot() []BackendState {
	out := make([]BackendState, 0, len(s.names))
	for _, name := range s.names {
		p := s.pools[name]
		bs := BackendState{
			Name:          p.name,
			Kind:          p.kind,
			MaxConcurrent: int(p.max),
			Inflight:      int(p.inflight.Load()),
			Unavailable:   p.openErrs.Load(),
			Overloaded:    p.overloaded.Load(),
			Endpoints:     make([]EndpointState, len(p.eps)),
		}
		for i, e := range p.eps {
			p50, p99 := e.quantiles()
			var checked time.Time
			if ns := e.health.checked.Load(); ns != 0 {
				checked = time.Unix(0, ns)
			}
			detail := ""
			if d := e.health.detail.Load(); d != nil {
				detail = *d
			}
			bs.Endpoints[i] = EndpointState{
				URL:           e.url,
				Health:        e.health.name(),
				HealthDetail:  detail,
				HealthChecked: checked,
				Breaker:       e.state(p),
				Successes:     e.successes.Load(),
				Failures:      e.failures.Load(),
				Rejections:    e.rejections.Load(),
				Inflight:      int(e.inflight.Load()),
				LatencyP50:    p50,
				LatencyP99:    p99,
			}
		}
		out = append(out, bs)
	}
	return out
}

// state names the endpoint's breaker state without touching the breaker.
func (e *endpoint) state(p *Pool) string {
	switch {
	case !e.cb.Tripped():
		return BreakerClosed
	case e.probing.Load(), p.clock.Now().UnixNano()-e.lastFail.Load() > int64(p.cooldown):
		return BreakerHalfOpen
	}
	return BreakerOpen
}

// Healthy returns nil when the named backend has an endpoint that passes
// its health check (or is not checked) and whose breaker is not open;
// else an error saying why (for /readyz on the admin listener).
func (s *Set) Healthy(name string) error {
	p, ok := s.pools[name]
	if !ok {
		return fmt.Errorf("backend %s: %w", name, ErrUnknownBackend)
	}
	var why []string
	for _, e := range p.eps {
		switch {
		case e.health.down():
			d := "failing its health check"
			if dp := e.health.detail.Load(); dp != nil {
				d = *dp
			}
			why = append(why, e.url+": "+d)
		case e.state(p) == BreakerOpen:
			why = append(why, e.url+": breaker open")
		default:
			return nil
		}
	}
	return fmt.Errorf("backend %s has no healthy endpoint: %s", name, strings.Join(why, "; "))
}
