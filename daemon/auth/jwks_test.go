package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// jwksServer serves a JWK Set that the test can replace, and counts fetches.
type jwksServer struct {
	*httptest.Server
	mu     sync.Mutex
	body   []byte // guarded by mu
	status int    // guarded by mu
	hits   atomic.Int64
}

func newJWKSServer(t *testing.T) *jwksServer {
	s := &jwksServer{status: http.StatusOK, body: []byte(`{"keys":[]}`)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		body, st := s.body, s.status
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(st)
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

// serve replaces the served set with jwks (raw JWK JSON objects).
func (s *jwksServer) serve(status int, jwks ...json.RawMessage) {
	b, err := json.Marshal(map[string][]json.RawMessage{"keys": jwks})
	if err != nil {
		panic(err)
	}
	s.mu.Lock()
	s.body, s.status = b, status
	s.mu.Unlock()
}

// jwk returns the public JWK JSON of key with kid and alg.
func jwk(t testing.TB, key any, kid, alg string) json.RawMessage {
	t.Helper()
	j, err := jwkset.NewJWKFromKey(key, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: jwkset.ALG(alg)}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(j.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func jwksAuth(url string, refresh time.Duration) config.Auth {
	a := config.Default().Auth
	a.JWT.Algorithms = []string{"HS256", "RS256", "ES256"}
	a.JWT.Secret = testSecret
	a.JWT.JWKSURL = url
	a.JWT.JWKSRefresh = config.Duration(refresh)
	return a
}

// TestJWKSRotationUnknownKID: a token signed by a key rotated into the JWKS
// is accepted at once thanks to the unknown-kid refresh; the rotated-out key
// stops working; symmetric and mistyped JWKs are never used.
func TestJWKSRotationUnknownKID(t *testing.T) {
	k := keys(t)
	srv := newJWKSServer(t)
	hsKey := []byte("a-symmetric-key-published-in-the-jwks!")
	oct := json.RawMessage(`{"kty":"oct","kid":"h","alg":"HS256","k":"` + base64.RawURLEncoding.EncodeToString(hsKey) + `"}`)
	srv.serve(200, jwk(t, &k.rsa.PublicKey, "a", "RS256"), oct)

	v, err := NewVerifier(t.Context(), jwksAuth(srv.URL, time.Hour), testLogger(t))
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	tokA := sign(t, jwt.SigningMethodRS256, k.rsa, claims("alice"), "a")
	if id, err := v.Verify(tokA); err != nil || id.User != "alice" {
		t.Fatalf("key a: got %+v, %v", id, err)
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, hsKey, claims("mallory"), "h")); err == nil {
		t.Fatal("HS256 token signed with a JWKS symmetric key was accepted")
	}

	hits := srv.hits.Load()
	srv.serve(200, jwk(t, &k.ec.PublicKey, "b", "ES256"))
	tokB := sign(t, jwt.SigningMethodES256, k.ec, claims("bob"), "b")
	if id, err := v.Verify(tokB); err != nil || id.User != "bob" {
		t.Fatalf("rotated-in key b: got %+v, %v", id, err)
	}
	if srv.hits.Load() <= hits {
		t.Fatal("the unknown kid did not trigger a JWKS fetch")
	}
	// An RS256 token claiming kid b (an EC key) never verifies.
	if _, err := v.Verify(sign(t, jwt.SigningMethodRS256, k.rsa, claims("mallory"), "b")); err == nil {
		t.Fatal("RS256 token verified against an ES256 JWK")
	}
	// Key a was rotated out by that refresh. Asking for it again is an
	// unknown kid whose refresh is rate-limited: refused without waiting.
	start := time.Now()
	if _, err := v.Verify(tokA); !errors.Is(err, ErrNoKey) {
		t.Fatalf("rotated-out key a: got %v, want ErrNoKey", err)
	}
	if d := time.Since(start); d >= unknownKIDWaitMax {
		t.Fatalf("refusing a rate-limited unknown kid took %v", d)
	}
}

// TestJWKSPeriodicRefresh: the background refresh picks up a revocation (a
// key removed from the set) without any unknown kid, and stops with ctx.
func TestJWKSPeriodicRefresh(t *testing.T) {
	k := keys(t)
	srv := newJWKSServer(t)
	srv.serve(200, jwk(t, &k.rsa.PublicKey, "a", "RS256"))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	v, err := NewVerifier(ctx, jwksAuth(srv.URL, 20*time.Millisecond), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	tokA := sign(t, jwt.SigningMethodRS256, k.rsa, claims("alice"), "a")
	if _, err := v.Verify(tokA); err != nil {
		t.Fatalf("key a: %v", err)
	}
	srv.serve(200, jwk(t, &k.rsa.PublicKey, "a2", "RS256"))
	hits := srv.hits.Load()
	eventually(t, 5*time.Second, func() bool { return srv.hits.Load() > hits+1 })
	// kid a is gone from the store; its refresh is unknown-kid limited but
	// the limiter is still full, so Verify may refresh once: either way it
	// must refuse.
	if _, err := v.Verify(tokA); err == nil {
		t.Fatal("revoked key a still accepted after the periodic refresh")
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodRS256, k.rsa, claims("alice"), "a2")); err != nil {
		t.Fatalf("key a2: %v", err)
	}
	cancel()
}

// TestJWKSDownAtStart: an IdP that is down when the daemon starts does not
// stop it; tokens are refused until the set can be fetched, then accepted.
func TestJWKSDownAtStart(t *testing.T) {
	k := keys(t)
	srv := newJWKSServer(t)
	srv.serve(http.StatusInternalServerError)
	v, err := NewVerifier(t.Context(), jwksAuth(srv.URL, 20*time.Millisecond), testLogger(t))
	if err != nil {
		t.Fatalf("NewVerifier with the IdP down: %v", err)
	}
	tok := sign(t, jwt.SigningMethodES256, k.ec, claims("alice"), "e")
	if _, err := v.Verify(tok); err == nil {
		t.Fatal("accepted a token while the JWKS is unavailable")
	}
	srv.serve(200, jwk(t, &k.ec.PublicKey, "e", "ES256"))
	// The unknown-kid refresh was spent while the IdP was down; the
	// periodic refresh brings the key in.
	eventually(t, 5*time.Second, func() bool {
		_, err := v.Verify(tok)
		return err == nil
	})
}

// TestKeysFileJWKS: keys_file may hold a JWKS; kids filter the keys.
func TestKeysFileJWKS(t *testing.T) {
	k := keys(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string][]json.RawMessage{"keys": {
		jwk(t, &k.rsa.PublicKey, "r1", "RS256"),
		jwk(t, &k.ec.PublicKey, "e1", "ES256"),
		jwk(t, &p384.PublicKey, "e3", ""),
		json.RawMessage(`{"kty":"oct","kid":"h","k":"` + base64.RawURLEncoding.EncodeToString([]byte(testSecret)) + `"}`),
	}})
	if err != nil {
		t.Fatal(err)
	}
	a := config.Default().Auth
	a.JWT.Algorithms = []string{"RS256", "ES256", "ES384"}
	a.JWT.KeysFile = filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(a.JWT.KeysFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(t.Context(), a, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		tok  string
		ok   bool
	}{
		{"RS256 kid r1", sign(t, jwt.SigningMethodRS256, k.rsa, claims("a"), "r1"), true},
		{"RS256 no kid", sign(t, jwt.SigningMethodRS256, k.rsa, claims("a"), ""), true},
		{"RS256 kid of the EC key", sign(t, jwt.SigningMethodRS256, k.rsa, claims("a"), "e1"), false},
		{"RS256 unknown kid", sign(t, jwt.SigningMethodRS256, k.rsa, claims("a"), "zz"), false},
		{"ES256 kid e1", sign(t, jwt.SigningMethodES256, k.ec, claims("a"), "e1"), true},
		{"ES384 no alg in JWK", sign(t, jwt.SigningMethodES384, p384, claims("a"), "e3"), true},
		{"ES256 signed by P-384 key", sign(t, jwt.SigningMethodES384, p384, claims("a"), "e1"), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := v.Verify(c.tok)
			if (err == nil) != c.ok {
				t.Fatalf("got err %v, want ok=%v", err, c.ok)
			}
		})
	}
}
