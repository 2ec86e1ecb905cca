package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orchestratord/orchestratord/daemon/config"
)

const (
	testSecret   = "0123456789abcdef0123456789abcdef-test-secret"
	testIssuer   = "https://issuer.test"
	testAudience = "orchestratord"
)

// testKeys are the signing keys of the tests, generated once per test binary
// (RSA generation is slow).
type testKeys struct {
	rsa, rsaOther *rsa.PrivateKey
	ec            *ecdsa.PrivateKey
	ed            ed25519.PrivateKey
}

var (
	keysOnce sync.Once
	keysVal  testKeys
)

func keys(t testing.TB) testKeys {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if keysVal.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if keysVal.rsaOther, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if keysVal.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if _, keysVal.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
			panic(err)
		}
	})
	return keysVal
}

// pemPublic returns the PKIX PEM of a public key.
func pemPublic(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// writeKeysFile writes the PEM public keys of k (RSA, EC, Ed25519) to a file
// and returns its path.
func writeKeysFile(t testing.TB, k testKeys) string {
	t.Helper()
	var b []byte
	b = append(b, pemPublic(t, &k.rsa.PublicKey)...)
	b = append(b, pemPublic(t, &k.ec.PublicKey)...)
	b = append(b, pemPublic(t, k.ed.Public())...)
	p := filepath.Join(t.TempDir(), "keys.pem")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testConfig is a full config accepting HS256, RS256, ES256 and EdDSA with
// issuer and audience checks.
func testConfig(t testing.TB) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Auth.JWT.Algorithms = []string{"HS256", "RS256", "ES256", "EdDSA"}
	cfg.Auth.JWT.Secret = testSecret
	cfg.Auth.JWT.KeysFile = writeKeysFile(t, keys(t))
	cfg.Auth.JWT.Issuer = testIssuer
	cfg.Auth.JWT.Audience = testAudience
	cfg.Auth.JWT.Leeway = config.Duration(30 * time.Second)
	cfg.Auth.JWT.Cookie = "orch_token"
	return cfg
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// claims returns valid claims for sub, which tests then spoil.
func claims(sub string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"sub": sub,
		"iss": testIssuer,
		"aud": testAudience,
		"iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
}

// sign signs c with method and key, setting kid when non-empty.
func sign(t testing.TB, m jwt.SigningMethod, key any, c jwt.MapClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

// with returns c with the given claims changed (nil deletes).
func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// bearerHS returns a handshake on /ws from remote with the token as Bearer.
func handshake(remote string, token string) *Handshake {
	h := &Handshake{Path: "/ws", Header: http.Header{}, Remote: netip.MustParseAddrPort(remote)}
	if token != "" {
		h.Header.Set("Authorization", "Bearer "+token)
	}
	return h
}

// eventually polls cond every 10 ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("condition not met within %v", d)
		case <-tick.C:
		}
	}
}

type configAuth = config.Auth

func base64URL(b []byte) string { return base64.URLEncoding.EncodeToString(b) }

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
