package admin

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/telemetry"
)

func TestNewAddressAndPassword(t *testing.T) {
	for _, tc := range []struct {
		name, addr, pass string
		wantErr          bool
	}{
		{"loopback v4 no password", "127.0.0.1:9090", "", false},
		{"loopback v6 no password", "[::1]:9090", "", false},
		{"localhost no password", "localhost:9090", "", false},
		{"any address no password", "0.0.0.0:0", "", true},
		{"empty host no password", ":9090", "", true},
		{"public no password", "192.0.2.1:9090", "", true},
		{"any address with password", "0.0.0.0:0", "s3cret", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(0)
			_, err := New(config.Admin{User: "admin", Password: tc.pass, PasswordEnv: "ORCH_ADMIN_PASSWORD"}, tc.addr, f.deps(), nil, testLogger(t))
			if (err != nil) != tc.wantErr {
				t.Fatalf("New(%q, password %q) err = %v, want error %v", tc.addr, tc.pass, err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "ORCH_ADMIN_PASSWORD") {
				t.Errorf("error %q does not name the password variable", err)
			}
		})
	}
	f := newFixture(0)
	d := f.deps()
	d.Drainer = nil
	if _, err := New(config.Admin{}, "127.0.0.1:0", d, nil, testLogger(t)); err == nil || !strings.Contains(err.Error(), "Drainer") {
		t.Errorf("New with nil Drainer err = %v, want it named", err)
	}
}

func basic(u, p string) map[string]string {
	return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p))}
}

func TestCredentials(t *testing.T) {
	m := telemetry.New("test")
	for _, metricsPublic := range []bool{true, false} {
		f := newFixture(3)
		off := newServer(t, f, config.Admin{User: "admin", Password: "s3cret", MetricsPublic: metricsPublic}, "0.0.0.0:0", m.Registry())
		loop := newServer(t, f, config.Admin{User: "admin", MetricsPublic: metricsPublic}, "127.0.0.1:0", m.Registry())
		good, badPass, badUser := basic("admin", "s3cret"), basic("admin", "wrong"), basic("root", "s3cret")
		for _, tc := range []struct {
			path    string
			public  bool
			srvName string
		}{
			{"/healthz", true, ""}, {"/readyz", true, ""}, {"/metrics", metricsPublic, ""},
			{"/", false, ""}, {"/api/node", false, ""}, {"/api/sessions", false, ""}, {"/api/backends", false, ""},
			{"/api/token", false, ""}, {"/static/admin.css", false, ""},
		} {
			name := tc.path + map[bool]string{true: " metrics public", false: " metrics private"}[metricsPublic]
			t.Run(name, func(t *testing.T) {
				if w := do(off, "GET", tc.path, nil, nil); tc.public && w.Code != 200 || !tc.public && w.Code != 401 {
					t.Errorf("off loopback, no credentials: GET %s = %d, want public=%v", tc.path, w.Code, tc.public)
				} else if w.Code == 401 && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Basic ") {
					t.Errorf("401 without a Basic challenge")
				}
				for _, bad := range []map[string]string{badPass, badUser} {
					if w := do(off, "GET", tc.path, bad, nil); !tc.public && w.Code != 401 {
						t.Errorf("off loopback, bad credentials: GET %s = %d, want 401", tc.path, w.Code)
					}
				}
				if w := do(off, "GET", tc.path, good, nil); w.Code != 200 {
					t.Errorf("off loopback, good credentials: GET %s = %d, want 200", tc.path, w.Code)
				}
				if w := do(loop, "GET", tc.path, nil, nil); w.Code != 200 {
					t.Errorf("loopback, no credentials: GET %s = %d, want 200", tc.path, w.Code)
				}
			})
		}
		// POSTs need credentials before the CSRF check even applies.
		if w := do(off, "POST", "/api/drain", nil, nil); w.Code != 401 {
			t.Errorf("off loopback POST /api/drain without credentials = %d, want 401", w.Code)
		}
		select {
		case r := <-f.drainer.reasons:
			t.Errorf("Drain(%q) called without credentials", r)
		default:
		}
	}
}

func TestProbes(t *testing.T) {
	f := newFixture(0)
	s := newServer(t, f, config.Admin{}, "127.0.0.1:0", nil)
	check := func(path string, code int, status, reason string) {
		t.Helper()
		w := do(s, "GET", path, nil, nil)
		var b statusBody
		if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil {
			t.Fatalf("GET %s body %q: %v", path, w.Body, err)
		}
		if w.Code != code || b.Status != status || b.Reason != reason {
			t.Errorf("GET %s = %d %+v, want %d {%s %s}", path, w.Code, b, code, status, reason)
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("GET %s Content-Type %q", path, ct)
		}
	}
	check("/healthz", 200, "ok", "")
	check("/readyz", 200, "ready", "")
	f.ready.mu.Lock()
	f.ready.ready = errStoreDown
	f.ready.mu.Unlock()
	check("/readyz", 503, "not_ready", errStoreDown.Error())
	check("/healthz", 200, "ok", "")
	f.ready.mu.Lock()
	f.ready.ready, f.ready.alive = nil, errStoreDown
	f.ready.mu.Unlock()
	check("/healthz", 503, "unhealthy", errStoreDown.Error())
	f.ready.mu.Lock()
	f.ready.alive = nil
	f.ready.mu.Unlock()
	f.drainer.Drain("test")
	check("/readyz", 503, "not_ready", "draining")
	check("/healthz", 200, "ok", "")
}

func TestAPINodeAndBackends(t *testing.T) {
	f := newFixture(7)
	s := newServer(t, f, config.Admin{}, "127.0.0.1:0", nil)
	w := do(s, "GET", "/api/node", nil, nil)
	var n NodeView
	if err := json.Unmarshal(w.Body.Bytes(), &n); err != nil || w.Code != 200 {
		t.Fatalf("GET /api/node = %d %q: %v", w.Code, w.Body, err)
	}
	if n.UptimeSeconds < 3*3600+12*60 || n.UptimeSeconds > 3*3600+13*60 || n.StartedAt.IsZero() || n.Now.IsZero() {
		t.Errorf("uptime %ds (started %s, now %s), want about 3h12m", n.UptimeSeconds, n.StartedAt, n.Now)
	}
	n.UptimeSeconds, n.StartedAt, n.Now = 0, time.Time{}, time.Time{}
	want := NodeView{Node: "edge-1", State: "serving", Version: "1.4.2-test", Connections: 3, Sessions: 7, InFlight: 2, MsgsInTotal: 10, MsgsOutTotal: 20}
	if n != want {
		t.Errorf("node = %+v, want %+v", n, want)
	}
	w = do(s, "GET", "/api/backends", nil, nil)
	var b struct{ Backends []BackendRow }
	if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil {
		t.Fatal(err)
	}
	if len(b.Backends) != 3 || b.Backends[1].Name != "sql" || b.Backends[1].Endpoints[1].Breaker != "open" || b.Backends[1].Endpoints[1].P99ms != 2300 {
		t.Errorf("backends = %+v", b.Backends)
	}
}

func TestAPISessionsPaging(t *testing.T) {
	f := newFixture(120)
	s := newServer(t, f, config.Admin{}, "127.0.0.1:0", nil)
	for _, tc := range []struct {
		query            string
		code             int
		total, n         int
		firstID, offset_ string
	}{
		{"", 200, 120, 50, "s_00119", ""},
		{"offset=50", 200, 120, 50, "s_00069", ""},
		{"offset=100", 200, 120, 20, "s_00019", ""},
		{"offset=500", 200, 120, 0, "", ""},
		{"limit=10&offset=5", 200, 120, 10, "s_00114", ""},
		{"q=user7", 200, 12, 12, "s_00107", ""}, // user7 (7, 107), user70..79
		{"q=s_0004", 200, 10, 10, "s_00049", ""},
		{"q=nomatch", 200, 0, 0, "", ""},
		{"q=10.0.0.3", 200, 11, 11, "s_00039", ""}, // remote 10.0.0.3:*, 10.0.0.30-39:*
		{"offset=-1", 400, 0, 0, "", ""},
		{"limit=0", 400, 0, 0, "", ""},
		{"limit=100000", 400, 0, 0, "", ""},
		{"offset=x", 400, 0, 0, "", ""},
	} {
		t.Run(tc.query, func(t *testing.T) {
			w := do(s, "GET", "/api/sessions?"+tc.query, nil, nil)
			if w.Code != tc.code {
				t.Fatalf("code = %d, want %d (%s)", w.Code, tc.code, w.Body)
			}
			if tc.code != 200 {
				return
			}
			var p SessionsPage
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
				t.Fatal(err)
			}
			if p.Total != tc.total || len(p.Sessions) != tc.n {
				t.Fatalf("total %d, rows %d; want %d, %d", p.Total, len(p.Sessions), tc.total, tc.n)
			}
			if tc.n > 0 && p.Sessions[0].ID != tc.firstID {
				t.Errorf("first id %s, want %s", p.Sessions[0].ID, tc.firstID)
			}
			for i := 1; i < len(p.Sessions); i++ {
				if p.Sessions[i].ConnectedSince.After(p.Sessions[i-1].ConnectedSince) {
					t.Errorf("rows not newest first at %d", i)
				}
			}
		})
	}
}

func TestCSRF(t *testing.T) {
	f := newFixture(5)
	s := newServer(t, f, config.Admin{}, "127.0.0.1:0", nil)
	tok, cookie := tokenAndCookie(t, s, nil)
	_, otherCookie := tokenAndCookie(t, s, nil)
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		body string
		want int
	}{
		{"no token no cookie", nil, "", 403},
		{"cookie but no token", map[string]string{"Cookie": cookie}, "", 403},
		{"token but no cookie", map[string]string{CSRFHeader: tok}, "", 403},
		{"token of another cookie", map[string]string{CSRFHeader: tok, "Cookie": otherCookie}, "", 403},
		{"forged token", map[string]string{CSRFHeader: "AAAA" + tok[4:], "Cookie": cookie}, "", 403},
		{"cross-site fetch", map[string]string{CSRFHeader: tok, "Cookie": cookie, "Sec-Fetch-Site": "cross-site"}, "", 403},
		{"foreign origin", map[string]string{CSRFHeader: tok, "Cookie": cookie, "Origin": "http://evil.example"}, "", 403},
		{"header token", map[string]string{CSRFHeader: tok, "Cookie": cookie, "Sec-Fetch-Site": "same-origin"}, "", 202},
		{"form token", form, "csrf=" + url.QueryEscape(tok) + "&reason=deploy", 202},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := do(s, "POST", "/api/drain", tc.hdr, strings.NewReader(tc.body))
			if w.Code != tc.want {
				t.Fatalf("POST /api/drain = %d, want %d", w.Code, tc.want)
			}
			select {
			case r := <-f.drainer.reasons:
				if tc.want != 202 {
					t.Fatalf("Drain(%q) called on a refused POST", r)
				}
				if want := map[bool]string{true: "deploy", false: "admin"}[tc.body != ""]; r != want {
					t.Errorf("Drain reason %q, want %q", r, want)
				}
			default:
				if tc.want == 202 {
					t.Fatal("Drain not called")
				}
			}
		})
	}
	if w := do(s, "GET", "/readyz", nil, nil); w.Code != 503 {
		t.Errorf("after drain /readyz = %d, want 503", w.Code)
	}

	hdr := map[string]string{CSRFHeader: tok, "Cookie": cookie}
	if w := do(s, "POST", "/api/sessions/s_00003/close", nil, nil); w.Code != 403 {
		t.Errorf("kick without token = %d, want 403", w.Code)
	}
	if w := do(s, "POST", "/api/sessions/s_00003/close", hdr, nil); w.Code != 200 {
		t.Errorf("kick = %d (%s), want 200", w.Code, w.Body)
	}
	if got := <-f.sessions.kicked; got != "s_00003" {
		t.Errorf("Kick(%q), want s_00003", got)
	}
	if w := do(s, "POST", "/api/sessions/s_00003/close", hdr, nil); w.Code != 404 {
		t.Errorf("kick twice = %d, want 404", w.Code)
	}
	if w := do(s, "POST", "/api/backends/sql/reset", nil, nil); w.Code != 403 {
		t.Errorf("reset without token = %d, want 403", w.Code)
	}
	if w := do(s, "POST", "/api/backends/sql/reset", hdr, nil); w.Code != 200 {
		t.Errorf("reset = %d, want 200", w.Code)
	}
	if w := do(s, "POST", "/api/backends/nope/reset", hdr, nil); w.Code != 404 {
		t.Errorf("reset unknown = %d, want 404", w.Code)
	}
	if len(f.backends.reset) != 1 || f.backends.reset[0] != "sql" {
		t.Errorf("Reset calls = %v, want [sql]", f.backends.reset)
	}
	if w := do(s, "GET", "/api/drain", hdr, nil); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/drain = %d, want 405", w.Code)
	}
	// /api/token mints a token valid with the cookie it sets.
	w := do(s, "GET", "/api/token", nil, nil)
	var tb struct {
		Token string `json:"csrf_token"`
	}
	_ = json.Unmarshal(w.Body.Bytes(), &tb)
	ck := w.Result().Cookies()
	if len(ck) != 1 {
		t.Fatalf("/api/token set %d cookies", len(ck))
	}
	if w := do(s, "POST", "/api/backends/llm/reset", map[string]string{CSRFHeader: tb.Token, "Cookie": ck[0].Name + "=" + ck[0].Value}, nil); w.Code != 200 {
		t.Errorf("reset with /api/token token = %d, want 200", w.Code)
	}
}

func TestPage(t *testing.T) {
	f := newFixture(60)
	f.sessions.add(SessionRow{ID: "s_evil", User: `<script>alert(1)</script>`, Remote: "127.0.0.1:1", ConnectedSince: t0.Add(time.Hour)})
	s := newServer(t, f, config.Admin{}, "127.0.0.1:0", nil)
	w := do(s, "GET", "/?q=s_&offset=50", nil, nil)
	body := w.Body.String()
	if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s", w.Code, w.Header().Get("Content-Type"))
	}
	for _, want := range []string{
		"<h1 id=\"node-name\">edge-1</h1>", "serving", `data-session="s_00009"`, `data-action="kick"`,
		`data-name="sql"`, "half-open", "51–61 of 61", `href="/?q=s_"`, `<dialog id="confirm">`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>alert") {
		t.Error("page does not escape a session's user")
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP = %q", csp)
	}
	w = do(s, "GET", "/?q=%3Cscript%3Ealert", nil, nil)
	if !strings.Contains(w.Body.String(), `data-session="s_evil"`) || strings.Contains(w.Body.String(), "<script>alert") {
		t.Error("search by user did not find the row, or did not escape it")
	}
	if w := do(s, "GET", "/nope", nil, nil); w.Code != 404 {
		t.Errorf("GET /nope = %d, want 404", w.Code)
	}
	if w := do(s, "GET", "/static/admin.js", nil, nil); w.Code != 200 || !strings.Contains(w.Body.String(), "X-CSRF-Token") {
		t.Errorf("GET /static/admin.js = %d", w.Code)
	}
}

func TestMetricsRoute(t *testing.T) {
	m := telemetry.New("v9")
	m.MessageIn()
	m.MessageIn()
	m.Handshake("accepted")
	m.Closed(1012)
	m.SetGauges(func() telemetry.Gauges { return telemetry.Gauges{Connections: 42} })
	s := newServer(t, newFixture(0), config.Admin{MetricsPublic: true}, "127.0.0.1:0", m.Registry())
	w := do(s, "GET", "/metrics", nil, nil)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(w.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	get := func(name, label, value string) float64 {
		for _, mt := range fams[name].GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return mt.GetCounter().GetValue()
				}
			}
			if label == "" {
				return mt.GetGauge().GetValue()
			}
		}
		t.Fatalf("%s{%s=%q} missing", name, label, value)
		return 0
	}
	if got := get("orchestratord_messages_total", "direction", "in"); got != 2 {
		t.Errorf("messages_total{in} = %v, want 2", got)
	}
	if got := get("orchestratord_handshakes_total", "outcome", "accepted"); got != 1 {
		t.Errorf("handshakes_total{accepted} = %v, want 1", got)
	}
	if got := get("orchestratord_closes_total", "code", "1012"); got != 1 {
		t.Errorf("closes_total{1012} = %v, want 1", got)
	}
	if got := get("orchestratord_connections", "", ""); got != 42 {
		t.Errorf("connections = %v, want 42", got)
	}
}

// TestPprofBehindCredentials: /debug/pprof/ is served, and off loopback it
// needs the admin credentials like the page.
func TestPprofBehindCredentials(t *testing.T) {
	f := newFixture(0)
	s, err := New(config.Admin{User: "admin", Password: "pw", MetricsPublic: true}, "0.0.0.0:9090", f.deps(), nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		auth bool
		want int
	}{{false, http.StatusUnauthorized}, {true, http.StatusOK}} {
		r := httptest.NewRequest(http.MethodGet, "/debug/pprof/heap?gc=1", nil)
		if tc.auth {
			r.SetBasicAuth("admin", "pw")
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Fatalf("GET /debug/pprof/heap with credentials=%v: %d, want %d", tc.auth, w.Code, tc.want)
		}
	}
}

// TestFailedLoginLogged: wrong credentials are logged at warn (never the
// password), at most once a second; a request without credentials is not a
// failure.
func TestFailedLoginLogged(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	f := newFixture(0)
	s, err := New(config.Admin{User: "admin", Password: "pw"}, "0.0.0.0:9090", f.deps(), nil, log)
	if err != nil {
		t.Fatal(err)
	}
	get := func(user, pass string) {
		r := httptest.NewRequest(http.MethodGet, "/api/node", nil)
		if user != "" {
			r.SetBasicAuth(user, pass)
		}
		s.ServeHTTP(httptest.NewRecorder(), r)
	}
	get("", "")
	if buf.Len() != 0 {
		t.Fatalf("a request without credentials logged: %s", buf.String())
	}
	get("root", "guess1")
	get("root", "guess2")
	out := buf.String()
	if n := strings.Count(out, `"msg":"admin login failed"`); n != 1 {
		t.Fatalf("failed login lines = %d, want 1 (the second within a second is counted):\n%s", n, out)
	}
	if !strings.Contains(out, `"level":"WARN"`) || !strings.Contains(out, `"admin_user":"root"`) || strings.Contains(out, "guess") {
		t.Errorf("failed login line = %s, want warn with the user and no password", out)
	}
	if got := s.loginDropped.Load(); got != 1 {
		t.Errorf("failures not logged = %d, want 1", got)
	}
}
