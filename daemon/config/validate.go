package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Validate reports every problem at once, each with its key path.
func (c *Config) Validate() error { return errors.Join(c.problems()...) }

// problems is Validate's list: one error per problem, each starting with
// its key path and ": " (Parse adds the line after the path).
func (c *Config) problems() []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	if _, _, err := net.SplitHostPort(c.Listen.Client); err != nil {
		add("listen.client: %v", err)
	}
	if _, _, err := net.SplitHostPort(c.Listen.Admin); err != nil {
		add("listen.admin: %v", err)
	}
	if c.Listen.ProxyProtocol && len(c.Listen.TrustedProxies) == 0 {
		add("listen.proxy_protocol: needs listen.trusted_proxies (a PROXY header is only read from a trusted proxy)")
	}
	if !strings.HasPrefix(c.WS.Path, "/") {
		add("ws.path: must start with /, got %q", c.WS.Path)
	}
	if c.WS.MaxMessageBytes < 128 || c.WS.MaxMessageBytes > 64<<20 {
		add("ws.max_message_bytes: must be between 128 and 67108864, got %d", c.WS.MaxMessageBytes)
	}
	if c.WS.HandshakeTimeout <= 0 {
		add("ws.handshake_timeout: must be positive")
	}
	if c.WS.Heartbeat.D() < 100e6 {
		add("ws.heartbeat: must be at least 100ms, got %s", c.WS.Heartbeat)
	}
	if c.WS.OutboundQueueBytes < c.WS.MaxMessageBytes {
		add("ws.outbound_queue_bytes: must be at least ws.max_message_bytes (%d), got %d", c.WS.MaxMessageBytes, c.WS.OutboundQueueBytes)
	}
	if c.WS.Workers < 0 {
		add("ws.workers: must not be negative")
	}
	if c.Limits.MaxConnections <= 0 {
		add("limits.max_connections: must be positive")
	}
	if c.Limits.PerIPConnections < 0 {
		add("limits.per_ip_connections: must not be negative")
	}
	if c.Limits.HandshakeRate < 0 {
		add("limits.handshake_rate: must not be negative")
	}
	if c.Limits.MaxInflight <= 0 {
		add("limits.max_inflight: must be positive")
	}
	if c.Limits.SessionInflight <= 0 {
		add("limits.session_inflight: must be positive")
	}
	if c.Limits.SessionRate <= 0 {
		add("limits.session_rate: must be positive")
	}
	if c.Limits.SessionBurst <= 0 {
		add("limits.session_burst: must be positive")
	}

	for _, a := range c.Auth.JWT.Algorithms {
		switch a {
		case "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA":
		default:
			add("auth.jwt.algorithms: unsupported algorithm %q", a)
		}
	}
	if !c.Auth.Anonymous {
		if len(c.Auth.JWT.Algorithms) == 0 {
			add("auth.jwt.algorithms: at least one algorithm is needed unless auth.anonymous is true")
		}
		hasHS := false
		for _, a := range c.Auth.JWT.Algorithms {
			if strings.HasPrefix(a, "HS") {
				hasHS = true
			}
		}
		if hasHS && c.Auth.JWT.Secret == "" {
			add("auth.jwt.secret_env: HMAC algorithms are configured but the variable %q is empty or unset", c.Auth.JWT.SecretEnv)
		}
		if hasHS && c.Auth.JWT.Secret != "" && len(c.Auth.JWT.Secret) < 32 {
			add("auth.jwt.secret_env: the HMAC key in %q must be at least 32 bytes", c.Auth.JWT.SecretEnv)
		}
		hasPK := false
		for _, a := range c.Auth.JWT.Algorithms {
			if !strings.HasPrefix(a, "HS") {
				hasPK = true
			}
		}
		if hasPK && c.Auth.JWT.KeysFile == "" && c.Auth.JWT.JWKSURL == "" {
			add("auth.jwt: public-key algorithms need auth.jwt.keys_file or auth.jwt.jwks_url")
		}
	}
	if c.Auth.JWT.JWKSURL != "" {
		if u, err := url.Parse(c.Auth.JWT.JWKSURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			add("auth.jwt.jwks_url: must be an http(s) URL, got %q", c.Auth.JWT.JWKSURL)
		}
	}
	if c.Auth.JWT.Leeway < 0 {
		add("auth.jwt.leeway: must not be negative")
	}

	switch c.Sessions.Store {
	case "memory":
	case "redis":
		if err := CheckRedisURL(c.Sessions.RedisURL); err != nil {
			add("sessions.redis_url: %v", err)
		}
		t := c.Sessions.RedisTLS
		if (t != RedisTLS{}) && !strings.HasPrefix(c.Sessions.RedisURL, "rediss://") {
			add("sessions.redis_tls: set, but sessions.redis_url is not a rediss:// URL")
		}
		if (t.CertFile == "") != (t.KeyFile == "") {
			add("sessions.redis_tls: cert_file and key_file go together")
		}
		switch c.Sessions.Bus {
		case "redis":
		case "nats":
			if len(c.Sessions.NatsURLs) == 0 {
				add("sessions.nats_urls: must list at least one server with sessions.bus: nats")
			}
			for i, u := range c.Sessions.NatsURLs {
				if err := checkNatsURL(u); err != nil {
					add("sessions.nats_urls[%d]: %v", i, err)
				}
			}
		default:
			add("sessions.bus: must be redis or nats, got %q", c.Sessions.Bus)
		}
	default:
		add("sessions.store: must be memory or redis, got %q", c.Sessions.Store)
	}
	if c.Sessions.TTL.D() < 1e9 {
		add("sessions.ttl: must be at least 1s")
	}
	if c.Sessions.OutboxMax <= 0 {
		add("sessions.outbox_max: must be positive")
	}
	if c.Sessions.HistoryMaxTurns <= 0 {
		add("sessions.history_max_turns: must be positive")
	}
	if c.Sessions.ReplayMax <= 0 {
		add("sessions.replay_max: must be positive")
	}
	if c.Sessions.ReplayBytes < 1024 {
		add("sessions.replay_bytes: must be at least 1024")
	}
	if c.Sessions.MemoryBudgetBytes < 1<<20 {
		add("sessions.memory_budget_bytes: must be at least 1048576 (1 MiB)")
	}
	if c.Sessions.MemoryBudgetBytes > 0 && c.Sessions.ReplayBytes > c.Sessions.MemoryBudgetBytes {
		add("sessions.replay_bytes: must not exceed sessions.memory_budget_bytes")
	}
	if d := c.Sessions.NodeLossAfter.D(); d < time.Second {
		add("sessions.node_loss_after: must be at least 1s")
	}

	for _, name := range sortedKeys(c.Backends) {
		b := c.Backends[name]
		p := "backends." + name
		switch b.Kind {
		case KindEcho:
			if b.Stream != "" && b.Stream != "words" {
				add("%s.stream: must be words or empty, got %q", p, b.Stream)
			}
		case KindHTTP, KindOpenAI:
			if len(b.Endpoints) == 0 {
				add("%s.endpoints: at least one URL is needed for kind %s", p, b.Kind)
			}
			for i, e := range b.Endpoints {
				if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					add("%s.endpoints[%d]: must be an http(s) URL, got %q", p, i, e)
				}
			}
			if b.Kind == KindOpenAI && b.Model == "" {
				add("%s.model: required for kind openai", p)
			}
		case KindNATS:
			if len(b.URLs) == 0 {
				add("%s.urls: at least one NATS URL is needed", p)
			}
			if b.Subject == "" {
				add("%s.subject: required for kind nats", p)
			}
		case "":
			add("%s.kind: required (echo, http, openai or nats)", p)
		default:
			add("%s.kind: must be echo, http, openai or nats, got %q", p, b.Kind)
		}
		switch b.Balance {
		case "", "round_robin", "least_inflight":
		default:
			add("%s.balance: must be round_robin or least_inflight, got %q", p, b.Balance)
		}
		if b.MaxConcurrent < 0 {
			add("%s.max_concurrent: must not be negative", p)
		}
		if b.Breaker.Failures < 0 {
			add("%s.breaker.failures: must not be negative", p)
		}
		if b.Breaker.Rate < 0 || b.Breaker.Rate > 1 {
			add("%s.breaker.rate: must be between 0 and 1", p)
		}
		if b.Health.Interval < 0 || b.Health.Timeout < 0 {
			add("%s.health: interval and timeout must not be negative", p)
		}
		if b.Health.Path != "" {
			if b.Kind != KindHTTP {
				add("%s.health.path: only the http kind has a health path (openai checks <base>/models, nats its connection)", p)
			} else if u, err := url.Parse(b.Health.Path); err != nil || u.Scheme != "" || u.Host != "" {
				add("%s.health.path: must be a path such as /healthz, got %q", p, b.Health.Path)
			}
		}
	}
	for i, name := range c.Readiness.Backends {
		if _, ok := c.Backends[name]; !ok {
			add("readiness.backends[%d]: unknown backend %q", i, name)
		}
	}
	for _, name := range sortedKeys(c.Routes) {
		r := c.Routes[name]
		p := "routes." + name
		switch name {
		case "ping", "cancel":
			add("%s: %q is a built-in message type and cannot be a route", p, name)
		}
		if !validType(name) {
			add("%s: a route name must be 1 to 64 characters of [A-Za-z0-9_.-]", p)
		}
		if r.Backend == "" {
			add("%s.backend: required", p)
		} else if _, ok := c.Backends[r.Backend]; !ok {
			add("%s.backend: unknown backend %q", p, r.Backend)
		}
		if r.Fallback != "" {
			if _, ok := c.Backends[r.Fallback]; !ok {
				add("%s.fallback: unknown backend %q", p, r.Fallback)
			} else if r.Fallback == r.Backend {
				add("%s.fallback: must differ from the route's backend", p)
			}
		}
		if r.Timeout < 0 || r.FirstChunkTimeout < 0 || r.IdleTimeout < 0 {
			add("%s: timeouts must not be negative", p)
		}
	}
	if c.Drain.LBGrace < 0 {
		add("drain.lb_grace: must not be negative")
	}
	if c.Drain.Timeout <= 0 {
		add("drain.timeout: must be positive")
	}
	if !IsLoopback(c.Listen.Admin) && c.Admin.Password == "" {
		add("admin.password_env: listen.admin %q is not a loopback address, so admin credentials are required: set %s", c.Listen.Admin, c.Admin.PasswordEnv)
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		add("log.level: must be debug, info, warn or error, got %q", c.Log.Level)
	}
	if g := c.Runtime.GCPercent; g != 0 && (g < 10 || g > 1000) {
		add("runtime.gc_percent: must be 0 (the Go runtime's own: GOGC, else 100) or 10 to 1000, got %d", g)
	}
	return errs
}

// IsLoopback reports whether addr (host:port) binds only loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func validType(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
