package backends

import (
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
)

// Set is every configured backend, built at once from the config. A reload
// builds a new Set and swaps it; the old one is closed once its in-flight
// calls have ended. Its pools are fixed after New.
type Set struct {
	pools map[string]*Pool
	names []string // sorted

	transports []*http.Transport
	conns      []*nats.Conn
	closeOnce  sync.Once
}

// New builds a pool for every backend of cfg. env resolves the environment
// variables named by headers and api_key_env. A NATS server that is down is
// not an error (the client reconnects in the background); a config the
// package cannot use is.
func New(cfg map[string]config.Backend, env func(string) (string, bool), log *slog.Logger) (*Set, error) {
	return newSet(cfg, env, log, clock.New())
}

// newSet is New with the breakers' clock given (tests use a mock).
func newSet(cfg map[string]config.Backend, env func(string) (string, bool), log *slog.Logger, clk clock.Clock) (*Set, error) {
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	s := &Set{pools: make(map[string]*Pool, len(cfg))}
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
	return s, nil
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
	p := &Pool{
		name:     name,
		kind:     b.Kind,
		least:    b.Balance == balanceLeastInflight,
		max:      int64(b.MaxConcurrent),
		clock:    clk,
		cooldown: b.Breaker.Cooldown.D(),
		log:      log.With(slog.String("backend", name)),
	}
	add := func(u string, be Backend) {
		p.eps = append(p.eps, &endpoint{
			url:     u,
			backend: be,
			cb:      newBreaker(b.Breaker.Failures, b.Breaker.Rate, b.Breaker.MinSamples, b.Breaker.Cooldown.D(), clk),
		})
	}
	switch b.Kind {
	case config.KindEcho:
		add("echo:", echoBackend{delay: b.Delay.D(), stream: b.Stream})
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
				add(u.Redacted(), &httpBackend{url: raw, client: client, headers: headers})
				continue
			}
			add(u.Redacted(), &openaiBackend{
				url:     strings.TrimSuffix(raw, "/") + "/chat/completions",
				client:  client,
				headers: headers,
				model:   b.Model,
				system:  b.SystemPrompt,
			})
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
		shown := make([]string, len(b.URLs))
		for i, raw := range b.URLs {
			shown[i] = raw
			if u, err := url.Parse(raw); err == nil {
				shown[i] = u.Redacted()
			}
		}
		add(strings.Join(shown, ","), &natsBackend{nc: nc, subject: b.Subject})
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

// Close releases the transports' idle connections and the NATS
// connections. Call it after a reload swap, once in-flight calls have
// ended. It is idempotent.
func (s *Set) Close() {
	s.closeOnce.Do(func() {
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
	// Unavailable counts calls answered ErrOpen (every breaker open).
	Unavailable uint64 `json:"unavailable"`
	// Overloaded counts calls refused by the bulkhead.
	Overloaded uint64          `json:"overloaded"`
	Endpoints  []EndpointState `json:"endpoints"`
}

// EndpointState is one endpoint of a BackendState.
type EndpointState struct {
	// URL with credentials redacted; NATS URLs are joined by commas.
	URL string `json:"url"`
	// Breaker is "closed", "open" or "half-open" (cooled down: the next
	// call is a probe, or a probe is in flight).
	Breaker   string `json:"breaker"`
	Successes uint64 `json:"successes"`
	Failures  uint64 `json:"failures"`
	// Rejections counts calls this endpoint's open breaker refused.
	Rejections uint64  `json:"rejections"`
	Inflight   int     `json:"inflight"`
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
			p50, p99 := e.lat.quantiles()
			bs.Endpoints[i] = EndpointState{
				URL:        e.url,
				Breaker:    e.state(p),
				Successes:  e.successes.Load(),
				Failures:   e.failures.Load(),
				Rejections: e.rejections.Load(),
				Inflight:   int(e.inflight.Load()),
				LatencyP50: p50,
				LatencyP99: p99,
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
