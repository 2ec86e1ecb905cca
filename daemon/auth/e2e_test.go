package auth

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// gateHandler is a minimal stand-in for the gateway: it asks the Gate and
// either writes the refusal as a plain HTTP response or completes an
// upgrade with 101 (no WebSocket framing after that: the test only reads the
// status line).
func gateHandler(g *Gate) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		remote, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		h := &Handshake{Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: r.Header, Remote: remote}
		_, ref := g.Check(h)
		if ref != nil {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Connection", "close")
			w.WriteHeader(ref.Status)
			w.Write(ref.Body())
			return
		}
		defer g.Release(remote.Addr())
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
	})
}

// TestRefusalsOnTheWire sends raw handshakes from 127.0.0.2 and 127.0.0.3
// over real sockets and checks the exact status line and body: a refused
// handshake never sees 101.
func TestRefusalsOnTheWire(t *testing.T) {
	cfg := testConfig(t)
	cfg.WS.AllowedOrigins = []string{"https://app.test"}
	cfg.Limits.HandshakeRate = 0.01 // one per 100 s after the burst: no refill during the test
	cfg.Limits.HandshakeBurst = 3
	v, err := NewVerifier(t.Context(), cfg.Auth, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	g := NewGate(cfg, v, testLogger(t))
	srv := httptest.NewServer(gateHandler(g))
	defer srv.Close()
	good := sign(t, jwt.SigningMethodES256, keys(t).ec, claims("alice"), "")
	expired := sign(t, jwt.SigningMethodHS256, []byte(testSecret), with(claims("alice"), "exp", time.Now().Add(-time.Hour).Unix()), "")

	for _, c := range []struct {
		name, src, path, token, origin string
		want                           int
		code                           string
	}{
		{"accepted", "127.0.0.2", "/ws", good, "https://app.test", 101, ""},
		{"expired", "127.0.0.2", "/ws", expired, "", 401, CodeUnauthorized},
		{"origin", "127.0.0.2", "/ws", good, "https://evil.test", 403, CodeOriginNotAllowed},
		{"rate", "127.0.0.2", "/ws", good, "", 429, CodeRateLimited},
		{"path", "127.0.0.3", "/other", good, "", 404, CodeNotFound},
		{"missing", "127.0.0.3", "/ws", "", "", 401, CodeUnauthorized},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := rawHandshake(t, c.src, srv.Listener.Addr().String(), c.path, c.token, c.origin)
			if status != c.want {
				t.Fatalf("got status %d, want %d", status, c.want)
			}
			if c.want == 101 {
				return
			}
			if want := `{"error":"` + c.code + `"}` + "\n"; body != want {
				t.Fatalf("got body %q, want %q", body, want)
			}
		})
	}
	g.SetDraining(true)
	if status, body := rawHandshake(t, "127.0.0.4", srv.Listener.Addr().String(), "/ws", good, ""); status != 503 || body != `{"error":"draining"}`+"\n" {
		t.Fatalf("draining: got %d %q", status, body)
	}
}

// rawHandshake dials from src, sends a WebSocket upgrade request and returns
// the response status and body.
func rawHandshake(t *testing.T, src, addr, path, token, origin string) (int, string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", path, addr)
	b.WriteString("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
	if token != "" {
		b.WriteString("Authorization: Bearer " + token + "\r\n")
	}
	if origin != "" {
		b.WriteString("Origin: " + origin + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp.StatusCode, ""
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}
