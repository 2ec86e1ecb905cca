package chaos

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"
)

const (
	aud = "chaos-aud"
	iss = "chaos-iss"
)

// hostileConfig accepts HS256 (the secret) and RS256 (keys_file) with iss
// and aud checks, one allowed origin, a 256 KiB message bound.
func hostileConfig(keysFile string) string {
	return fmt.Sprintf(`ws:
  max_message_bytes: 262144
  allowed_origins: ["https://good.example"]
limits:
  session_rate: 100000
  session_burst: 100000
auth:
  jwt:
    algorithms: [HS256, RS256]
    keys_file: %q
    issuer: %q
    audience: %q
    leeway: 0s
backends:
  echo: {kind: echo}
routes:
  echo: {backend: echo}
`, keysFile, iss, aud)
}

// signed returns a token with claims, signed with method and key, with
// extra header fields.
func signed(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims, hdr map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	for k, v := range hdr {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// claimsFor returns valid claims for sub.
func claimsFor(sub string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"sub": sub, "iss": iss, "aud": aud, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
}

// with returns c with k set (nil deletes it).
func with(c jwt.MapClaims, k string, v any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for kk, vv := range c {
		out[kk] = vv
	}
	if v == nil {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

// TestHostileHandshakes: forged, expired and confused tokens, spoofed
// origins, oversized heads, garbage and session hijacks are all refused
// with the contract's status, never upgraded.
func TestHostileHandshakes(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	evilKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	keys := filepath.Join(t.TempDir(), "keys.pem")
	if err := os.WriteFile(keys, pubPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "chaos-hostile", hostileConfig(keys))
	base := d.baseline()
	good := claimsFor("alice")
	hs := jwt.SigningMethodHS256
	passwd, _ := os.ReadFile("/etc/passwd")
	noneTok := func(c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// alg "None" in other spellings, hand-made.
	b64 := base64.RawURLEncoding.EncodeToString
	claimsPart := strings.Split(signed(t, hs, []byte(secret), good, nil), ".")[1]
	cases := []struct {
		name   string
		token  string
		origin string
		want   int
	}{
		{"valid HS256", signed(t, hs, []byte(secret), good, nil), "", 101},
		{"valid RS256", signed(t, jwt.SigningMethodRS256, rsaKey, good, nil), "", 101},
		{"no token", "", "", 401},
		{"garbage token", "not.a.jwt", "", 401},
		{"alg none", noneTok(good), "", 401},
		{"alg NONE by hand", b64([]byte(`{"alg":"NONE","typ":"JWT"}`)) + "." + claimsPart + ".", "", 401},
		{"alg none with a signature", b64([]byte(`{"alg":"none"}`)) + "." + claimsPart + "." + b64([]byte("sig")), "", 401},
		{"wrong HMAC secret", signed(t, hs, []byte("guessed-secret-guessed-secret-xx"), good, nil), "", 401},
		{"HS/RS key confusion: HS256 keyed with the RSA public key", signed(t, hs, pubPEM, good, nil), "", 401},
		{"HS/RS key confusion: HS256 keyed with the DER public key", signed(t, hs, der, good, nil), "", 401},
		{"RS256 signed by another key", signed(t, jwt.SigningMethodRS256, evilKey, good, nil), "", 401},
		{"algorithm not allowed: HS512", signed(t, jwt.SigningMethodHS512, []byte(secret), good, nil), "", 401},
		{"kid path traversal, HMAC keyed with /etc/passwd", signed(t, hs, passwd, good, map[string]any{"kid": "../../../../etc/passwd"}), "", 401},
		{"kid /dev/null, empty HMAC key", signed(t, hs, []byte{0}, good, map[string]any{"kid": "/dev/null"}), "", 401},
		{"kid SQL injection", signed(t, hs, []byte("x"), good, map[string]any{"kid": "x' UNION SELECT 'x' --"}), "", 401},
		{"kid path traversal, RS256 by another key", signed(t, jwt.SigningMethodRS256, evilKey, good, map[string]any{"kid": "../../../../etc/passwd"}), "", 401},
		{"jku pointing elsewhere", signed(t, jwt.SigningMethodRS256, evilKey, good, map[string]any{"jku": "http://127.0.0.1:1/jwks.json"}), "", 401},
		{"expired", signed(t, hs, []byte(secret), with(good, "exp", time.Now().Add(-time.Second).Unix()), nil), "", 401},
		{"not yet valid", signed(t, hs, []byte(secret), with(good, "nbf", time.Now().Add(time.Hour).Unix()), nil), "", 401},
		{"wrong aud", signed(t, hs, []byte(secret), with(good, "aud", "someone-else"), nil), "", 401},
		{"no aud", signed(t, hs, []byte(secret), with(good, "aud", nil), nil), "", 401},
		{"wrong iss", signed(t, hs, []byte(secret), with(good, "iss", "evil"), nil), "", 401},
		{"no sub", signed(t, hs, []byte(secret), with(good, "sub", nil), nil), "", 401},
		{"origin spoofed", signed(t, hs, []byte(secret), good, nil), "https://evil.example", 403},
		{"origin suffix trick", signed(t, hs, []byte(secret), good, nil), "https://good.example.evil.example", 403},
		{"origin prefix trick", signed(t, hs, []byte(secret), good, nil), "https://evilgood.example", 403},
		{"origin null", signed(t, hs, []byte(secret), good, nil), "null", 403},
		{"origin other scheme", signed(t, hs, []byte(secret), good, nil), "http://good.example", 403},
		{"origin allowed", signed(t, hs, []byte(secret), good, nil), "https://good.example", 101},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			c, err := dial(d.client, dialOpts{token: tc.token, header: h})
			got := 101
			if err != nil {
				got = handshakeStatus(err)
			} else {
				c.close()
			}
			if got != tc.want {
				t.Errorf("handshake: %d (%v), want %d", got, err, tc.want)
			}
		})
	}

	// Session hijack: bob resumes alice's session.
	alice, err := dial(d.client, dialOpts{token: signed(t, hs, []byte(secret), good, nil)})
	if err != nil {
		t.Fatal(err)
	}
	sid := alice.welcome.Session
	alice.close()
	_, err = dial(d.client, dialOpts{token: signed(t, hs, []byte(secret), claimsFor("bob"), nil), query: "session=" + sid})
	if got := handshakeStatus(err); got != 403 {
		t.Errorf("bob resuming alice's session: %d (%v), want 403", got, err)
	}
	// A made-up session id gives a fresh session, not someone's.
	c, err := dial(d.client, dialOpts{token: signed(t, hs, []byte(secret), claimsFor("bob"), nil), query: "session=s_" + strings.Repeat("A", 24)})
	if err != nil || c.welcome.Resumed {
		t.Errorf("unknown session id: %v resumed=%v, want a fresh session", err, c != nil && c.welcome.Resumed)
	}
	if c != nil {
		c.close()
	}

	// Raw heads: garbage, an oversized head, a header too large.
	tok := signed(t, hs, []byte(secret), good, nil)
	raw := []struct {
		name string
		head string
		want int // status; 0 means "closed without an upgrade" is fine too
	}{
		{"garbage before the request line", "\x16\x03\x01\x02\x00garbage\r\n\r\n", 400},
		{"oversized header", "GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 16<<10) + "\r\n\r\n", 0},
		{"10k headers", "GET /ws HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-A: b\r\n", 10000) + "\r\n", 0},
		{"huge token", "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer " + tok + strings.Repeat("A", 7000) + "\r\n\r\n", 0},
		{"path traversal", "GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404},
	}
	for _, tc := range raw {
		t.Run(tc.name, func(t *testing.T) {
			code, err := rawHead(d.client, tc.head)
			if err != nil {
				return // cut: not upgraded
			}
			// A redirect to the cleaned path (Go's ServeMux) upgrades nothing.
			if code == 101 || (tc.want != 0 && code != tc.want && code/100 != 3) || (tc.want == 0 && code < 400) {
				t.Errorf("status %d, want %d (or a 4xx)", code, tc.want)
			}
		})
	}
	if s := d.metric("orchestratord_connections"); s != 0 {
		t.Errorf("orchestratord_connections = %v after refused handshakes, want 0", s)
	}
	d.settles(base, 8)
}

// rawHead writes head and returns the response status.
func rawHead(addr, head string) (int, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(head)); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestHostileFrames: what a connected client can throw. Each case runs on
// a fresh connection and ends with the contract's close code, or with one
// terminal per message and the connection still usable.
func TestHostileFrames(t *testing.T) {
	d := startDaemon(t, "chaos-frames", hostileConfig(writeNoKeys(t)))
	base := d.baseline()
	tok := signed(t, jwt.SigningMethodHS256, []byte(secret), claimsFor("mallory"), nil)
	open := func(t *testing.T) *wsConn {
		c, err := dial(d.client, dialOpts{token: tok})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.close)
		return c
	}
	frame := func(c *wsConn, op ws.OpCode, fin bool, p []byte) error {
		f := ws.NewFrame(op, fin, p)
		f = ws.MaskFrameWith(f, [4]byte{9, 8, 7, 6})
		c.w.Lock()
		defer c.w.Unlock()
		return ws.WriteFrame(c.conn, f)
	}
	wantClose := func(t *testing.T, c *wsConn, code int) {
		t.Helper()
		for {
			_, err := c.read(5 * time.Second)
			if err == nil {
				continue
			}
			if got := closeCode(err); got != code {
				t.Errorf("ended with %v, want close %d", err, code)
			}
			return
		}
	}
	closes := []struct {
		name string
		send func(c *wsConn) error
		code int
	}{
		{"message over max_message_bytes", func(c *wsConn) error {
			return c.sendRaw([]byte(`{"type":"echo","id":"big","data":"` + strings.Repeat("a", 300<<10) + `"}`))
		}, 1009},
		{"header announcing 2^62 bytes", func(c *wsConn) error {
			c.w.Lock()
			defer c.w.Unlock()
			_, err := c.conn.Write([]byte{0x81, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4})
			return err
		}, 1009},
		{"fragments adding up past the bound", func(c *wsConn) error {
			part := []byte(strings.Repeat("a", 100<<10))
			for i := 0; i < 4; i++ {
				op := ws.OpContinuation
				if i == 0 {
					op = ws.OpText
				}
				if err := frame(c, op, false, part); err != nil {
					return err
				}
			}
			return nil
		}, 1009},
		{"invalid UTF-8", func(c *wsConn) error {
			return c.sendRaw([]byte("{\"type\":\"echo\",\"id\":\"u\",\"data\":\"\xff\xfe\"}"))
		}, 1007},
		{"invalid UTF-8 split over fragments", func(c *wsConn) error {
			if err := frame(c, ws.OpText, false, []byte("{\"type\":\"echo\",\"id\":\"u\",\"data\":\"\xe2\x82")); err != nil {
				return err
			}
			return frame(c, ws.OpContinuation, true, []byte("\x28\"}"))
		}, 1007},
		{"binary frame", func(c *wsConn) error { return frame(c, ws.OpBinary, true, []byte{1, 2, 3}) }, 1003},
		{"unmasked frame", func(c *wsConn) error {
			c.w.Lock()
			defer c.w.Unlock()
			return ws.WriteFrame(c.conn, ws.NewTextFrame([]byte(`{"type":"ping","id":"1"}`)))
		}, 1002},
		{"control frame over 125 bytes", func(c *wsConn) error { return frame(c, ws.OpPing, true, make([]byte, 200)) }, 1002},
		{"fragmented control frame", func(c *wsConn) error { return frame(c, ws.OpPing, false, []byte("x")) }, 1002},
		{"reserved opcode", func(c *wsConn) error { return frame(c, ws.OpCode(0x3), true, []byte("x")) }, 1002},
		{"continuation without a start", func(c *wsConn) error { return frame(c, ws.OpContinuation, true, []byte("x")) }, 1002},
	}
	for _, tc := range closes {
		t.Run(tc.name, func(t *testing.T) {
			c := open(t)
			if err := tc.send(c); err != nil {
				t.Fatalf("send: %v", err)
			}
			wantClose(t, c, tc.code)
		})
	}

	// Messages answered with one terminal each, connection kept.
	deep := `{"type":"echo","id":"deep","data":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`
	answered := []struct {
		name, payload, id, want string
	}{
		{"100k '[' balanced", deep, "deep", ""},
		{"100k '[' unbalanced", `{"type":"echo","id":"deep2","data":` + strings.Repeat("[", 100000) + `}`, "", "bad_request"},
		{"100k '{' in data", `{"type":"echo","id":"deep3","data":` + strings.Repeat(`{"a":`, 40000) + `1` + strings.Repeat("}", 40000) + `}`, "deep3", ""},
		{"id of 65 characters", `{"type":"echo","id":"` + strings.Repeat("i", 65) + `"}`, "", "bad_request"},
		{"id of 200 KiB", `{"type":"echo","id":"` + strings.Repeat("i", 200<<10) + `"}`, "", "bad_request"},
		{"id with a control character", `{"type":"echo","id":"a\u0001b"}`, "", "bad_request"},
		{"id not a string", `{"type":"echo","id":{"$gt":""}}`, "", "bad_request"},
		{"type of 200 KiB", `{"type":"` + strings.Repeat("t", 200<<10) + `","id":"ty"}`, "ty", ""},
		{"not JSON", `hello`, "", "bad_request"},
		{"JSON array", `[1,2,3]`, "", "bad_request"},
		{"duplicate keys", `{"type":"echo","id":"dk","id":"dk2","data":1}`, "", ""},
		{"NUL in type", `{"type":"ec\u0000ho","id":"nul"}`, "nul", ""},
	}
	c := open(t)
	for _, tc := range answered {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.sendRaw([]byte(tc.payload)); err != nil {
				t.Fatalf("send: %v", err)
			}
			m, err := c.read(10 * time.Second)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if !m.terminal() || (tc.id != "" && m.ID != tc.id) || (tc.want != "" && m.outcome() != tc.want) {
				t.Errorf("answer %s %s %.80q, want a terminal %q for id %q", m.Type, m.Code, m.ID, tc.want, tc.id)
			}
			// Still usable.
			if err := c.request("ping", "alive", nil); err != nil {
				t.Fatal(err)
			}
			if m, err := c.read(5 * time.Second); err != nil || m.Type != "pong" {
				t.Fatalf("after %s: %+v %v, want pong", tc.name, m, err)
			}
		})
	}

	// 10k distinct message types: each unknown_type, and no metric series
	// per made-up type (a cardinality attack on /metrics).
	n := scale(2000, 10000)
	go func() {
		for i := 0; i < n; i++ {
			if err := c.sendRaw([]byte(fmt.Sprintf(`{"type":"t%d","id":"x%d"}`, i, i))); err != nil {
				return
			}
		}
	}()
	got := 0
	for got < n {
		m, err := c.read(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d of %d made-up types: %v", got, n, err)
		}
		if m.terminal() {
			if m.Code != "unknown_type" {
				t.Fatalf("made-up type: %s %s, want unknown_type", m.Type, m.Code)
			}
			got++
		}
	}
	// Checked last in this test: with CI=true a failure here is skipped as
	// a known bug (see docs/reliability.md) so the rest still guards CI.
	var problems []string
	if m, err := d.metrics(); err != nil {
		problems = append(problems, fmt.Sprintf("/metrics fails after %d made-up types: %v", n, err))
	} else {
		series := 0
		for k := range m {
			if strings.Contains(k, `route="t`) {
				series++
			}
		}
		if series > 0 {
			problems = append(problems, fmt.Sprintf("/metrics has %d series labelled with made-up message types: a client can grow it without bound", series))
		}
	}
	c.close()
	d.settles(base, 8)
	if len(problems) > 0 {
		msg := strings.Join(problems, "; ")
		t.Error(msg)
	}
}

// writeNoKeys writes a keys file with one throwaway RSA public key.
func writeNoKeys(t *testing.T) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "keys.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
