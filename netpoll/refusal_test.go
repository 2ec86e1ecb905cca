package netpoll

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/netpoll/refusal"
)

// TestEngineRefusals: each refusal the engine decides itself, over raw TCP,
// with the exact response of the one table: status line, the extra header
// where the contract asks for one, and the one-line JSON body.
func TestEngineRefusals(t *testing.T) {
	_, addr := startEngine(t, Config{MaxHeaderBytes: 1024}, newEchoHandler(), acceptAll{}, nil)
	upgrade := func(extra string) string {
		return "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + extra + "\r\n"
	}
	const key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	tests := []struct {
		name, send string
		code       string
	}{
		{"400 garbage", "\x16\x03\x01\x02\x00", refusal.BadRequest},
		{"400 no key", upgrade("Sec-WebSocket-Version: 13\r\n"), refusal.BadRequest},
		{"400 POST", strings.Replace(upgrade(key+"Sec-WebSocket-Version: 13\r\n"), "GET", "POST", 1), refusal.BadRequest},
		{"426 version 8", upgrade(key + "Sec-WebSocket-Version: 8\r\n"), refusal.UnsupportedVersion},
		{"426 no version", upgrade(key), refusal.UnsupportedVersion},
		{"431 head over the limit, incomplete", "GET /ws HTTP/1.1\r\nX: " + strings.Repeat("a", 2000), refusal.HeadersTooLarge},
		{"431 head over the limit, complete", upgrade(key + "Sec-WebSocket-Version: 13\r\nX: " + strings.Repeat("a", 1100) + "\r\n"), refusal.HeadersTooLarge},
		{"404 plain without handler", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", refusal.NotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := refusal.Of(tc.code)
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(nc, tc.send)
			raw, err := io.ReadAll(nc)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			want := "HTTP/1.1 " + strconv.Itoa(r.Status) + " " + http.StatusText(r.Status) + "\r\nContent-Type: application/json\r\n" +
				"Content-Length: " + strconv.Itoa(len(r.Body())) + "\r\nConnection: close\r\n"
			if r.Header != "" {
				want += r.Header + "\r\n"
			}
			want += "\r\n" + string(r.Body())
			if string(raw) != want {
				t.Fatalf("response\n%q\nwant\n%q", raw, want)
			}
		})
	}
}
