package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/netpoll/refusal"
)

// TestEveryRefusalStatus drives the whole daemon with raw TCP clients into
// each handshake refusal of contract section 1 and checks the exact status,
// body (the one refusal table's row) and, for 426, the
// Sec-WebSocket-Version header.
func TestEveryRefusalStatus(t *testing.T) {
	s := startStack(t, baseYAML+"limits:\n  per_ip_connections: 1\n  max_connections: 2\n")
	send := func(local, head string) (net.Conn, *bufio.Reader) {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
		return c, bufio.NewReader(c)
	}
	handshake := func(target, extra string) string {
		return fmt.Sprintf("GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n%s\r\n", target, extra)
	}
	v13 := "Sec-WebSocket-Version: 13\r\n"
	auth := "Authorization: Bearer " + token(t, "alice", time.Hour) + "\r\n"
	check := func(name, local, head, code string) {
		t.Helper()
		_, br := send(local, head)
		raw, _ := io.ReadAll(br)
		r := refusal.Of(code)
		status, rest, _ := strings.Cut(string(raw), "\r\n")
		if want := fmt.Sprintf("HTTP/1.1 %d ", r.Status); !strings.HasPrefix(status, want) {
			t.Errorf("%s: status line %q, want %q", name, status, want)
			return
		}
		headers, body, _ := strings.Cut(rest, "\r\n\r\n")
		if body != string(r.Body()) {
			t.Errorf("%s: body %q, want %q", name, body, r.Body())
		}
		if r.Header != "" && !strings.Contains(headers+"\r\n", "\r\n"+r.Header+"\r\n") && !strings.HasPrefix(headers, r.Header+"\r\n") {
			t.Errorf("%s: headers %q lack %q", name, headers, r.Header)
		}
	}
	// open holds an accepted connection from local.
	open := func(local string) {
		t.Helper()
		_, br := send(local, handshake("/ws", v13+auth))
		line, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 101 ") {
			t.Fatalf("handshake from %s: %q %v, want 101", local, line, err)
		}
	}

	check("400 no key", "127.0.0.1", "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+v13+"\r\n", refusal.BadRequest)
	check("400 garbage", "127.0.0.1", "\x16\x03\x01\x00\x05hello", refusal.BadRequest)
	check("426 version 8", "127.0.0.1", handshake("/ws", "Sec-WebSocket-Version: 8\r\n"+auth), refusal.UnsupportedVersion)
	check("431 head over 8 KiB", "127.0.0.1", handshake("/ws", v13+auth+"X-Pad: "+strings.Repeat("p", 9000)+"\r\n"), refusal.HeadersTooLarge)
	check("401 no token", "127.0.0.1", handshake("/ws", v13), refusal.Unauthorized)
	check("403 origin", "127.0.0.1", handshake("/ws", v13+auth+"Origin: https://evil.example\r\n"), refusal.OriginNotAllowed)
	check("404 path", "127.0.0.1", handshake("/nope", v13+auth), refusal.NotFound)
	open("127.0.0.5")
	check("429 per-IP connections", "127.0.0.5", handshake("/ws", v13+auth), refusal.TooManyConnections)
	open("127.0.0.6")
	check("503 at capacity", "127.0.0.7", handshake("/ws", v13+auth), refusal.AtCapacity)
}
