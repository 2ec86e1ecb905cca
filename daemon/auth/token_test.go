package auth

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
)

func TestExtractToken(t *testing.T) {
	cfg := config.Default().Auth.JWT
	cfg.Cookie = "orch"
	for _, c := range []struct {
		name          string
		authz, cookie []string
		query         string
		want          string
		ok            bool
	}{
		{name: "bearer", authz: []string{"Bearer abc.def.ghi"}, want: "abc.def.ghi", ok: true},
		{name: "bearer any case, spaces", authz: []string{"  bEaReR \t abc "}, want: "abc", ok: true},
		{name: "bearer tab", authz: []string{"Bearer\tabc"}, want: "abc", ok: true},
		{name: "basic is not bearer", authz: []string{"Basic dXNlcjpwYXNz"}, query: "token=q", want: "q", ok: true},
		{name: "bearerx is not bearer", authz: []string{"Bearerx abc"}},
		{name: "empty bearer falls through", authz: []string{"Bearer "}, query: "token=q", want: "q", ok: true},
		{name: "second authorization value", authz: []string{"Basic x", "Bearer b"}, want: "b", ok: true},
		{name: "query", query: "a=1&token=q.r.s&b=2", want: "q.r.s", ok: true},
		{name: "query escaped", query: "token=a%2Eb%2Bc", want: "a.b+c", ok: true},
		{name: "query escaped key", query: "%74oken=x", want: "x", ok: true},
		{name: "query first non-empty", query: "token=&token=y", want: "y", ok: true},
		{name: "query bad escape skipped", query: "token=%zz&token=ok", want: "ok", ok: true},
		{name: "query prefix is not the key", query: "tokens=x&xtoken=y"},
		{name: "cookie", cookie: []string{"a=b; orch=c.d.e; z=1"}, want: "c.d.e", ok: true},
		{name: "cookie quoted", cookie: []string{`orch="q"`}, want: "q", ok: true},
		{name: "cookie second header", cookie: []string{"a=b", "orch=v"}, want: "v", ok: true},
		{name: "cookie prefix is not the name", cookie: []string{"orchx=v; xorch=w"}},
		{name: "bearer before query before cookie", authz: []string{"Bearer A"}, query: "token=B", cookie: []string{"orch=C"}, want: "A", ok: true},
		{name: "query before cookie", query: "token=B", cookie: []string{"orch=C"}, want: "B", ok: true},
		{name: "nothing"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range c.authz {
				h.Add("Authorization", v)
			}
			for _, v := range c.cookie {
				h.Add("Cookie", v)
			}
			got, ok := ExtractToken(h, c.query, cfg)
			if got != c.want || ok != c.ok {
				t.Fatalf("got %q %v, want %q %v", got, ok, c.want, c.ok)
			}
		})
	}
	t.Run("cookie disabled", func(t *testing.T) {
		h := http.Header{"Cookie": {"orch=v"}}
		if got, ok := ExtractToken(h, "", config.Default().Auth.JWT); ok {
			t.Fatalf("got %q with no cookie configured", got)
		}
	})
	t.Run("query disabled", func(t *testing.T) {
		j := cfg
		j.QueryParam = ""
		if got, ok := ExtractToken(http.Header{}, "token=x&=y", j); ok {
			t.Fatalf("got %q with no query parameter configured", got)
		}
	})
}

// FuzzExtractToken feeds arbitrary Authorization, query and Cookie values.
// Properties: a found token is non-empty and trimmed; a well-formed Bearer
// header always wins; the result does not depend on an unrelated cookie.
func FuzzExtractToken(f *testing.F) {
	f.Add("Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", "token=abc", "orch=def")
	f.Add("", "token=a%2Eb&x=1", "")
	f.Add("basic zzz", "%74oken=%zz&token=+", `orch="q"; a=b`)
	f.Add("Bearer", "token", "orch")
	f.Add("bearer \t", "&&&=&token==", ";;orch=;orch= v ")
	cfg := config.Default().Auth.JWT
	cfg.Cookie = "orch"
	f.Fuzz(func(t *testing.T, authz, query, cookie string) {
		h := http.Header{"Authorization": {authz}, "Cookie": {cookie}}
		tok, ok := ExtractToken(h, query, cfg)
		if ok != (tok != "") {
			t.Fatalf("ok=%v with token %q", ok, tok)
		}
		if ok && strings.Trim(tok, " \t") != tok {
			t.Fatalf("untrimmed token %q", tok)
		}
		if b, isBearer := bearer(authz); isBearer && tok != b {
			t.Fatalf("bearer %q lost to %q", b, tok)
		}
		// A good Bearer header always wins over the rest.
		good := "x.y.z"
		h2 := http.Header{"Authorization": {"Bearer " + good}, "Cookie": {cookie}}
		if got, ok := ExtractToken(h2, query, cfg); !ok || got != good {
			t.Fatalf("Bearer %q: got %q %v", good, got, ok)
		}
		// Without Authorization and query, the cookie alone decides.
		tokC, okC := ExtractToken(http.Header{"Cookie": {cookie}}, "", cfg)
		if okC && !strings.Contains(cookie, tokC) {
			t.Fatalf("cookie token %q not in %q", tokC, cookie)
		}
	})
}

func TestMint(t *testing.T) {
	cfg := testConfig(t)
	v, err := NewVerifier(t.Context(), cfg.Auth, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := Mint([]byte(testSecret), "dave", time.Hour, testIssuer, testAudience)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(tok)
	if err != nil {
		t.Fatalf("Verify(Mint): %v", err)
	}
	if id.User != "dave" || id.Expires.Before(time.Now().Add(59*time.Minute+30*time.Second)) || id.Expires.After(time.Now().Add(time.Hour+31*time.Second)) {
		t.Fatalf("got %+v", id)
	}
	if tok, err = Mint([]byte(testSecret), "dave", time.Hour, "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok); err == nil {
		t.Fatal("token without iss/aud accepted by a verifier that checks them")
	}
	if _, err := Mint(nil, "x", time.Hour, "", ""); err == nil {
		t.Fatal("Mint with an empty secret succeeded")
	}
	if _, err := Mint([]byte(testSecret), "", time.Hour, "", ""); err == nil {
		t.Fatal("Mint with an empty subject succeeded")
	}
}
