// Package config is the daemon's configuration tree: the YAML keys of the
// wire contract (section 8), their defaults, environment overrides and
// validation. Packages receive their sub-struct by value and never read files
// or the environment themselves.
//
// It imports nothing of the daemon but daemon/redact.
package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/orchestratord/orchestratord/daemon/redact"
)

// Duration is a time.Duration written as a Go duration string ("5s").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String returns the Go duration string of d.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q: want a duration like 5s or 1m30s", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes d as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Config is the whole configuration. Each field's comment gives its default;
// Default holds them all.
//
// The `reload` struct tag says what a reload (SIGHUP) does with a changed
// key: "live" applies it, "restart" keeps the running value and names the
// key as needing a restart. An untagged field inherits its parent's tag,
// and the root's is "restart": a new key is never silently ignored by a
// reload. Tag a field "live" only where the reload really applies it
// (daemon/cmd/orchestratord node.apply).
type Config struct {
	// Node names this replica in welcome messages and logs. Default: hostname.
	Node     string             `yaml:"node" json:"node" reload:"restart"`
	Listen   Listen             `yaml:"listen" json:"listen" reload:"restart"`
	WS       WS                 `yaml:"ws" json:"ws"`
	Limits   Limits             `yaml:"limits" json:"limits" reload:"live"`
	Auth     Auth               `yaml:"auth" json:"auth" reload:"restart"`
	Sessions Sessions           `yaml:"sessions" json:"sessions" reload:"restart"`
	Backends map[string]Backend `yaml:"backends" json:"backends" reload:"live"`
	Routes   map[string]Route   `yaml:"routes" json:"routes" reload:"live"`
	Drain    Drain              `yaml:"drain" json:"drain"`
	Admin    Admin              `yaml:"admin" json:"admin" reload:"restart"`
	Log      Log                `yaml:"log" json:"log"`
	// Readiness adds conditions to /readyz (daemon addition).
	Readiness Readiness `yaml:"readiness" json:"readiness" reload:"live"`
	// Runtime tunes the Go runtime (daemon addition).
	Runtime Runtime `yaml:"runtime" json:"runtime" reload:"live"`
}

// Runtime tunes the Go runtime, applied at start and on every reload.
type Runtime struct {
	// GCPercent is the garbage collector's target (Go's GOGC): a collection
	// starts once the heap has grown by this percentage of the heap live
	// after the previous one. Lower keeps less memory resident (an idle
	// session's RSS) for more frequent collections. 0 leaves the Go
	// runtime's own setting: the GOGC environment variable, else 100.
	// Default 50 (docs/deploy.md, "Go's garbage collector and idle memory").
	GCPercent int `yaml:"gc_percent" json:"gc_percent"`
}

// Readiness configures what /readyz requires besides serving (not
// draining) and a reachable session store.
type Readiness struct {
	// Backends lists backends that must each have at least one endpoint
	// passing its health check with its breaker not open. Default [] (the
	// store only).
	Backends []string `yaml:"backends" json:"backends"`
}

// Listen holds the listener addresses.
type Listen struct {
	// Client is the WebSocket listener. Default ":8080".
	Client string `yaml:"client" json:"client"`
	// Admin is the admin listener. Default "127.0.0.1:9090".
	Admin string `yaml:"admin" json:"admin"`
	// ReusePort sets SO_REUSEPORT on the client listener so several daemon
	// processes can share one port. Default false.
	ReusePort bool `yaml:"reuse_port" json:"reuse_port"`
	// TrustedProxies lists the proxies (CIDRs or single addresses) whose
	// report of the client's address is believed: the PROXY header with
	// ProxyProtocol, else X-Forwarded-For / X-Real-IP. Default none: the TCP
	// peer is the client.
	TrustedProxies []CIDR `yaml:"trusted_proxies" json:"trusted_proxies"`
	// ProxyProtocol expects a PROXY protocol v1 or v2 header first on every
	// connection from a trusted proxy (and closes one without it);
	// X-Forwarded-For is then ignored. Default false.
	ProxyProtocol bool `yaml:"proxy_protocol" json:"proxy_protocol"`
}

// WS configures the WebSocket engine.
type WS struct {
	// Path is the upgrade path. Default "/ws".
	Path string `yaml:"path" json:"path"`
	// MaxMessageBytes bounds one message; larger closes 1009. Default 65536.
	MaxMessageBytes int `yaml:"max_message_bytes" json:"max_message_bytes"`
	// HandshakeTimeout bounds the whole HTTP upgrade. Default 5s.
	HandshakeTimeout Duration `yaml:"handshake_timeout" json:"handshake_timeout"`
	// Heartbeat is the server ping interval; a peer silent for 2x is closed.
	// Default 25s.
	Heartbeat Duration `yaml:"heartbeat" json:"heartbeat"`
	// OutboundQueueBytes bounds a connection's unsent bytes; over it the
	// connection closes 4008. Default 1048576.
	OutboundQueueBytes int `yaml:"outbound_queue_bytes" json:"outbound_queue_bytes"`
	// AllowedOrigins lists the accepted Origin values; empty accepts any.
	AllowedOrigins []string `yaml:"allowed_origins" json:"allowed_origins" reload:"live"`
	// Workers is the size of the poller's worker pool. Default 0: GOMAXPROCS*4.
	Workers int `yaml:"workers" json:"workers"`
	// DemoPage serves the demo chat page at / on the client listener.
	// Default false (the demo config turns it on).
	DemoPage bool `yaml:"demo_page" json:"demo_page"`
}

// Limits are the admission limits.
type Limits struct {
	// MaxConnections is the node-wide connection cap (503 over it). Default 1000000.
	MaxConnections int `yaml:"max_connections" json:"max_connections"`
	// PerIPConnections caps connections per source address (429); 0: no limit.
	PerIPConnections int `yaml:"per_ip_connections" json:"per_ip_connections"`
	// HandshakeRate is handshakes per second per source address (429); 0: no limit.
	HandshakeRate float64 `yaml:"handshake_rate" json:"handshake_rate"`
	// HandshakeBurst is the burst of HandshakeRate. Default 0: 2x the rate.
	HandshakeBurst int `yaml:"handshake_burst" json:"handshake_burst"`
	// MaxInflight caps requests in flight on the node. Default 10000.
	MaxInflight int `yaml:"max_inflight" json:"max_inflight"`
	// SessionInflight caps requests in flight per session. Default 16.
	SessionInflight int `yaml:"session_inflight" json:"session_inflight"`
	// SessionRate is messages per second per session. Default 50.
	SessionRate float64 `yaml:"session_rate" json:"session_rate"`
	// SessionBurst is the burst of SessionRate. Default 100.
	SessionBurst int `yaml:"session_burst" json:"session_burst"`
}

// Auth configures handshake authentication.
type Auth struct {
	// Anonymous lets clients in without a token as user "anonymous"; only
	// for local demos. Default false.
	Anonymous bool `yaml:"anonymous" json:"anonymous"`
	JWT       JWT  `yaml:"jwt" json:"jwt"`
	// AllowExpiredConnections lets established connections outlive their
	// token's exp instead of closing them with 4001. Default false.
	AllowExpiredConnections bool `yaml:"allow_expired_connections" json:"allow_expired_connections"`
}

// JWT configures token verification.
type JWT struct {
	// Algorithms accepted. Default [HS256]. "none" is never accepted.
	Algorithms []string `yaml:"algorithms" json:"algorithms"`
	// SecretEnv names the environment variable holding the HS256 key.
	// Default "ORCH_JWT_SECRET".
	SecretEnv string `yaml:"secret_env" json:"secret_env"`
	// Secret is the HS256 key resolved from SecretEnv at load time. It is
	// never read from YAML.
	Secret string `yaml:"-" json:"-"`
	// KeysFile is a PEM file of public keys or a JWKS file. Default "".
	KeysFile string `yaml:"keys_file" json:"keys_file"`
	// JWKSURL is fetched and refreshed in the background. Default "".
	JWKSURL string `yaml:"jwks_url" json:"jwks_url"`
	// JWKSRefresh is the JWKS refresh interval. Default 5m.
	JWKSRefresh Duration `yaml:"jwks_refresh" json:"jwks_refresh"`
	// Issuer is checked against iss when set. Default "".
	Issuer string `yaml:"issuer" json:"issuer"`
	// Audience is checked against aud when set. Default "".
	Audience string `yaml:"audience" json:"audience"`
	// Leeway tolerated on exp and nbf. Default 30s.
	Leeway Duration `yaml:"leeway" json:"leeway"`
	// QueryParam is the query parameter carrying the token. Default "token".
	QueryParam string `yaml:"query_param" json:"query_param"`
	// Cookie is the cookie carrying the token; "" disables it. Default "".
	Cookie string `yaml:"cookie" json:"cookie"`
}

// Sessions configures the session store.
type Sessions struct {
	// Store is "memory" or "redis". Default "memory".
	Store string `yaml:"store" json:"store"`
	// RedisURL locates Redis for the redis store and the bus. Default
	// "redis://127.0.0.1:6379/0". rueidis URL forms: rediss:// for TLS;
	// repeat addr=host:port for a Cluster's seed addresses (the slots are
	// discovered); master_set=NAME makes the addresses Sentinels'.
	RedisURL string `yaml:"redis_url" json:"redis_url"`
	// RedisUsernameEnv names the variable holding the Redis ACL user
	// (overrides a user in the URL). Default "".
	RedisUsernameEnv string `yaml:"redis_username_env" json:"redis_username_env"`
	// RedisPasswordEnv names the variable holding the Redis password
	// (overrides one in the URL). Default "".
	RedisPasswordEnv string `yaml:"redis_password_env" json:"redis_password_env"`
	// RedisUsername and RedisPassword are resolved from the *_env keys at
	// load time; never from YAML.
	RedisUsername string `yaml:"-" json:"-"`
	RedisPassword string `yaml:"-" json:"-"`
	// SentinelUsernameEnv / SentinelPasswordEnv name the variables holding
	// the Sentinels' own ACL user and password (master_set URLs). Default "".
	SentinelUsernameEnv string `yaml:"sentinel_username_env" json:"sentinel_username_env"`
	SentinelPasswordEnv string `yaml:"sentinel_password_env" json:"sentinel_password_env"`
	SentinelUsername    string `yaml:"-" json:"-"`
	SentinelPassword    string `yaml:"-" json:"-"`
	// RedisTLS adds a CA and a client certificate to rediss:// URLs.
	RedisTLS RedisTLS `yaml:"redis_tls" json:"redis_tls"`
	// Bus carries the relay between replicas (takeover, live resume,
	// pokes): "redis" (pub/sub on the store's Redis; sharded pub/sub on a
	// Cluster) or "nats" (core NATS subjects on NatsURLs). Default "redis".
	Bus string `yaml:"bus" json:"bus"`
	// NatsURLs are the NATS servers of bus: nats. Default
	// ["nats://127.0.0.1:4222"].
	NatsURLs []string `yaml:"nats_urls" json:"nats_urls"`
	// TTL of session state, refreshed by activity. Default 24h.
	TTL Duration `yaml:"ttl" json:"ttl"`
	// OutboxMax bounds the messages kept for a detached session. Default 100.
	OutboxMax int `yaml:"outbox_max" json:"outbox_max"`
	// HistoryMaxTurns bounds the chat history. Default 20.
	HistoryMaxTurns int `yaml:"history_max_turns" json:"history_max_turns"`
	// ReplayMax bounds the terminals kept in a session's replay log (v1.1).
	// Default 100.
	ReplayMax int `yaml:"replay_max" json:"replay_max"`
	// ReplayBytes bounds the bytes of a session's replay log (v1.1); the
	// newest terminal is always kept, even when larger. Default 1 MiB.
	ReplayBytes int64 `yaml:"replay_bytes" json:"replay_bytes"`
	// MemoryBudgetBytes bounds what the node holds in process memory for
	// sessions: replay logs and history of the memory store, terminals
	// waiting for an unavailable store (v1.1). Past it the oldest detached
	// sessions' logs are trimmed first. Default 256 MiB.
	MemoryBudgetBytes int64 `yaml:"memory_budget_bytes" json:"memory_budget_bytes"`
	// NodeLossAfter is how long a replica may be silent before its
	// requests in flight end with node_lost (v1.1). Default 10s.
	NodeLossAfter Duration `yaml:"node_loss_after" json:"node_loss_after"`
}

// RedisTLS is the TLS material for a rediss:// sessions.redis_url; empty
// fields use the system roots and no client certificate.
type RedisTLS struct {
	// CAFile is a PEM bundle of the CAs that sign the servers' certificates.
	CAFile string `yaml:"ca_file" json:"ca_file"`
	// CertFile and KeyFile are the client certificate and key (PEM), for
	// servers with tls-auth-clients yes.
	CertFile string `yaml:"cert_file" json:"cert_file"`
	KeyFile  string `yaml:"key_file" json:"key_file"`
	// ServerName overrides the name checked in the servers' certificates.
	ServerName string `yaml:"server_name" json:"server_name"`
}

// Header is a static header value, literal or from an environment variable.
type Header struct {
	// Value is the literal value.
	Value string `yaml:"value" json:"value,omitempty"`
	// Env names an environment variable holding the value.
	Env string `yaml:"env" json:"env,omitempty"`
}

// Breaker configures an endpoint's circuit breaker.
type Breaker struct {
	// Failures opens the breaker after this many consecutive failures.
	// Default 5.
	Failures int `yaml:"failures" json:"failures"`
	// Rate opens the breaker when the failure rate over at least MinSamples
	// calls reaches it (0..1); 0 uses Failures only. Default 0.
	Rate float64 `yaml:"rate" json:"rate"`
	// MinSamples is the smallest sample for Rate. Default 20.
	MinSamples int `yaml:"min_samples" json:"min_samples"`
	// Cooldown before a half-open probe. Default 5s.
	Cooldown Duration `yaml:"cooldown" json:"cooldown"`
}

// Backend configures one backend pool. Which keys apply depends on Kind.
type Backend struct {
	// Kind is echo, http, openai or nats.
	Kind string `yaml:"kind" json:"kind"`
	// Endpoints are URLs (http: the POST URL; openai: the base URL).
	Endpoints []string `yaml:"endpoints" json:"endpoints,omitempty"`
	// Balance is "round_robin" or "least_inflight". Default "round_robin".
	Balance string `yaml:"balance" json:"balance,omitempty"`
	// Headers are static headers (http, openai).
	Headers map[string]Header `yaml:"headers" json:"headers,omitempty"`
	// Model (openai).
	Model string `yaml:"model" json:"model,omitempty"`
	// APIKeyEnv names the variable holding the API key (openai).
	APIKeyEnv string `yaml:"api_key_env" json:"api_key_env,omitempty"`
	// SystemPrompt (openai).
	SystemPrompt string `yaml:"system_prompt" json:"system_prompt,omitempty"`
	// URLs of NATS servers (nats).
	URLs []string `yaml:"urls" json:"urls,omitempty"`
	// Subject (nats); may contain {type}.
	Subject string `yaml:"subject" json:"subject,omitempty"`
	// CredentialsFile for NATS (nats). Default "".
	CredentialsFile string `yaml:"credentials_file" json:"credentials_file,omitempty"`
	// MaxConcurrent is the bulkhead: calls in flight; above it "overloaded".
	// Default 256.
	MaxConcurrent int     `yaml:"max_concurrent" json:"max_concurrent,omitempty"`
	Breaker       Breaker `yaml:"breaker" json:"breaker"`
	// Delay makes the echo kind wait before answering (tests, demos).
	// Default 0.
	Delay Duration `yaml:"delay" json:"delay,omitempty"`
	// Stream makes the echo kind stream the text back: "words" sends one
	// chunk per word ({"text":"word "}), waiting Delay before each, then the
	// result. Default "" (no chunks).
	Stream string `yaml:"stream" json:"stream,omitempty"`
	// Health configures the active health check of each endpoint.
	Health Health `yaml:"health" json:"health"`
}

// Health configures a backend's active endpoint check (contract v1.1): http
// GETs Path (or, without one, opens a TCP connection), openai GETs
// <base>/models, nats reads the connection state. echo is not checked.
type Health struct {
	// Interval between two checks of an endpoint. Default 10s.
	Interval Duration `yaml:"interval" json:"interval"`
	// Path (http) is resolved against the endpoint URL ("/healthz"
	// replaces its path); a 2xx answer is healthy. Default "": a TCP
	// connect check.
	Path string `yaml:"path" json:"path,omitempty"`
	// Timeout of one check. Default 2s. The checks of an endpoint never
	// overlap: a slow one delays the next.
	Timeout Duration `yaml:"timeout" json:"timeout"`
}

// Route maps a message type to a backend.
type Route struct {
	// Backend names the backend. Required.
	Backend string `yaml:"backend" json:"backend"`
	// Timeout is the total deadline. Default 30s.
	Timeout Duration `yaml:"timeout" json:"timeout"`
	// FirstChunkTimeout bounds the time to the first chunk or result; 0
	// disables it. Default 0.
	FirstChunkTimeout Duration `yaml:"first_chunk_timeout" json:"first_chunk_timeout"`
	// IdleTimeout bounds the gap between two chunks; 0 disables it. Default 0.
	IdleTimeout Duration `yaml:"idle_timeout" json:"idle_timeout"`
	// Fallback names the backend used when every endpoint's breaker is open.
	// Default "" (none).
	Fallback string `yaml:"fallback" json:"fallback"`
	// RetryOnNodeLoss runs a request whose replica crashed again on a
	// survivor (a restart notice, then chunks from seq 0 and its terminal)
	// instead of ending it with node_lost (contract v1.1 section 4a; Redis
	// store; not for the inline echo). The request's data is kept in the
	// store while it runs. Default false.
	RetryOnNodeLoss bool `yaml:"retry_on_node_loss" json:"retry_on_node_loss"`
}

// Drain configures graceful shutdown.
type Drain struct {
	// LBGrace keeps the listener open after readiness fails. Default 5s.
	LBGrace Duration `yaml:"lb_grace" json:"lb_grace" reload:"live"`
	// Timeout bounds the wait for requests in flight. Default 30s.
	Timeout Duration `yaml:"timeout" json:"timeout" reload:"live"`
	// ReconnectAfter is the after_ms hint of reconnect messages. Default 1s.
	ReconnectAfter Duration `yaml:"reconnect_after" json:"reconnect_after"`
}

// Admin configures the admin listener's credentials.
type Admin struct {
	// User for basic auth. Default "admin".
	User string `yaml:"user" json:"user"`
	// PasswordEnv names the variable holding the password. Default
	// "ORCH_ADMIN_PASSWORD".
	PasswordEnv string `yaml:"password_env" json:"password_env"`
	// Password is resolved from PasswordEnv at load time; never from YAML.
	Password string `yaml:"-" json:"-"`
	// MetricsPublic serves /metrics without credentials even off loopback.
	// Default true.
	MetricsPublic bool `yaml:"metrics_public" json:"metrics_public"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error. Default "info".
	Level string `yaml:"level" json:"level" reload:"live"`
	// Requests writes one access line per request at info (route,
	// backend, outcome, duration, bytes, trace id). Default false.
	Requests bool `yaml:"requests" json:"requests" reload:"live"`
}

// Backend kinds.
const (
	KindEcho   = "echo"
	KindHTTP   = "http"
	KindOpenAI = "openai"
	KindNATS   = "nats"
)

// Default returns the configuration with every default filled in: the one
// home of defaults.
func Default() Config {
	return Config{
		Node:   "",
		Listen: Listen{Client: ":8080", Admin: "127.0.0.1:9090"},
		WS: WS{
			Path:               "/ws",
			MaxMessageBytes:    65536,
			HandshakeTimeout:   Duration(5 * time.Second),
			Heartbeat:          Duration(25 * time.Second),
			OutboundQueueBytes: 1 << 20,
		},
		Limits: Limits{
			MaxConnections:  1000000,
			MaxInflight:     10000,
			SessionInflight: 16,
			SessionRate:     50,
			SessionBurst:    100,
		},
		Auth: Auth{
			JWT: JWT{
				Algorithms:  []string{"HS256"},
				SecretEnv:   "ORCH_JWT_SECRET",
				JWKSRefresh: Duration(5 * time.Minute),
				Leeway:      Duration(30 * time.Second),
				QueryParam:  "token",
			},
		},
		Sessions: Sessions{
			Store:             "memory",
			RedisURL:          "redis://127.0.0.1:6379/0",
			Bus:               "redis",
			NatsURLs:          []string{"nats://127.0.0.1:4222"},
			TTL:               Duration(24 * time.Hour),
			OutboxMax:         100,
			HistoryMaxTurns:   20,
			ReplayMax:         100,
			ReplayBytes:       1 << 20,
			MemoryBudgetBytes: 256 << 20,
			NodeLossAfter:     Duration(10 * time.Second),
		},
		Backends: map[string]Backend{},
		Routes:   map[string]Route{},
		Drain: Drain{
			LBGrace:        Duration(5 * time.Second),
			Timeout:        Duration(30 * time.Second),
			ReconnectAfter: Duration(time.Second),
		},
		Admin:   Admin{User: "admin", PasswordEnv: "ORCH_ADMIN_PASSWORD", MetricsPublic: true},
		Log:     Log{Level: "info"},
		Runtime: Runtime{GCPercent: 50},
	}
}

// backendDefaults fills the per-backend defaults.
func backendDefaults(b Backend) Backend {
	if b.Balance == "" {
		b.Balance = "round_robin"
	}
	if b.MaxConcurrent == 0 {
		b.MaxConcurrent = 256
	}
	if b.Breaker.Failures == 0 {
		b.Breaker.Failures = 5
	}
	if b.Breaker.MinSamples == 0 {
		b.Breaker.MinSamples = 20
	}
	if b.Breaker.Cooldown == 0 {
		b.Breaker.Cooldown = Duration(5 * time.Second)
	}
	if b.Health.Interval == 0 {
		b.Health.Interval = Duration(10 * time.Second)
	}
	if b.Health.Timeout == 0 {
		b.Health.Timeout = Duration(2 * time.Second)
	}
	return b
}

// routeDefaults fills the per-route defaults.
func routeDefaults(r Route) Route {
	if r.Timeout == 0 {
		r.Timeout = Duration(30 * time.Second)
	}
	return r
}

// JSON returns the configuration as indented JSON with secrets left out:
// resolved secrets are not serialised at all, and every string goes
// through redact.String (URL passwords and query values masked).
func (c Config) JSON() []byte {
	raw, err := json.Marshal(c)
	if err != nil {
		return nil
	}
	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		return nil
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(redactTree(tree)); err != nil {
		return nil
	}
	return bytes.TrimRight(out.Bytes(), "\n")
}

// redactTree applies redact.String to every string of a decoded JSON
// value (map keys included: header names and backend names are keys).
func redactTree(v any) any {
	switch x := v.(type) {
	case string:
		return redact.String(x)
	case []any:
		for i := range x {
			x[i] = redactTree(x[i])
		}
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[redact.String(k)] = redactTree(e)
		}
		return out
	}
	return v
}
