package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDemoConfigLoads(t *testing.T) {
	c, err := Load("demo", nil)
	if err != nil {
		t.Fatalf("demo config: %v", err)
	}
	if !c.Auth.Anonymous || c.Sessions.Store != "memory" || c.Routes["echo"].Backend != "echo" || c.Listen.Admin != "127.0.0.1:9090" {
		t.Fatalf("demo config = %+v", c)
	}
	// The demo's streaming route, served in process.
	if b := c.Backends[c.Routes["stream"].Backend]; b.Kind != KindEcho || b.Stream != "words" || b.Delay.D() <= 0 {
		t.Fatalf("demo stream route's backend = %+v, want echo streaming words with a delay", b)
	}
}

// TestContractExample loads the contract's own section 8 example.
func TestContractExample(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "config", "contract.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(b, []string{"ORCH_JWT_SECRET=" + strings.Repeat("k", 32), "ORCH_ADMIN_PASSWORD=x"})
	if err != nil {
		t.Fatalf("contract example: %v", err)
	}
	if got := c.Backends["sql"].Headers["X-Api-Key"].Env; got != "SQL_API_KEY" {
		t.Fatalf("sql header env = %q", got)
	}
	if c.Routes["chat"].FirstChunkTimeout.D() != 20*time.Second || c.Backends["llm"].Breaker.Cooldown.D() != 5*time.Second {
		t.Fatalf("durations not parsed: %+v %+v", c.Routes["chat"], c.Backends["llm"].Breaker)
	}
}

func TestEnvOverrides(t *testing.T) {
	c, err := Parse(DemoYAML(), []string{
		"ORCH_WS_HEARTBEAT=10s",
		"ORCH_ROUTES_ECHO_TIMEOUT=7s",
		"ORCH_LIMITS_SESSION_RATE=2.5",
		"ORCH_WS_ALLOWED_ORIGINS=https://a.example, https://b.example",
		"ORCH_AUTH_ANONYMOUS=true",
		"ORCH_NODE=edge-9",
		"ORCH_RUNTIME_GC_PERCENT=80",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.WS.Heartbeat.D() != 10*time.Second || c.Routes["echo"].Timeout.D() != 7*time.Second || c.Limits.SessionRate != 2.5 ||
		len(c.WS.AllowedOrigins) != 2 || c.WS.AllowedOrigins[1] != "https://b.example" || c.Node != "edge-9" || c.Runtime.GCPercent != 80 {
		t.Fatalf("overrides not applied: %+v", c)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  []string
		want []string // substrings of the error
		not  []string // must not appear (Go type names)
	}{
		{"unknown key names key and line", "ws:\n  path: /ws\n  bogus: 1\n", nil, []string{"ws.bogus: line 3: unknown key", "known keys here: allowed_origins"}, nil},
		{"unknown top-level key", "nope: 1\n", nil, []string{"nope: line 1: unknown key"}, nil},
		{"unknown nested key in a map entry", "backends:\n  e:\n    kind: echo\n    endpoint: [x]\n", nil, []string{"backends.e.endpoint: line 4: unknown key"}, nil},
		{"bare number duration", "ws:\n  heartbeat: 25\n", nil, []string{"ws.heartbeat: line 2: 25 has no unit: want a duration like 25s"}, nil},
		{"word duration", "ws:\n  heartbeat: soon\n", nil, []string{`ws.heartbeat: line 2: "soon" is not a duration`}, nil},
		{"duration in a route", "routes:\n  a: {backend: e, timeout: 5}\n", nil, []string{"routes.a.timeout: line 2: 5 has no unit: want a duration like 5s"}, nil},
		{"duration in a breaker", "backends:\n  e:\n    kind: echo\n    breaker: {cooldown: 1.5}\n", nil, []string{"backends.e.breaker.cooldown: line 4: 1.5 has no unit"}, nil},
		{"section given a scalar", "sessions: 5\n", nil, []string{`sessions: line 1: got "5", want a mapping of keys`}, []string{"Config.", "mapping is expected"}},
		{"string for an integer", "ws:\n  max_message_bytes: big\n", nil, []string{`ws.max_message_bytes: line 2: got "big", want an integer`}, []string{"Config.WS", "Go struct"}},
		{"string for a number", "limits:\n  session_rate: fast\n", nil, []string{`limits.session_rate: line 2: got "fast", want a number`}, []string{"float64"}},
		{"word for a boolean", "auth:\n  anonymous: maybe\n", nil, []string{`auth.anonymous: line 2: got "maybe", want true or false`}, []string{"Config.Auth"}},
		{"scalar for a list", "ws:\n  allowed_origins: https://a.example\n", nil, []string{"ws.allowed_origins: line 2: got \"https://a.example\", want a list"}, nil},
		{"list for a string", "ws:\n  path: [a]\n", nil, []string{"ws.path: line 2: got a list, want a string"}, []string{"interface"}},
		{"mapping for a string", "node: {a: 1}\n", nil, []string{"node: line 1: got a mapping, want a string"}, []string{"map[string]"}},
		{"list for the backends map", "backends: [1]\n", nil, []string{"backends: line 1: got a list, want a mapping of names"}, nil},
		{"header of the wrong shape", "backends:\n  a:\n    headers: {X: [1]}\n", nil, []string{"backends.a.headers.X: line 3: got a list"}, nil},
		{"unknown tag", "backends:\n  llm:\n    kind: http\n    endpoints: !foo\n", nil, []string{"backends.llm.endpoints: line 4: YAML tag !foo is not supported"}, nil},
		{"alias of the wrong type", "ws: {path: &p /ws}\nsessions: *p\n", nil, []string{`sessions: line 1: got "/ws", want a mapping of keys`}, nil},
		{"alias of a string as a duration", "ws: {path: &p /ws, heartbeat: *p}\n", nil, []string{`ws.heartbeat: line 1: "/ws" is not a duration`}, nil},
		{"merge of a list", "backends:\n  a:\n    <<: [1]\n", nil, []string{`backends.a: line 3: got "1", want a mapping of keys`}, nil},
		{"several type mistakes at once", "ws:\n  heartbeat: 25\n  workers: many\nlimits: {session_burst: x}\n", nil, []string{"ws.heartbeat: line 2", "ws.workers: line 3", "limits.session_burst: line 4"}, nil},
		{"bad env", "", []string{"ORCH_WS_MAX_MESSAGE_BYTES=big"}, []string{"ORCH_WS_MAX_MESSAGE_BYTES", "invalid integer"}, nil},
		{"bad env duration", "", []string{"ORCH_WS_HEARTBEAT=25"}, []string{"ORCH_WS_HEARTBEAT (ws.heartbeat)", "want a duration like"}, nil},
		{"route to unknown backend", "auth: {anonymous: true}\nroutes:\n  x: {backend: nope}\n", nil, []string{`routes.x.backend: line 3: unknown backend "nope"`}, nil},
		{"builtin route name", "auth: {anonymous: true}\nbackends:\n  e: {kind: echo}\nroutes:\n  ping: {backend: e}\n", nil, []string{"routes.ping: line 5: \"ping\" is a built-in"}, nil},
		{"bad kind", "auth: {anonymous: true}\nbackends:\n  e: {kind: grpc}\n", nil, []string{"backends.e.kind: line 3: must be echo, http, openai or nats"}, nil},
		{"echo stream mode", "auth: {anonymous: true}\nbackends:\n  e: {kind: echo, stream: lines}\n", nil, []string{`backends.e.stream: line 3: must be words or empty, got "lines"`}, nil},
		{"http needs endpoints", "auth: {anonymous: true}\nbackends:\n  e: {kind: http}\n", nil, []string{"backends.e.endpoints"}, nil},
		{"bad endpoint names its line", "auth: {anonymous: true}\nbackends:\n  e:\n    kind: http\n    endpoints:\n      - http://ok.example/x\n      - ftp://nope\n", nil, []string{"backends.e.endpoints[1]: line 7: must be an http(s) URL"}, nil},
		{"hs256 needs a secret", "", nil, []string{"auth.jwt.secret_env", "ORCH_JWT_SECRET"}, nil},
		{"short secret", "", []string{"ORCH_JWT_SECRET=short"}, []string{"at least 32 bytes"}, nil},
		{"admin off loopback needs a password", "auth: {anonymous: true}\nlisten: {admin: \"0.0.0.0:9090\"}\n", nil, []string{"admin.password_env", "not a loopback"}, nil},
		{"gc_percent below 10", "auth: {anonymous: true}\nruntime: {gc_percent: 5}\n", nil, []string{"runtime.gc_percent: line 2", "0 (the Go runtime's own", "got 5"}, nil},
		{"gc_percent negative by env", "auth: {anonymous: true}\n", []string{"ORCH_RUNTIME_GC_PERCENT=-1"}, []string{"runtime.gc_percent", "got -1"}, nil},
		{"node_loss_after too short", "auth: {anonymous: true}\nsessions: {node_loss_after: 500ms}\n", nil, []string{"sessions.node_loss_after", "at least 1s"}, nil},
		{"every problem at once", "auth: {anonymous: true}\nws: {path: ws}\nsessions: {store: disk}\n", nil, []string{"ws.path: line 2", "sessions.store: line 3"}, nil},
		{"redis url scheme", "auth: {anonymous: true}\nsessions: {store: redis, redis_url: \"http://x:6379\"}\n", nil, []string{"sessions.redis_url", "redis:// or rediss://"}, nil},
		{"redis url typo", "auth: {anonymous: true}\nsessions: {store: redis, redis_url: \"redis://a:7001?adr=b:7002\"}\n", nil, []string{"sessions.redis_url", `unknown parameter "adr"`}, nil},
		{"redis cluster seed without port", "auth: {anonymous: true}\nsessions: {store: redis, redis_url: \"redis://a:7001?addr=b\"}\n", nil, []string{"sessions.redis_url", `address "b"`}, nil},
		{"redis empty master set", "auth: {anonymous: true}\nsessions: {store: redis, redis_url: \"redis://a:26379?master_set=\"}\n", nil, []string{"parameter master_set: empty"}, nil},
		{"redis tls without rediss", "auth: {anonymous: true}\nsessions: {store: redis, redis_tls: {ca_file: /x}}\n", nil, []string{"sessions.redis_tls", "rediss://"}, nil},
		{"redis tls half a key pair", "auth: {anonymous: true}\nsessions: {store: redis, redis_url: \"rediss://a:6380\", redis_tls: {cert_file: /x}}\n", nil, []string{"cert_file and key_file go together"}, nil},
		{"unknown bus", "auth: {anonymous: true}\nsessions: {store: redis, bus: kafka}\n", nil, []string{"sessions.bus: line 2: ", `must be redis or nats, got "kafka"`}, nil},
		{"nats bus without urls", "auth: {anonymous: true}\nsessions: {store: redis, bus: nats, nats_urls: []}\n", nil, []string{"sessions.nats_urls: line 2: must list"}, nil},
		{"nats bus bad url", "auth: {anonymous: true}\nsessions: {store: redis, bus: nats, nats_urls: [\"http://x:4222\"]}\n", nil, []string{"sessions.nats_urls[0]", "nats://"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), tc.env)
			if err == nil {
				t.Fatalf("Parse accepted %q", tc.yaml)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			for _, n := range append(tc.not, "Go struct", "Config.") {
				if strings.Contains(err.Error(), n) {
					t.Errorf("error %q mentions %q", err, n)
				}
			}
		})
	}
}

// TestValidShapesAccepted: the forms the checker must let through (nulls,
// quoted numbers as strings, anchors and aliases, merge keys, !!str).
func TestValidShapesAccepted(t *testing.T) {
	tests := []struct{ name, yaml string }{
		{"empty value keeps the default", "auth: {anonymous: true}\nws:\n  heartbeat:\n"},
		{"number as a string key", "auth: {anonymous: true}\nnode: 7\n"},
		{"integer for a float", "auth: {anonymous: true}\nlimits: {session_rate: 3}\n"},
		{"anchors and aliases", "auth: {anonymous: true}\nbackends:\n  a: &b {kind: echo}\n  c: *b\n"},
		{"merge key", "auth: {anonymous: true}\nbackends:\n  a: &b {kind: echo}\n  c:\n    <<: *b\n    max_concurrent: 3\n"},
		{"core tag", "auth: {anonymous: true}\nnode: !!str edge-1\n"},
		{"comments only", "# nothing\n"},
		{"gc_percent 0: the runtime's own", "auth: {anonymous: true}\nruntime: {gc_percent: 0}\n"},
		{"gc_percent 1000", "auth: {anonymous: true}\nruntime: {gc_percent: 1000}\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse([]byte(tc.yaml), []string{"ORCH_JWT_SECRET=" + strings.Repeat("k", 32)}); err != nil {
				t.Fatalf("Parse(%q): %v", tc.yaml, err)
			}
		})
	}
}

func TestScaleSessionKeys(t *testing.T) {
	c, err := Parse([]byte(`auth: {anonymous: true}
sessions:
  store: redis
  redis_url: "rediss://10.0.0.1:7001?addr=10.0.0.2:7001&addr=10.0.0.3:7001"
  redis_username_env: REDIS_USER
  redis_password_env: REDIS_PASS
  sentinel_password_env: SENTINEL_PASS
  redis_tls: {ca_file: /etc/redis/ca.pem, cert_file: /etc/redis/c.pem, key_file: /etc/redis/c.key}
  bus: nats
  nats_urls: ["nats://10.0.0.9:4222", "tls://10.0.0.10:4222"]
`), []string{"REDIS_USER=orch", "REDIS_PASS=pw", "SENTINEL_PASS=spw"})
	if err != nil {
		t.Fatal(err)
	}
	s := c.Sessions
	if s.RedisUsername != "orch" || s.RedisPassword != "pw" || s.SentinelPassword != "spw" || s.Bus != "nats" || len(s.NatsURLs) != 2 || s.RedisTLS.KeyFile != "/etc/redis/c.key" {
		t.Fatalf("sessions = %+v", s)
	}
	if out := string(c.JSON()); strings.Contains(out, `"pw"`) || strings.Contains(out, "spw") {
		t.Fatalf("JSON() leaks a Redis password:\n%s", out)
	}
	d, err := Parse([]byte("auth: {anonymous: true}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Sessions.Bus != "redis" || len(d.Sessions.NatsURLs) != 1 || d.Sessions.NatsURLs[0] != "nats://127.0.0.1:4222" {
		t.Fatalf("defaults: bus %q, nats_urls %v", d.Sessions.Bus, d.Sessions.NatsURLs)
	}
	for _, u := range []string{"redis://127.0.0.1:6379/0", "redis://127.0.0.1:7001?addr=127.0.0.1:7002&addr=127.0.0.1:7003",
		"redis://127.0.0.1:26379?addr=127.0.0.1:26380&master_set=mymaster", "rediss://u:p@[::1]:6380/2?skip_verify=true&dial_timeout=2s"} {
		if err := CheckRedisURL(u); err != nil {
			t.Errorf("CheckRedisURL(%q): %v", u, err)
		}
	}
}

func FuzzCheckRedisURL(f *testing.F) {
	for _, s := range []string{"redis://127.0.0.1:6379/0", "redis://a:7001?addr=b:7002&addr=c:7003", "redis://a?master_set=m&addr=b:26379",
		"rediss://u:p@h:1/2?skip_verify", "redis://:0", "redis://h:6379?db=x", "redis://[::1]:1?protocol=2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_ = CheckRedisURL(s) // must not panic
	})
}

func TestHeaderForms(t *testing.T) {
	c, err := Parse([]byte("auth: {anonymous: true}\nbackends:\n  h:\n    kind: http\n    endpoints: [\"http://127.0.0.1:1/x\"]\n    headers: {X-A: {env: FOO}, X-B: literal, X-C: {value: v}}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	h := c.Backends["h"].Headers
	lookup := func(k string) (string, bool) { return map[string]string{"FOO": "from-env"}[k], k == "FOO" }
	if h["X-A"].Resolve(lookup) != "from-env" || h["X-B"].Resolve(lookup) != "literal" || h["X-C"].Resolve(lookup) != "v" {
		t.Fatalf("headers = %+v", h)
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	c, err := Parse(nil, []string{"ORCH_JWT_SECRET=" + strings.Repeat("s", 40), "ORCH_ADMIN_PASSWORD=hunter2"})
	if err != nil {
		t.Fatal(err)
	}
	if out := string(c.JSON()); strings.Contains(out, "sss") || strings.Contains(out, "hunter2") {
		t.Fatalf("JSON() leaks a secret:\n%s", out)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(DemoYAML())
	if b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "config", "contract.yaml")); err == nil {
		f.Add(b)
	}
	f.Add([]byte("ws: {heartbeat: 1s}\n"))
	f.Add([]byte("ws:\n  heartbeat: 25\n  workers: many\nsessions: 5\n"))
	f.Add([]byte("backends:\n  a: &b {kind: echo}\n  c:\n    <<: *b\n"))
	f.Add([]byte("routes:\n  a: [1, 2]\n"))
	f.Add([]byte("&a [*a]"))
	f.Add([]byte("ws: {path: &p /ws, heartbeat: *p}\nsessions: *p\nbackends: {a: &b {kind: echo, breaker: *b}}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b, []string{"ORCH_JWT_SECRET=" + strings.Repeat("k", 32)})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error text")
			}
			// Errors speak YAML keys, never Go types.
			for _, goWord := range []string{"Go struct", "Config.", "interface {}", "map[string]", "reflect"} {
				if strings.Contains(err.Error(), goWord) {
					t.Fatalf("Parse(%q) error names Go types (%q): %v", b, goWord, err)
				}
			}
			return
		}
		// Whatever was accepted validates again and keeps its invariants.
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate: %v", err)
		}
		for name, r := range c.Routes {
			if _, ok := c.Backends[r.Backend]; !ok {
				t.Fatalf("route %s accepted with unknown backend %q", name, r.Backend)
			}
		}
	})
}

// TestDecoderPanicIsAnError pins a fuzz finding: the YAML library panics on
// a tag where a list is expected; Parse must return an error instead.
func TestDecoderPanicIsAnError(t *testing.T) {
	_, err := Parse([]byte("backends:\n  llm:\n    kind: http\n    endpoints: !foo\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "backends.llm.endpoints: line 4") {
		t.Fatalf("Parse = %v, want a decode error", err)
	}
}
