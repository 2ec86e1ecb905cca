package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/traceparent"
)

// observeYAML adds to baseYAML an http backend whose URL carries a
// password and an API key in its query, and a NATS backend whose server is
// down, named by the readiness policy. SQL_URL and NATS_URL are replaced.
var observeYAML = strings.NewReplacer(
	"backends:\n", `backends:
  sql: {kind: http, endpoints: ["SQL_URL"], health: {interval: 50ms, path: /healthz}}
  rag: {kind: nats, urls: ["NATS_URL"], subject: rag, health: {interval: 50ms}}
`,
	"routes:\n", `routes:
  sql: {backend: sql, timeout: 5s}
  rag: {backend: rag, timeout: 5s}
`).Replace(baseYAML) + `
readiness: {backends: [rag]}
log: {level: debug, requests: true}
`

// secrets that must appear nowhere an operator or a scraper looks.
var observeSecrets = []string{"hunter2", "k3y-in-query", "n4ts-pw"}

// sqlBackend answers POST /q and GET /healthz, and keeps the traceparent
// headers it received.
type sqlBackend struct {
	*httptest.Server
	mu     sync.Mutex
	traces []string
}

func newSQLBackend(t *testing.T) *sqlBackend {
	b := &sqlBackend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.WriteHeader(http.StatusOK)
			return
		}
		b.mu.Lock()
		b.traces = append(b.traces, r.Header.Get("traceparent"))
		b.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"data":{"rows":1}}`)
	}))
	t.Cleanup(b.Close)
	return b
}

// startObserved starts a stack on observeYAML.
func startObserved(t *testing.T) (*stack, *sqlBackend) {
	t.Helper()
	sql := newSQLBackend(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	yml := strings.NewReplacer(
		"SQL_URL", strings.Replace(sql.URL, "http://", "http://dbuser:hunter2@", 1)+"/q?api_key=k3y-in-query",
		"NATS_URL", "nats://natsuser:n4ts-pw@"+dead,
	).Replace(observeYAML)
	return startStack(t, yml), sql
}

func getBody(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// logLines decodes the daemon's JSON log lines.
func logLines(s *stack) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(s.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// TestObservability runs a daemon with a dead NATS backend and an http
// backend with secrets in its URL, and checks what an operator sees: the
// dead backend logged and unhealthy from the start, /readyz failing with
// only a reason code on the client listener and the detail on the admin
// listener, per-endpoint metrics (echo counted), trace ids on the access
// lines equal to those sent to the backend, connection lines, and no
// secret in logs, /metrics or /api/backends.
func TestObservability(t *testing.T) {
	s, sql := startObserved(t)

	// The dead NATS backend, at start.
	waitUntil(t, 5*time.Second, func() bool {
		return slices.ContainsFunc(logLines(s), func(l map[string]any) bool {
			return l["msg"] == "backend endpoint unhealthy" && l["backend"] == "rag" && l["level"] == "WARN"
		})
	})
	var backs struct {
		Backends []struct {
			Name      string `json:"name"`
			Endpoints []struct {
				URL, Health, Breaker string
				HealthDetail         string `json:"health_detail"`
			} `json:"endpoints"`
		} `json:"backends"`
	}
	code, body := getBody(t, "http://"+s.admin+"/api/backends")
	if code != 200 || json.Unmarshal([]byte(body), &backs) != nil {
		t.Fatalf("/api/backends = %d %s", code, body)
	}
	health := map[string]string{}
	for _, b := range backs.Backends {
		for _, e := range b.Endpoints {
			health[b.Name] = e.Health
			if b.Name == "sql" && e.URL != "http://xxxxx@"+strings.TrimPrefix(sql.URL, "http://")+"/q?api_key=xxxxx" {
				t.Errorf("sql endpoint URL = %q, want it redacted", e.URL)
			}
		}
	}
	waitUntil(t, 5*time.Second, func() bool {
		_, body := getBody(t, "http://"+s.admin+"/api/backends")
		return strings.Contains(body, `"health":"healthy"`)
	})
	if health["rag"] != "unhealthy" {
		t.Errorf("rag health = %q, want unhealthy from the start", health["rag"])
	}

	// Readiness: reason only on the traffic port, detail on the admin port.
	if code, body := getBody(t, "http://"+s.addr+"/readyz"); code != 503 || strings.TrimSpace(body) != `{"reason":"backends","status":"not_ready"}` &&
		strings.TrimSpace(body) != `{"status":"not_ready","reason":"backends"}` {
		t.Errorf("client /readyz = %d %s, want 503 with only the reason code", code, body)
	}
	if code, body := getBody(t, "http://"+s.admin+"/readyz"); code != 503 || !strings.Contains(body, "backend rag has no healthy endpoint") {
		t.Errorf("admin /readyz = %d %s, want 503 with the detail", code, body)
	}

	// Traffic: echo (inline), sql (http, traced), rag (refused at once).
	c := s.dial(t, "alice", "")
	c.expect(2 * time.Second)
	for _, m := range []string{`{"type":"echo","id":"e1","data":1}`, `{"type":"echo","id":"e2","data":2}`,
		`{"type":"sql","id":"q1","data":{}}`, `{"type":"rag","id":"r1","data":{}}`} {
		c.send(m)
		got := c.expect(5 * time.Second)
		if got.ID == "r1" && got.Code != "backend_unavailable" {
			t.Errorf("rag answer = %+v, want backend_unavailable at once", got)
		}
	}
	c.conn.Close()
	waitUntil(t, 3*time.Second, func() bool { return strings.Contains(s.logs.String(), `"msg":"connection closed"`) })

	fams := scrape(t, "http://"+s.admin+"/metrics")
	for _, ck := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"orchestratord_backend_calls_total", map[string]string{"backend": "echo", "outcome": "ok"}, 2},
		{"orchestratord_backend_calls_total", map[string]string{"backend": "sql", "outcome": "ok"}, 1},
		{"orchestratord_backend_refusals_total", map[string]string{"backend": "rag", "reason": "unhealthy"}, 1},
		{"orchestratord_endpoint_healthy", map[string]string{"backend": "rag"}, 0},
		{"orchestratord_breaker_state", map[string]string{"backend": "sql", "state": "closed"}, 1},
		{"orchestratord_breaker_state", map[string]string{"backend": "sql", "state": "open"}, 0},
		{"orchestratord_store_errors_total", map[string]string{"op": "get"}, 0},
		{"orchestratord_backend_capacity", map[string]string{"backend": "sql"}, 256},
	} {
		if v, ok := metricValue(fams, ck.name, ck.labels); !ok || v != ck.want {
			t.Errorf("%s%v = %v (found %v), want %v", ck.name, ck.labels, v, ok, ck.want)
		}
	}
	if _, ok := metricValue(fams, "orchestratord_build_info", map[string]string{"version": version}); !ok {
		t.Errorf("build_info{version=%q} missing", version)
	}
	for _, l := range fams["orchestratord_build_info"].GetMetric()[0].GetLabel() {
		if l.GetValue() == "" {
			t.Errorf("build_info label %s is empty", l.GetName())
		}
	}

	// Trace ids: the access line of q1 carries the trace id sent to the
	// backend; every line about a request has one.
	sql.mu.Lock()
	sent := append([]string(nil), sql.traces...)
	sql.mu.Unlock()
	if len(sent) != 1 || traceparent.TraceID(sent[0]) == "" {
		t.Fatalf("traceparents sent to the backend = %q, want one valid", sent)
	}
	access := map[string]map[string]any{}
	sawOpen := false
	for _, l := range logLines(s) {
		switch l["msg"] {
		case "request":
			access[l["request"].(string)] = l
		case "connection open":
			sawOpen = l["conn"] != nil && l["remote"] != nil
		case "connection closed":
			if l["conn"] == nil || l["code"] == nil || l["remote"] == nil {
				t.Errorf("connection closed line %v lacks conn, remote or code", l)
			}
		}
	}
	if !sawOpen {
		t.Errorf("no debug line for the connection opening")
	}
	if q := access["q1"]; q == nil || q["trace"] != traceparent.TraceID(sent[0]) || q["backend"] != "sql" || q["outcome"] != "result" {
		t.Errorf("access line of q1 = %v, want trace %s", q, traceparent.TraceID(sent[0]))
	}
	for _, id := range []string{"e1", "e2", "r1"} {
		if l := access[id]; l == nil || !traceparent.ValidTraceID(l["trace"].(string)) {
			t.Errorf("access line of %s = %v, want a trace id", id, l)
		}
	}

	// No secret anywhere.
	_, metricsText := getBody(t, "http://"+s.admin+"/metrics")
	_, apiText := getBody(t, "http://"+s.admin+"/api/backends")
	for _, secret := range observeSecrets {
		for where, text := range map[string]string{"logs": s.logs.String(), "/metrics": metricsText, "/api/backends": apiText} {
			if strings.Contains(text, secret) {
				t.Errorf("%s shows the secret %q", where, secret)
			}
		}
	}
}

// TestCheckConfigRedacts: check-config prints the effective config with
// URL passwords and query values masked.
func TestCheckConfigRedacts(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	yml := strings.NewReplacer("SQL_URL", "http://dbuser:hunter2@127.0.0.1:7001/q?api_key=k3y-in-query",
		"NATS_URL", "nats://natsuser:n4ts-pw@127.0.0.1:4222").Replace(observeYAML)
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ORCH_JWT_SECRET", testSecret)
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", "--config", path}, &out, &errb); code != 0 {
		t.Fatalf("check-config exit %d: %s", code, errb.String())
	}
	for _, secret := range observeSecrets {
		if strings.Contains(out.String(), secret) {
			t.Errorf("check-config prints %q:\n%s", secret, out.String())
		}
	}
	if !strings.Contains(out.String(), "http://xxxxx@127.0.0.1:7001/q?api_key=xxxxx") {
		t.Errorf("check-config output lacks the redacted URL:\n%s", out.String())
	}
}

// dashboardPath is the Grafana dashboard shipped in docs.
const dashboardPath = "../../../docs/grafana/orchestratord-dashboard.json"

// dashboardMetrics returns every metric name the dashboard's queries use.
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if s, ok := e.(string); ok && (k == "expr" || k == "definition") {
					exprs = append(exprs, s)
				}
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	var dash any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	walk(dash)
	if len(exprs) < 20 {
		t.Fatalf("dashboard has %d queries, want its panels' queries", len(exprs))
	}
	names := regexp.MustCompile(`\b(orchestratord|process|go)_[a-z_]+\b`)
	var out []string
	for _, e := range exprs {
		for _, n := range names.FindAllString(e, -1) {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestDashboardMetricsExist: every metric the Grafana dashboard queries is
// on a live daemon's /metrics (a histogram's _bucket and _count included).
func TestDashboardMetricsExist(t *testing.T) {
	s, _ := startObserved(t)
	c := s.dial(t, "alice", "")
	c.expect(2 * time.Second)
	c.send(`{"type":"sql","id":"q1","data":{}}`)
	c.expect(5 * time.Second)
	fams := scrape(t, "http://"+s.admin+"/metrics")
	for _, name := range dashboardMetrics(t) {
		if _, ok := fams[name]; ok {
			continue
		}
		base := name
		for _, suf := range []string{"_bucket", "_count", "_sum"} {
			base = strings.TrimSuffix(base, suf)
		}
		if f, ok := fams[base]; ok && base != name && f.GetType().String() == "HISTOGRAM" {
			continue
		}
		t.Errorf("the dashboard queries %s, which the daemon does not export", name)
	}
}

// TestPromtoolCheckMetrics: a live daemon's /metrics passes `promtool
// check metrics` (Debian's prometheus package; with CI=true a missing
// promtool is a failure).
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("promtool is required with CI=true (apt-get install prometheus): %v", err)
		}
		t.Skipf("promtool not installed: %v", err)
	}
	s, _ := startObserved(t)
	c := s.dial(t, "alice", "")
	c.expect(2 * time.Second)
	c.send(`{"type":"sql","id":"q1","data":{}}`)
	c.expect(5 * time.Second)
	_, text := getBody(t, "http://"+s.admin+"/metrics")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}
