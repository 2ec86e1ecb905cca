package chaos

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"
)

// TestAdminAttacks binds the admin listener to 0.0.0.0 (off loopback, so
// credentials are required; the test connects through 127.0.0.1 only)
// and tries what a hostile network neighbour or a hostile web page would:
// no or wrong credentials, POSTs without, with forged or with cross-site
// CSRF tokens. Nothing gets through and nothing happens (the node does
// not drain); the legitimate path works.
func TestAdminAttacks(t *testing.T) {
	const password = "chaos-admin-password-123"
	port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
	d := newDaemon(t, "chaos-admin", freeAddr(t), "0.0.0.0:"+port, `backends:
  echo: {kind: echo}
routes:
  echo: {backend: echo}
`, "ORCH_ADMIN_PASSWORD="+password)
	d.admin = "127.0.0.1:" + port
	d.start()
	d.waitReady(15 * time.Second)

	// The daemon refuses to start off loopback without a password.
	nopw := newDaemon(t, "chaos-admin-nopw", freeAddr(t), "0.0.0.0:"+strings.TrimPrefix(freeAddr(t), "127.0.0.1:"), "")
	nopw.start()
	if code := nopw.exitCode(10 * time.Second); code == 0 {
		t.Errorf("daemon with a non-loopback admin address and no password: exit code 0, want a refusal")
	}

	base := "http://" + d.admin
	do := func(method, path string, user, pass string, hdr map[string]string, jar http.CookieJar) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" || pass != "" {
			req.SetBasicAuth(user, pass)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		c := &http.Client{Timeout: 5 * time.Second, Jar: jar,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode, string(b)
	}

	// Credentials.
	for _, tc := range []struct {
		name, path, user, pass string
		want                   int
	}{
		{"healthz open", "/healthz", "", "", 200},
		{"readyz open", "/readyz", "", "", 200},
		{"metrics public by default", "/metrics", "", "", 200},
		{"page without credentials", "/", "", "", 401},
		{"api without credentials", "/api/node", "", "", 401},
		{"sessions without credentials", "/api/sessions", "", "", 401},
		{"events without credentials", "/events", "", "", 401},
		{"wrong password", "/api/node", "admin", "wrong", 401},
		{"wrong user", "/api/node", "root", password, 401},
		{"password prefix", "/api/node", "admin", password[:len(password)-1], 401},
		{"password with a suffix", "/api/node", "admin", password + "x", 401},
		{"empty password", "/api/node", "admin", "", 401},
		{"right credentials", "/api/node", "admin", password, 200},
		{"pprof without credentials", "/debug/pprof/", "", "", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, body := do("GET", tc.path, tc.user, tc.pass, nil, nil)
			if tc.want == 401 && (got == 200 || got/100 == 3) {
				t.Errorf("%s: %d %.100q, want 401", tc.path, got, body)
			} else if tc.want != 401 && got != tc.want {
				t.Errorf("%s: %d %.100q, want %d", tc.path, got, body, tc.want)
			}
		})
	}

	// CSRF: a script's session with a real token, then forgeries.
	jar, _ := cookiejar.New(nil)
	code, body := do("GET", "/api/token", "admin", password, nil, jar)
	var tok struct {
		Token string `json:"csrf_token"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &tok) != nil || tok.Token == "" {
		t.Fatalf("/api/token: %d %q", code, body)
	}
	otherJar, _ := cookiejar.New(nil)
	if code, _ := do("GET", "/api/token", "admin", password, nil, otherJar); code != 200 {
		t.Fatalf("second /api/token: %d", code)
	}
	forged := []struct {
		name string
		hdr  map[string]string
		jar  http.CookieJar
		user string
	}{
		{"no token, no cookie", nil, nil, "admin"},
		{"no token, with the cookie", nil, jar, "admin"},
		{"token without its cookie", map[string]string{"X-CSRF-Token": tok.Token}, nil, "admin"},
		{"token of another cookie", map[string]string{"X-CSRF-Token": tok.Token}, otherJar, "admin"},
		{"forged token", map[string]string{"X-CSRF-Token": strings.Repeat("a", len(tok.Token))}, jar, "admin"},
		{"cross-site request", map[string]string{"X-CSRF-Token": tok.Token, "Sec-Fetch-Site": "cross-site"}, jar, "admin"},
		{"same-site request", map[string]string{"X-CSRF-Token": tok.Token, "Sec-Fetch-Site": "same-site"}, jar, "admin"},
		{"foreign origin", map[string]string{"X-CSRF-Token": tok.Token, "Origin": "https://evil.example"}, jar, "admin"},
		{"origin null", map[string]string{"X-CSRF-Token": tok.Token, "Origin": "null"}, jar, "admin"},
		{"valid token, no credentials", map[string]string{"X-CSRF-Token": tok.Token}, jar, ""},
	}
	for _, tc := range forged {
		t.Run("drain: "+tc.name, func(t *testing.T) {
			pass := password
			if tc.user == "" {
				pass = ""
			}
			got, body := do("POST", "/api/drain", tc.user, pass, tc.hdr, tc.jar)
			if got != 403 && got != 401 {
				t.Errorf("POST /api/drain: %d %.100q, want 403 (or 401)", got, body)
			}
		})
	}
	if s := httpStatus(base+"/readyz", nil); s != 200 {
		t.Fatalf("after the forged POSTs /readyz is %d: a forgery drained the node", s)
	}
	// The legitimate path works: reset a breaker (harmless), then drain.
	if got, body := do("POST", "/api/backends/echo/reset", "admin", password, map[string]string{"X-CSRF-Token": tok.Token}, jar); got != 200 {
		t.Errorf("legitimate POST /api/backends/echo/reset: %d %q", got, body)
	}
	if got, body := do("POST", "/api/drain", "admin", password, map[string]string{"X-CSRF-Token": tok.Token, "Sec-Fetch-Site": "same-origin"}, jar); got != 202 {
		t.Errorf("legitimate POST /api/drain: %d %q", got, body)
	}
	eventually(t, 5*time.Second, "/readyz 503 after the drain", func() bool { return httpStatus(base+"/readyz", nil) == 503 })
	if code := d.exitCode(15 * time.Second); code != 0 {
		t.Errorf("exit code %d after the drain, want 0", code)
	}
}
