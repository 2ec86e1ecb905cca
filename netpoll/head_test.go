package netpoll

import (
	"bufio"
	"bytes"
	"net/http"
	"net/textproto"
	"slices"
	"testing"
)

// TestParseHead checks the fields the engine and Gatekeepers read, and that
// malformed heads are refused.
func TestParseHead(t *testing.T) {
	req, err := parseHead([]byte("GET /ws?token=a%20b&x=1 HTTP/1.1\r\nHost: example.org\r\nUpgrade: websocket\r\n" +
		"Connection: keep-alive, Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For:  10.0.0.2 \r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if req.Method != "GET" || req.URL.Path != "/ws" || req.URL.RawQuery != "token=a%20b&x=1" || req.Host != "example.org" ||
		!req.ProtoAtLeast(1, 1) || req.Header.Get("Sec-WebSocket-Key") != "dGhlIHNhbXBsZSBub25jZQ==" ||
		!slices.Equal(req.Header.Values("X-Forwarded-For"), []string{"10.0.0.1", "10.0.0.2"}) || req.Header.Get("Host") != "" {
		t.Fatalf("parsed %+v", req)
	}
	for _, bad := range []string{
		"GET\r\n\r\n", "GET /ws\r\n\r\n", "GET /ws HTTP/2.0\r\n\r\n", "GET ws HTTP/1.1\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", "GET /ws HTTP/1.1\r\nBad Name: a\r\n\r\n",
		"GET /ws HTTP/1.1\r\nNoColon\r\n\r\n", "GET /ws HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"GET /ws HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "GET /ws HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET /ws HTTP/1.1\r\nX: a\x00b\r\n\r\n", "GET /ws HTTP/1.1\r\nX: a\r\n",
	} {
		if _, err := parseHead([]byte(bad)); err == nil {
			t.Errorf("parseHead(%q) accepted it", bad)
		}
	}
}

// FuzzParseHead: whatever parseHead accepts, http.ReadRequest accepts too,
// with the same method, path, query, host and header values.
func FuzzParseHead(f *testing.F) {
	for _, s := range []string{
		"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
		"GET /healthz HTTP/1.0\n\n", "POST /x?a=b HTTP/1.1\r\nContent-Length: 3\r\n\r\n", "GET /ws HTTP/1.1\r\n a\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := parseHead(b)
		if err != nil {
			return
		}
		std, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatalf("parseHead accepted %q, http.ReadRequest: %v", b, err)
		}
		if req.Method != std.Method || req.URL.Path != std.URL.Path || req.URL.RawQuery != std.URL.RawQuery || req.Host != std.Host {
			t.Fatalf("%q: got %s %s ? %s host %s, want %s %s ? %s host %s", b, req.Method, req.URL.Path, req.URL.RawQuery, req.Host,
				std.Method, std.URL.Path, std.URL.RawQuery, std.Host)
		}
		for k, v := range std.Header {
			if !slices.Equal(req.Header[k], v) {
				t.Fatalf("%q: header %s = %q, want %q", b, k, req.Header[k], v)
			}
		}
	})
}

// wsHead is the request head of a typical WebSocket client (gobwas/ws).
const wsHead = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"

// TestParseHeadAllocs bounds parseHead's allocations for a WebSocket
// handshake: the head as one string, the URL, the Request, the header map
// and one backing array for the values (it was 14 with a value slice per
// header and an allocation per Sec-WebSocket-* key).
func TestParseHeadAllocs(t *testing.T) {
	b := []byte(wsHead)
	if got := testing.AllocsPerRun(100, func() {
		if _, err := parseHead(b); err != nil {
			t.Fatal(err)
		}
	}); got > 6 {
		t.Fatalf("parseHead: %.0f allocations, want <= 6", got)
	}
}

// BenchmarkParseHead parses a WebSocket client's request head.
func BenchmarkParseHead(b *testing.B) {
	h := []byte(wsHead)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseHead(h); err != nil {
			b.Fatal(err)
		}
	}
}

// TestHeaderKeysCanonical: the keys the handshake looks up directly are in
// the form parseHead stores, whatever the client's spelling.
func TestHeaderKeysCanonical(t *testing.T) {
	for _, k := range []string{hdrUpgrade, hdrConnection, hdrWSKey, hdrWSVersion, hdrWSProtocol, hdrWSExt, hdrTE} {
		if c := textproto.CanonicalMIMEHeaderKey(k); c != k {
			t.Errorf("%q is not canonical (%q)", k, c)
		}
	}
	req, err := parseHead([]byte("GET /ws HTTP/1.1\r\nHost: x\r\nupgrade: websocket\r\nCONNECTION: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if headerFirst(req.Header, hdrWSKey) != "dGhlIHNhbXBsZSBub25jZQ==" || headerFirst(req.Header, hdrWSVersion) != "13" ||
		!headerHasToken(req.Header, hdrUpgrade, "websocket") || !headerHasToken(req.Header, hdrConnection, "upgrade") {
		t.Fatalf("header lookups failed: %v", req.Header)
	}
}
