package auth

import (
	"testing"

	"time"

	"github.com/golang-jwt/jwt/v5"
)

func benchVerifier(b *testing.B) *Verifier {
	cfg := testConfig(b)
	v, err := NewVerifier(b.Context(), cfg.Auth, testLogger(b))
	if err != nil {
		b.Fatal(err)
	}
	return v
}

func BenchmarkVerifyHS256(b *testing.B) {
	v := benchVerifier(b)
	tok := sign(b, jwt.SigningMethodHS256, []byte(testSecret), claims("alice"), "")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyES256(b *testing.B) {
	v := benchVerifier(b)
	tok := sign(b, jwt.SigningMethodES256, keys(b).ec, claims("alice"), "")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyRS256(b *testing.B) {
	v := benchVerifier(b)
	tok := sign(b, jwt.SigningMethodRS256, keys(b).rsa, claims("alice"), "")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGateCheck compares an accepted handshake (HS256 and ES256) with
// refused ones: a refusal decided before the signature check must be much
// cheaper than an accepted handshake.
func BenchmarkGateCheck(b *testing.B) {
	cfg := testConfig(b)
	cfg.Limits.PerIPConnections = 1
	cfg.Limits.HandshakeRate = 1e9
	cfg.Limits.HandshakeBurst = 1e9
	v, err := NewVerifier(b.Context(), cfg.Auth, testLogger(b))
	if err != nil {
		b.Fatal(err)
	}
	hs := sign(b, jwt.SigningMethodHS256, []byte(testSecret), claims("alice"), "")
	es := sign(b, jwt.SigningMethodES256, keys(b).ec, claims("alice"), "")
	accepted := func(tok string) func(b *testing.B, g *Gate) {
		return func(b *testing.B, g *Gate) {
			h := handshake("127.0.0.2:1", tok)
			for b.Loop() {
				if _, r := g.Check(h); r != nil {
					b.Fatal(r)
				}
				g.Release(h.Remote.Addr())
			}
		}
	}
	refused := func(mod func(h *Handshake, g *Gate), want int) func(b *testing.B, g *Gate) {
		return func(b *testing.B, g *Gate) {
			h := handshake("127.0.0.3:1", hs)
			mod(h, g)
			for b.Loop() {
				if _, r := g.Check(h); r == nil || r.Status != want {
					b.Fatalf("got %v, want %d", r, want)
				}
			}
		}
	}
	for _, c := range []struct {
		name string
		run  func(b *testing.B, g *Gate)
	}{
		{"accepted_HS256", accepted(hs)},
		{"accepted_ES256", accepted(es)},
		{"refused_503_draining", refused(func(h *Handshake, g *Gate) { g.SetDraining(true) }, 503)},
		{"refused_404", refused(func(h *Handshake, g *Gate) { h.Path = "/nope" }, 404)},
		{"refused_429_per_ip", refused(func(h *Handshake, g *Gate) {
			if _, r := g.Check(handshake("127.0.0.3:2", hs)); r != nil {
				b.Fatal(r)
			}
		}, 429)},
		{"refused_403_origin", refused(func(h *Handshake, g *Gate) {
			g.Update(cfg.Limits, []string{"https://ok.test"})
			h.Header.Set("Origin", "https://evil.test")
		}, 403)},
		{"refused_401_no_token", refused(func(h *Handshake, g *Gate) { h.Header.Del("Authorization") }, 401)},
		{"refused_401_bad_signature", refused(func(h *Handshake, g *Gate) {
			h.Header.Set("Authorization", "Bearer "+sign(b, jwt.SigningMethodHS256, []byte("wrong-secret-wrong-secret-wrong!"), claims("a"), ""))
		}, 401)},
	} {
		b.Run(c.name, func(b *testing.B) {
			g := NewGate(cfg, v, testLogger(b))
			g.log = discardLogger()
			b.ReportAllocs()
			c.run(b, g)
		})
	}
}

func BenchmarkBucketAllow(b *testing.B) {
	bk := NewBucket(1e9, 1<<30)
	b.ReportAllocs()
	t := time.Now()
	for b.Loop() {
		bk.Allow(t)
	}
}
