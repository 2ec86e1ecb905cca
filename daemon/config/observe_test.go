package config

import (
	"strings"
	"testing"
	"time"
)

// TestURLSecretsRedactedInJSON: check-config prints the effective config
// through JSON(); URL passwords and query values never appear.
func TestURLSecretsRedactedInJSON(t *testing.T) {
	yml := `auth: {anonymous: true}
sessions: {redis_url: "redis://:r3dispw@127.0.0.1:6379/0"}
backends:
  sql: {kind: http, endpoints: ["http://dbuser:hunter2@127.0.0.1:7001/query?api_key=k3y&x=1"]}
  rag: {kind: nats, urls: ["nats://natsuser:n4tspw@127.0.0.1:4222"], subject: s}
`
	c, err := Parse([]byte(yml), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := string(c.JSON())
	for _, secret := range []string{"r3dispw", "hunter2", "k3y", "n4tspw", "dbuser"} {
		if strings.Contains(out, secret) {
			t.Errorf("JSON() leaks %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{`"http://xxxxx@127.0.0.1:7001/query?api_key=xxxxx&x=xxxxx"`, `"redis://xxxxx@127.0.0.1:6379/0"`} {
		if !strings.Contains(out, want) {
			t.Errorf("JSON() lacks %s:\n%s", want, out)
		}
	}
}

func TestHealthAndReadinessKeys(t *testing.T) {
	c, err := Parse([]byte(`auth: {anonymous: true}
backends:
  sql: {kind: http, endpoints: ["http://127.0.0.1:7001/q"], health: {interval: 3s, path: /healthz}}
  llm: {kind: openai, endpoints: ["http://127.0.0.1:1/v1"], model: m}
readiness: {backends: [llm]}
log: {requests: true}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if h := c.Backends["sql"].Health; h.Interval.D() != 3*time.Second || h.Path != "/healthz" || h.Timeout.D() != 2*time.Second {
		t.Errorf("sql health = %+v, want 3s, /healthz, timeout 2s", h)
	}
	if h := c.Backends["llm"].Health; h.Interval.D() != 10*time.Second || h.Timeout.D() != 2*time.Second {
		t.Errorf("llm health defaults = %+v, want 10s and 2s", h)
	}
	if len(c.Readiness.Backends) != 1 || c.Readiness.Backends[0] != "llm" || !c.Log.Requests {
		t.Errorf("readiness = %+v, log = %+v", c.Readiness, c.Log)
	}
	if d := Default(); len(d.Readiness.Backends) != 0 || d.Log.Requests {
		t.Errorf("defaults: readiness %+v, log.requests %v; want none and false", d.Readiness, d.Log.Requests)
	}
}

func TestHealthAndReadinessErrors(t *testing.T) {
	tests := []struct{ name, yml, want string }{
		{"unknown readiness backend", "readiness: {backends: [nope]}", `readiness.backends[0]: line 2: unknown backend "nope"`},
		{"path on openai", `backends: {llm: {kind: openai, endpoints: ["http://h/v1"], model: m, health: {path: /x}}}`, "backends.llm.health.path: line 2: only the http kind"},
		{"path is a URL", `backends: {sql: {kind: http, endpoints: ["http://h/q"], health: {path: "http://other/x"}}}`, "backends.sql.health.path: line 2: must be a path"},
		{"negative interval", `backends: {sql: {kind: http, endpoints: ["http://h/q"], health: {interval: -1s}}}`, "backends.sql.health: line 2: interval and timeout must not be negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte("auth: {anonymous: true}\n"+tc.yml+"\n"), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse: got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
