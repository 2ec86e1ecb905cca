package netpoll

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/orchestratord/orchestratord/netpoll/refusal"
)

// readCloseCode reads frames until a close frame and returns its code,
// skipping pings.
func (c *wsClient) readCloseCode() uint16 {
	c.t.Helper()
	for {
		h, p, err := c.readFrame()
		if err != nil {
			c.t.Fatalf("waiting for close frame: %v", err)
		}
		if h.OpCode == ws.OpClose {
			if len(p) < 2 {
				return 0
			}
			return binary.BigEndian.Uint16(p)
		}
	}
}

func TestRefusedFrames(t *testing.T) {
	tests := []struct {
		name     string
		send     []byte
		wantCode uint16
	}{
		{"binary", frame(true, 0, ws.OpBinary, []byte{1, 2, 3}), 1003},
		// Only the header of a 65537-byte message: refused from the header.
		{"too-big", frame(true, 0, ws.OpText, make([]byte, 65537))[:14], 1009},
		{"unmasked", []byte{0x81, 0x02, 'h', 'i'}, 1002},
	}
	h := newEchoHandler()
	_, addr := startEngine(t, Config{CloseWait: time.Second}, h, acceptAll{}, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := dialWS(t, addr)
			h.waitOpen(t)
			c.write(tc.send)
			if got := c.readCloseCode(); got != tc.wantCode {
				t.Fatalf("close code = %d, want %d", got, tc.wantCode)
			}
			c.write(closeFrame(uint16(tc.wantCode), ""))
			c.expectEOF()
			c.nc.Close()
			if ev := h.waitClose(t); uint16(ev.code) != tc.wantCode {
				t.Fatalf("OnClose code = %d, want %d", ev.code, tc.wantCode)
			}
		})
	}
}

func TestSlowConsumer(t *testing.T) {
	h := newEchoHandler()
	_, addr := startEngine(t, Config{OutboundQueueBytes: 64 << 10, CloseWait: 2 * time.Second}, h, acceptAll{}, nil)
	d := net.Dialer{}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, upgradeRequest)
	br := bufio.NewReader(nc)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	c := h.waitOpen(t)
	msg := bytes.Repeat([]byte("x"), 16<<10)
	var sendErr error
	sent := 0
	for ; sent < 10000; sent++ {
		if sendErr = c.Send(msg); sendErr != nil {
			break
		}
	}
	if !errors.Is(sendErr, ErrSlowConsumer) {
		t.Fatalf("Send error after %d messages = %v, want ErrSlowConsumer", sent, sendErr)
	}
	if err := c.Send(msg); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after overflow = %v, want ErrClosed", err)
	}
	// Reading now drains the queue; the last frame is the 4008 close.
	wc := &wsClient{t: t, nc: nc, br: br}
	if got := wc.readCloseCode(); got != 4008 {
		t.Fatalf("close code = %d, want 4008", got)
	}
	wc.write(closeFrame(4008, ""))
	ev := h.waitClose(t)
	if ev.code != CloseSlowConsumer || !errors.Is(ev.err, ErrSlowConsumer) {
		t.Fatalf("OnClose = %d %v, want 4008 ErrSlowConsumer", ev.code, ev.err)
	}
}

func TestHeartbeat(t *testing.T) {
	h := newEchoHandler()
	hb := 200 * time.Millisecond
	_, addr := startEngine(t, Config{Heartbeat: hb}, h, acceptAll{}, nil)

	t.Run("silent-peer-dropped", func(t *testing.T) {
		c := dialWS(t, addr)
		h.waitOpen(t)
		start := time.Now()
		pings := 0
		for {
			hd, _, err := c.readFrame()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("read: %v, want EOF", err)
				}
				break
			}
			if hd.OpCode == ws.OpPing {
				pings++
			}
		}
		el := time.Since(start)
		ev := h.waitClose(t)
		if ev.code != CloseAbnormal || !errors.Is(ev.err, ErrHeartbeatTimeout) {
			t.Fatalf("OnClose = %d %v, want 1006 ErrHeartbeatTimeout", ev.code, ev.err)
		}
		// The server counts from its last read, a little before start;
		// the wheel ticks every hb/8.
		if pings < 1 || el < 2*hb-hb/4 || el > 2*hb+500*time.Millisecond {
			t.Fatalf("dropped after %v with %d pings, want about %v and >= 1 ping", el, pings, 2*hb)
		}
	})

	t.Run("answering-peer-kept", func(t *testing.T) {
		c := dialWS(t, addr)
		h.waitOpen(t)
		deadline := time.Now().Add(5 * hb)
		pongs := 0
		for time.Now().Before(deadline) {
			hd, p, err := c.readFrame()
			if err != nil {
				t.Fatalf("connection lost after %d pongs: %v", pongs, err)
			}
			if hd.OpCode == ws.OpPing {
				c.write(frame(true, 0, ws.OpPong, p))
				pongs++
			}
		}
		if pongs < 3 {
			t.Fatalf("got %d pings in %v, want >= 3", pongs, 5*hb)
		}
	})
}

func TestCloseAt(t *testing.T) {
	h := newEchoHandler()
	_, addr := startEngine(t, Config{}, h, acceptAll{}, nil)
	c := dialWS(t, addr)
	sc := h.waitOpen(t)
	at := time.Now().Add(150 * time.Millisecond)
	sc.CloseAt(at, CloseTokenExpired, "token expired")
	_, p, err := c.readFrame()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if got := binary.BigEndian.Uint16(p); got != 4001 || string(p[2:]) != "token expired" {
		t.Fatalf("close frame = %d %q, want 4001 \"token expired\"", got, p[2:])
	}
	if time.Now().Before(at) {
		t.Fatalf("closed %v before CloseAt time", time.Until(at))
	}
	c.write(closeFrame(4001, ""))
	c.expectEOF()
	if ev := h.waitClose(t); ev.code != CloseTokenExpired || ev.err != nil {
		t.Fatalf("OnClose = %d %v, want 4001 nil", ev.code, ev.err)
	}
	if err := sc.Send([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after close = %v, want ErrClosed", err)
	}
}

// refuser refuses every handshake.
type refuser struct{ seen chan *Request }

func (r refuser) Admit(req *Request) Decision {
	r.seen <- &Request{Method: req.Method, Path: req.Path, RawQuery: req.RawQuery, Remote: req.Remote, Header: req.Header.Clone()}
	return Decision{Refusal: refusal.Of(refusal.Unauthorized)}
}

func TestGatekeeperRefusal(t *testing.T) {
	g := refuser{seen: make(chan *Request, 1)}
	_, addr := startEngine(t, Config{}, newEchoHandler(), g, nil)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, upgradeRequest)
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	raw, err := io.ReadAll(nc)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	want := "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 25\r\nConnection: close\r\n\r\n{\"error\":\"unauthorized\"}\n"
	if string(raw) != want {
		t.Fatalf("response = %q, want %q", raw, want)
	}
	if bytes.Contains(raw, []byte("101")) {
		t.Fatalf("response contains 101: %q", raw)
	}
	req := <-g.seen
	if req.Method != "GET" || req.Path != "/ws" || req.RawQuery != "x=1" || !req.Remote.IsValid() || req.Header.Get("Sec-WebSocket-Version") != "13" {
		t.Fatalf("Admit saw %+v", req)
	}
}

// statusGate refuses with a fixed status, built as a literal outside the
// table (a Gatekeeper bug).
type statusGate int

func (g statusGate) Admit(*Request) Decision {
	return Decision{Refusal: &refusal.Refusal{Status: int(g), Code: "x"}}
}

// TestRefusalNeverUpgrades: whatever status the Gatekeeper gives, a refusal
// is never a 101 nor a success.
func TestRefusalNeverUpgrades(t *testing.T) {
	tests := []struct {
		status int
		want   string
	}{
		{101, "HTTP/1.1 500 "}, {200, "HTTP/1.1 500 "}, {302, "HTTP/1.1 500 "}, {403, "HTTP/1.1 403 "}, {429, "HTTP/1.1 429 "}, {503, "HTTP/1.1 503 "},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			_, addr := startEngine(t, Config{}, newEchoHandler(), statusGate(tc.status), nil)
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			io.WriteString(nc, upgradeRequest)
			_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			raw, err := io.ReadAll(nc)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(raw), tc.want) || bytes.Contains(raw, []byte(" 101 ")) {
				t.Fatalf("response %q, want prefix %q", raw, tc.want)
			}
		})
	}
}

func TestPlainHandler(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"ok"}`)
	})
	h := newEchoHandler()
	_, addr := startEngine(t, Config{}, h, acceptAll{}, mux)
	tests := []struct {
		path       string
		wantStatus int
		wantBody   string
	}{
		{"/healthz", 200, `{"status":"ok"}`},
		{"/nope", 404, "404 page not found\n"},
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := client.Get("http://" + addr + tc.path)
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus || string(body) != tc.wantBody {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, body, tc.wantStatus, tc.wantBody)
			}
			if !resp.Close {
				t.Fatalf("response without Connection: close")
			}
		})
	}
	// The same port still upgrades.
	c := dialWS(t, addr)
	c.write(text("hi"))
	c.expect([]want{wText("hi")})
}

func TestBadHandshakes(t *testing.T) {
	h := newEchoHandler()
	_, addr := startEngine(t, Config{MaxHeaderBytes: 1024, HandshakeTimeout: 300 * time.Millisecond}, h, acceptAll{}, nil)
	tests := []struct {
		name       string
		send       string
		wantStatus string // "" means: closed without response
	}{
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "HTTP/1.1 400 "},
		{"garbage-line", "hello world\r\n\r\n", "HTTP/1.1 400 "},
		{"bad-version-token", "GET / FTP/1.0\r\n\r\n", "HTTP/1.1 400 "},
		{"oversized", "GET /ws HTTP/1.1\r\nX: " + strings.Repeat("a", 2000), "HTTP/1.1 431 "},
		{"upgrade-without-key", "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", "HTTP/1.1 400 "},
		{"wrong-version", "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", "HTTP/1.1 426 "},
		{"no-plain-handler", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 404 "},
		{"half-handshake", "GET /ws HTTP/1.1\r\nHost: x\r\n", ""},
		{"nothing", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			start := time.Now()
			io.WriteString(nc, tc.send)
			_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			raw, err := io.ReadAll(nc)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if !strings.HasPrefix(string(raw), tc.wantStatus) || (tc.wantStatus == "" && len(raw) != 0) {
				t.Fatalf("response = %.80q, want prefix %q", raw, tc.wantStatus)
			}
			if tc.wantStatus == "" && time.Since(start) < 250*time.Millisecond {
				t.Fatalf("closed after %v, before the handshake timeout", time.Since(start))
			}
		})
	}
}

// TestPipelinedFrame sends the first frame in the same write as the
// handshake.
func TestPipelinedFrame(t *testing.T) {
	h := newEchoHandler()
	_, addr := startEngine(t, Config{}, h, acceptAll{}, nil)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write(append([]byte(upgradeRequest), text("early")...))
	br := bufio.NewReader(nc)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	c := &wsClient{t: t, nc: nc, br: br}
	c.expect([]want{wText("early")})
}

func TestEngineCloseAndOnCloseOnce(t *testing.T) {
	before := runtime.NumGoroutine()
	h := newEchoHandler()
	e, err := New(Config{CloseWait: 500 * time.Millisecond}, h, acceptAll{}, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.Serve(ln) }()
	const n = 20
	clients := make([]*wsClient, n)
	for i := range clients {
		clients[i] = dialWS(t, ln.Addr().String())
		clients[i].write(text(fmt.Sprint(i)))
		clients[i].expect([]want{wText(fmt.Sprint(i))})
	}
	eventually(t, 2*time.Second, "Len() == n", func() bool { return e.Len() == n })
	seen := 0
	e.Range(func(*Conn) bool { seen++; return true })
	if seen != n {
		t.Fatalf("Range saw %d conns, want %d", seen, n)
	}
	if a := time.Since(e.Alive()); a > time.Second {
		t.Fatalf("Alive() is %v old", a)
	}
	// Half the clients answer the close; the rest stay silent and are cut
	// after CloseWait.
	for i, c := range clients[:n/2] {
		go func() {
			if code := c.readCloseCode(); code == 1001 {
				c.nc.Write(closeFrame(1001, ""))
			}
			_ = i
		}()
	}
	closed := make(chan struct{})
	go func() { e.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	h.mu.Lock()
	for id, k := range h.closed {
		if k != 1 {
			t.Errorf("conn %d: OnClose called %d times", id, k)
		}
	}
	if len(h.closed) != n {
		t.Errorf("OnClose for %d conns, want %d", len(h.closed), n)
	}
	h.mu.Unlock()
	if e.Len() != 0 {
		t.Fatalf("Len after Close = %d", e.Len())
	}
	e.Close() // idempotent
	eventually(t, 2*time.Second, "engine goroutines exit", func() bool { return runtime.NumGoroutine() <= before+n/2+2 })
}

// plainListener hides the listener's socket, so Serve goes through
// ln.Accept and takes each connection's fd with SyscallConn().Control.
type plainListener struct{ net.Listener }

func TestServeAcceptFallback(t *testing.T) {
	h := newEchoHandler()
	e, err := New(Config{CloseWait: 500 * time.Millisecond}, h, nil, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.Serve(plainListener{ln}) }()
	c := dialWS(t, ln.Addr().String())
	c.write(text("via Accept"))
	c.expect([]want{wText("via Accept")})
	c.write(closeFrame(1000, ""))
	c.expect([]want{wClose(1000)})
	c.expectEOF()
	if ev := h.waitClose(t); ev.code != CloseNormal {
		t.Fatalf("OnClose code %d, want 1000", ev.code)
	}
	e.mu.RLock()
	kept := len(e.netConns)
	e.mu.RUnlock()
	if kept != 0 {
		t.Fatalf("%d net.Conns kept after close, want 0", kept)
	}
	e.Close()
	if err := <-served; err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
}

// TestServeListenerClosed: closing the listener from outside ends Serve
// with an error, and the engine still closes cleanly.
func TestServeListenerClosed(t *testing.T) {
	e, err := New(Config{CloseWait: 200 * time.Millisecond}, newEchoHandler(), nil, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.Serve(ln) }()
	dialWS(t, ln.Addr().String()) // Serve is running
	ln.Close()
	select {
	case err := <-served:
		if err == nil {
			t.Fatal("Serve = nil after an external ln.Close, want an error")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not return after ln.Close")
	}
	if err := e.Serve(ln); err == nil {
		t.Fatal("Serve on a closed listener = nil, want an error")
	}
}
