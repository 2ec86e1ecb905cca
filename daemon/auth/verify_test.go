package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestGateTokenTable drives every token refusal path through Gate.Check with
// real signed tokens, and checks the exact contract status and code.
func TestGateTokenTable(t *testing.T) {
	k := keys(t)
	cfg := testConfig(t)
	ctx := t.Context()
	v, err := NewVerifier(ctx, cfg.Auth, testLogger(t))
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	g := NewGate(cfg, v, testLogger(t))

	now := time.Now()
	good := claims("alice")
	hs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, []byte(testSecret), c, "") }
	rs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodRS256, k.rsa, c, "") }
	es := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodES256, k.ec, c, "") }
	ed := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodEdDSA, k.ed, c, "") }
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, good).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	// Algorithm confusion: HS256 keyed with the PEM bytes of the RS256
	// public key, which an attacker can read from keys_file or JWKS.
	confused := sign(t, jwt.SigningMethodHS256, pemPublic(t, &k.rsa.PublicKey), good, "")
	otherEC, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	weakRSA, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	valid := rs(good)
	tampered := func() string {
		p := strings.Split(valid, ".")
		p[1] = strings.TrimRight(jwtSeg(`{"sub":"mallory","iss":"`+testIssuer+`","aud":"`+testAudience+`"}`), "=")
		return strings.Join(p, ".")
	}()

	type tc struct {
		name    string
		mod     func(h *Handshake)
		token   string
		want    int // 0: accepted
		user    string
		expires time.Time
	}
	leeway := cfg.Auth.JWT.Leeway.D()
	exp := time.Unix(good["exp"].(int64), 0).Add(leeway) // Expires includes the leeway
	cases := []tc{
		{name: "HS256 ok", token: hs(good), user: "alice", expires: exp},
		{name: "RS256 ok", token: rs(good), user: "alice", expires: exp},
		{name: "ES256 ok", token: es(good), user: "alice", expires: exp},
		{name: "EdDSA ok", token: ed(good), user: "alice", expires: exp},
		{name: "no exp ok", token: hs(with(good, "exp", nil)), user: "alice"},
		{name: "expired", token: hs(with(good, "exp", now.Add(-2*time.Minute).Unix())), want: 401},
		{name: "expired within leeway", token: hs(with(good, "exp", now.Add(-10*time.Second).Unix())), user: "alice", expires: time.Unix(now.Add(-10*time.Second).Unix(), 0).Add(leeway)},
		{name: "not yet valid", token: es(with(good, "nbf", now.Add(2*time.Minute).Unix())), want: 401},
		{name: "nbf within leeway", token: es(with(good, "nbf", now.Add(10*time.Second).Unix())), user: "alice", expires: exp},
		{name: "wrong issuer", token: rs(with(good, "iss", "https://evil.test")), want: 401},
		{name: "missing issuer", token: rs(with(good, "iss", nil)), want: 401},
		{name: "wrong audience", token: ed(with(good, "aud", "someone-else")), want: 401},
		{name: "missing audience", token: ed(with(good, "aud", nil)), want: 401},
		{name: "audience list ok", token: ed(with(good, "aud", []string{"x", testAudience})), user: "alice", expires: exp},
		{name: "missing sub", token: hs(with(good, "sub", nil)), want: 401},
		{name: "sub with control char", token: hs(with(good, "sub", "a\r\nX-Evil: 1")), want: 401},
		{name: "bad signature RS256", token: sign(t, jwt.SigningMethodRS256, k.rsaOther, good, ""), want: 401},
		{name: "bad signature ES256", token: sign(t, jwt.SigningMethodES256, otherEC, good, ""), want: 401},
		{name: "bad signature HS256", token: sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), good, ""), want: 401},
		{name: "tampered payload", token: tampered, want: 401},
		{name: "alg none", token: none, want: 401},
		{name: "HS256 keyed with RS256 public PEM", token: confused, want: 401},
		{name: "algorithm not configured (RS384)", token: sign(t, jwt.SigningMethodRS384, k.rsa, good, ""), want: 401},
		{name: "RS256 by an unknown key", token: sign(t, jwt.SigningMethodRS256, weakRSA, good, ""), want: 401},
		{name: "garbage token", token: "not.a.jwt", want: 401},
		{name: "overlong token", token: strings.Repeat("a", maxTokenBytes+1), want: 401},
		{name: "missing token", want: 401},
		{name: "token in query", mod: func(h *Handshake) { h.RawQuery = "session=x&token=" + url.QueryEscape(es(good)) }, user: "alice", expires: exp},
		{name: "token in cookie", mod: func(h *Handshake) { h.Header.Set("Cookie", "a=b; orch_token="+ed(good)) }, user: "alice", expires: exp},
		{name: "bearer wins over query", token: "garbage", mod: func(h *Handshake) { h.RawQuery = "token=" + hs(good) }, want: 401},
		{name: "query wins over cookie", mod: func(h *Handshake) {
			h.RawQuery = "token=" + hs(with(good, "sub", "bob"))
			h.Header.Set("Cookie", "orch_token="+hs(good))
		}, user: "bob", expires: exp},
		{name: "wrong path beats bad token", token: "garbage", mod: func(h *Handshake) { h.Path = "/wss" }, want: 404},
		{name: "wrong path", token: hs(good), mod: func(h *Handshake) { h.Path = "/" }, want: 404},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := handshake("127.0.0.1:40000", c.token)
			if c.mod != nil {
				c.mod(h)
			}
			before := g.Connections()
			id, r := g.Check(h)
			if c.want != 0 {
				if r == nil {
					t.Fatalf("Check accepted %+v, want status %d", id, c.want)
				}
				if r.Status != c.want {
					t.Fatalf("got status %d (%s), want %d", r.Status, r.Code, c.want)
				}
				if r.Status == 401 && r.Code != CodeUnauthorized {
					t.Fatalf("got code %q, want %q", r.Code, CodeUnauthorized)
				}
				if got := g.Connections(); got != before {
					t.Fatalf("refusal holds a slot: Connections %d, want %d", got, before)
				}
				return
			}
			if r != nil {
				t.Fatalf("Check refused: %d %s", r.Status, r.Code)
			}
			defer g.Release(h.Remote.Addr())
			if id.User != c.user || id.Anonymous {
				t.Fatalf("got identity %+v, want user %q", id, c.user)
			}
			if !id.Expires.Equal(c.expires) {
				t.Fatalf("got Expires %v, want %v", id.Expires, c.expires)
			}
			if got := g.Connections(); got != before+1 {
				t.Fatalf("got Connections %d, want %d", got, before+1)
			}
		})
	}
	if got := g.Connections(); got != 0 {
		t.Fatalf("after releasing all: Connections %d, want 0", got)
	}
}

func jwtSeg(s string) string {
	return strings.TrimRight(base64URL([]byte(s)), "=")
}

// TestVerifyErrorsSayWhy checks that Verify's errors carry the reason for
// the log.
func TestVerifyErrorsSayWhy(t *testing.T) {
	cfg := testConfig(t)
	v, err := NewVerifier(t.Context(), cfg.Auth, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	exp := sign(t, jwt.SigningMethodHS256, []byte(testSecret), with(claims("a"), "exp", time.Now().Add(-time.Hour).Unix()), "")
	if _, err := v.Verify(exp); !errors.Is(err, jwt.ErrTokenExpired) {
		t.Fatalf("expired: got %v, want ErrTokenExpired", err)
	}
	nosub := sign(t, jwt.SigningMethodHS256, []byte(testSecret), with(claims("a"), "sub", nil), "")
	if _, err := v.Verify(nosub); !errors.Is(err, ErrNoSubject) {
		t.Fatalf("no sub: got %v, want ErrNoSubject", err)
	}
}

// TestAnonymous: without a token the handshake gets in as "anonymous"; a
// token, when present, is still verified.
func TestAnonymous(t *testing.T) {
	cfg := testConfig(t)
	cfg.Auth.Anonymous = true
	v, err := NewVerifier(context.Background(), cfg.Auth, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	g := NewGate(cfg, v, testLogger(t))
	id, r := g.Check(handshake("127.0.0.1:1", ""))
	if r != nil || id.User != AnonymousUser || !id.Anonymous || !id.Expires.IsZero() {
		t.Fatalf("no token: got %+v %v, want anonymous", id, r)
	}
	if _, r := g.Check(handshake("127.0.0.1:1", "bad.to.ken")); r == nil || r.Status != 401 {
		t.Fatalf("bad token with anonymous: got %v, want 401", r)
	}
	tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("carol"), "")
	if id, r := g.Check(handshake("127.0.0.1:1", tok)); r != nil || id.User != "carol" || id.Anonymous {
		t.Fatalf("good token with anonymous: got %+v %v, want carol", id, r)
	}

	// Anonymous only, no algorithm and no verifier: tokens are refused.
	cfg.Auth.JWT.Algorithms = nil
	g = NewGate(cfg, nil, testLogger(t))
	if _, r := g.Check(handshake("127.0.0.1:1", tok)); r == nil || r.Status != 401 {
		t.Fatalf("token without verifier: got %v, want 401", r)
	}
}

func TestNewVerifierRefusesBadConfig(t *testing.T) {
	for _, c := range []struct {
		name string
		mod  func(cfg *configAuth)
	}{
		{"none algorithm", func(c *configAuth) { c.JWT.Algorithms = []string{"none"} }},
		{"unknown algorithm", func(c *configAuth) { c.JWT.Algorithms = []string{"HS1"} }},
		{"HS without secret", func(c *configAuth) { c.JWT.Secret = "" }},
		{"public key without keys", func(c *configAuth) { c.JWT.KeysFile = "" }},
		{"missing keys file", func(c *configAuth) { c.JWT.KeysFile = "/nonexistent/keys.pem" }},
		{"no algorithms", func(c *configAuth) { c.JWT.Algorithms = nil }},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := testConfig(t).Auth
			c.mod(&a)
			if _, err := NewVerifier(t.Context(), a, testLogger(t)); err == nil {
				t.Fatal("NewVerifier accepted a bad config")
			}
		})
	}
}

func TestKeyFits(t *testing.T) {
	k := keys(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		alg  string
		key  any
		want bool
	}{
		{"RS256", &k.rsa.PublicKey, true},
		{"PS512", &k.rsa.PublicKey, true},
		{"RS256", &k.ec.PublicKey, false},
		{"RS256", []byte(testSecret), false},
		{"RS256", pemPublic(t, &k.rsa.PublicKey), false},
		{"ES256", &k.ec.PublicKey, true},
		{"ES384", &k.ec.PublicKey, false},
		{"ES256", &p384.PublicKey, false},
		{"ES384", &p384.PublicKey, true},
		{"EdDSA", k.ed.Public(), true},
		{"EdDSA", &k.rsa.PublicKey, false},
		{"HS256", []byte(testSecret), false},
		{"none", nil, false},
	} {
		if got := keyFits(c.alg, c.key); got != c.want {
			t.Errorf("keyFits(%s, %T) = %v, want %v", c.alg, c.key, got, c.want)
		}
	}
}

// TestRefusalStatuses pins the refusal table of the contract.
func TestRefusalStatuses(t *testing.T) {
	for code, want := range map[string]int{
		CodeBadRequest: 400, CodeUnauthorized: 401, CodeForbidden: 403, CodeOriginNotAllowed: 403,
		CodeNotFound: 404, CodeTooManyConnections: 429, CodeRateLimited: 429, CodeDraining: 503, CodeAtCapacity: 503, CodeStoreUnavailable: 503,
		CodeUnsupportedVersion: 426, CodeHeadersTooLarge: 431, "made_up": 400,
	} {
		r := RefusalOf(code)
		if r.Status != want || Status(code) != want {
			t.Errorf("%s: got status %d, want %d", code, r.Status, want)
		}
		if code == "made_up" {
			code = CodeBadRequest
		}
		if got, want := string(r.Body()), `{"error":"`+code+`"}`+"\n"; got != want {
			t.Errorf("%s: got body %q, want %q", code, got, want)
		}
		if http.StatusText(r.Status) == "" || !strings.Contains(r.Error(), code) {
			t.Errorf("%s: Error() = %q", code, r.Error())
		}
	}
	r := RefusalOf(CodeUnauthorized)
	if n := testing.AllocsPerRun(100, func() { _ = r.Body() }); n != 0 {
		t.Fatalf("Body allocates %v times, want 0", n)
	}
}

// TestWeakRSAKeyRefused: an RSA key under 2048 bits in keys_file never
// verifies anything, even a token it signed.
func TestWeakRSAKeyRefused(t *testing.T) {
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	a := testConfig(t).Auth
	a.JWT.KeysFile = filepath.Join(t.TempDir(), "weak.pem")
	if err := os.WriteFile(a.JWT.KeysFile, pemPublic(t, &weak.PublicKey), 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(t.Context(), a, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(sign(t, jwt.SigningMethodRS256, weak, claims("a"), ""))
	if !errors.Is(err, ErrNoKey) {
		t.Fatalf("got %v, want ErrNoKey", err)
	}
}
