package netpoll

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// closeEvent is one OnClose call.
type closeEvent struct {
	id   uint64
	code CloseCode
	err  error
}

// echoHandler echoes every text message and records opens and closes.
type echoHandler struct {
	opens  chan *Conn
	closes chan closeEvent
	mu     sync.Mutex
	closed map[uint64]int // OnClose calls per conn id
}

func newEchoHandler() *echoHandler {
	return &echoHandler{opens: make(chan *Conn, 20000), closes: make(chan closeEvent, 20000), closed: map[uint64]int{}}
}

func (h *echoHandler) OnOpen(c *Conn) {
	select {
	case h.opens <- c:
	default:
	}
}

func (h *echoHandler) OnMessage(c *Conn, p []byte) { _ = c.Send(p) }

func (h *echoHandler) OnClose(c *Conn, code CloseCode, err error) {
	h.mu.Lock()
	h.closed[c.ID()]++
	h.mu.Unlock()
	select {
	case h.closes <- closeEvent{c.ID(), code, err}:
	default:
	}
}

// waitOpen returns the next opened conn.
func (h *echoHandler) waitOpen(t *testing.T) *Conn {
	t.Helper()
	select {
	case c := <-h.opens:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no OnOpen within 5s")
		return nil
	}
}

// waitClose returns the next OnClose event.
func (h *echoHandler) waitClose(t *testing.T) closeEvent {
	t.Helper()
	select {
	case ev := <-h.closes:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no OnClose within 5s")
		return closeEvent{}
	}
}

// acceptAll is a Gatekeeper that admits everything.
type acceptAll struct{}

func (acceptAll) Admit(*Request) Decision { return Decision{} }

// testLogger writes to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// startEngine serves an engine on a random loopback port until the test ends.
func startEngine(t *testing.T, cfg Config, h Handler, g Gatekeeper, plain http.Handler) (*Engine, string) {
	t.Helper()
	e, err := New(cfg, h, g, plain, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- e.Serve(ln) }()
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve returned %v, want nil after Close", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return e, ln.Addr().String()
}

// upgradeRequest is a valid client handshake for /ws.
const upgradeRequest = "GET /ws?x=1 HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// wsClient speaks raw frames to the engine.
type wsClient struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

// dialWS connects and completes the handshake.
func dialWS(t testing.TB, addr string) *wsClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(nc, upgradeRequest); err != nil {
		t.Fatalf("write handshake: %v", err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read handshake response: %v", err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("handshake status = %d, want 101", resp.StatusCode)
	}
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; got != want {
		t.Fatalf("Sec-WebSocket-Accept = %q, want %q", got, want)
	}
	return &wsClient{t: t, nc: nc, br: br}
}

// testMask is the masking key of client frames.
var testMask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// frame builds a masked client frame.
func frame(fin bool, rsv byte, op ws.OpCode, payload []byte) []byte {
	var b bytes.Buffer
	h := ws.Header{Fin: fin, Rsv: rsv, OpCode: op, Masked: true, Mask: testMask, Length: int64(len(payload))}
	if err := ws.WriteHeader(&b, h); err != nil {
		panic(err)
	}
	p := append([]byte(nil), payload...)
	ws.Cipher(p, testMask, 0)
	b.Write(p)
	return b.Bytes()
}

// text is a single-frame masked text message.
func text(s string) []byte { return frame(true, 0, ws.OpText, []byte(s)) }

// closeFrame builds a masked close frame with code and reason.
func closeFrame(code uint16, reason string) []byte {
	p := binary.BigEndian.AppendUint16(nil, code)
	return frame(true, 0, ws.OpClose, append(p, reason...))
}

// write sends raw bytes.
func (c *wsClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// readFrame reads one server frame, which must be unmasked.
func (c *wsClient) readFrame() (ws.Header, []byte, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := ws.ReadHeader(c.br)
	if err != nil {
		return h, nil, err
	}
	if h.Masked {
		return h, nil, errors.New("server frame is masked")
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return h, nil, err
	}
	return h, p, nil
}

// expectEOF reads until the server closes the TCP connection.
func (c *wsClient) expectEOF() {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, c.br)
	if err != nil {
		c.t.Fatalf("waiting for EOF: %v (after %d bytes)", err, n)
	}
}

// eventually polls cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

// listenerPortForTest returns the port of addr.
func (e *Engine) listenerPortForTest(t *testing.T, addr string) int {
	t.Helper()
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return ta.Port
}

// listenForBench listens on a random loopback port.
func listenForBench(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return ln
}
