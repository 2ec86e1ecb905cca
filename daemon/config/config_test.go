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
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.WS.Heartbeat.D() != 10*time.Second || c.Routes["echo"].Timeout.D() != 7*time.Second || c.Limits.SessionRate != 2.5 ||
		len(c.WS.AllowedOrigins) != 2 || c.WS.AllowedOrigins[1] != "https://b.example" || c.Node != "edge-9" {
		t.Fatalf("overrides not applied: %+v", c)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  []string
		want []string // substrings of the error
	}{
		{"unknown key names key and line", "ws:\n  path: /ws\n  bogus: 1\n", nil, []string{`[3:3] unknown field "bogus"`}},
		{"unknown top-level key", "nope: 1\n", nil, []string{`unknown field "nope"`}},
		{"bad duration", "ws:\n  heartbeat: soon\n", nil, []string{"invalid duration", "soon"}},
		{"bad env", "", []string{"ORCH_WS_MAX_MESSAGE_BYTES=big"}, []string{"ORCH_WS_MAX_MESSAGE_BYTES", "invalid integer"}},
		{"route to unknown backend", "auth: {anonymous: true}\nroutes:\n  x: {backend: nope}\n", nil, []string{`routes.x.backend: unknown backend "nope"`}},
		{"builtin route name", "auth: {anonymous: true}\nbackends:\n  e: {kind: echo}\nroutes:\n  ping: {backend: e}\n", nil, []string{"routes.ping: \"ping\" is a built-in"}},
		{"bad kind", "auth: {anonymous: true}\nbackends:\n  e: {kind: grpc}\n", nil, []string{"backends.e.kind: must be echo, http, openai or nats"}},
		{"http needs endpoints", "auth: {anonymous: true}\nbackends:\n  e: {kind: http}\n", nil, []string{"backends.e.endpoints"}},
		{"hs256 needs a secret", "", nil, []string{"auth.jwt.secret_env", "ORCH_JWT_SECRET"}},
		{"short secret", "", []string{"ORCH_JWT_SECRET=short"}, []string{"at least 32 bytes"}},
		{"admin off loopback needs a password", "auth: {anonymous: true}\nlisten: {admin: \"0.0.0.0:9090\"}\n", nil, []string{"admin.password_env", "not a loopback"}},
		{"node_loss_after too short", "auth: {anonymous: true}\nsessions: {node_loss_after: 500ms}\n", nil, []string{"sessions.node_loss_after: must be at least 1s"}},
		{"every problem at once", "auth: {anonymous: true}\nws: {path: ws}\nsessions: {store: disk}\n", nil, []string{"ws.path", "sessions.store"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), tc.env)
			if err == nil {
				t.Fatalf("Parse accepted %q", tc.yaml)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not mention %q", err, w)
				}
			}
		})
	}
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
	f.Add([]byte("routes:\n  a: [1, 2]\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b, []string{"ORCH_JWT_SECRET=" + strings.Repeat("k", 32)})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error text")
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
	if err == nil || !strings.Contains(err.Error(), "could not be decoded") {
		t.Fatalf("Parse = %v, want a decode error", err)
	}
}
