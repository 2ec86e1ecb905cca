package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/golang-jwt/jwt/v5"
	"github.com/orchestratord/orchestratord/daemon/auth"
	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/lifecycle"
)

const testSecret = "0123456789abcdef0123456789abcdef-test"

// stack is a whole daemon running in this process on loopback ports.
type stack struct {
	t      *testing.T
	addr   string // client listener host:port
	admin  string // admin listener host:port
	cancel context.CancelFunc
	done   chan error
	logs   *logBuffer
}

// baseYAML is the config every stack test starts from: HS256 auth, echo
// routes, short drain.
const baseYAML = `
node: test-node
auth:
  jwt:
    leeway: 0s
ws:
  heartbeat: 5s
  allowed_origins: ["https://good.example"]
backends:
  echo: {kind: echo}
  slow: {kind: echo, delay: 300ms}
routes:
  echo: {backend: echo}
  slow: {backend: slow, timeout: 5s}
drain:
  lb_grace: 50ms
  timeout: 2s
`

func startStack(t *testing.T, yaml string, extraEnv ...string) *stack {
	t.Helper()
	env := append([]string{"ORCH_JWT_SECRET=" + testSecret}, extraEnv...)
	cfg, err := config.Parse([]byte(yaml), env)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &stack{t: t, addr: cl.Addr().String(), admin: al.Addr().String(), cancel: cancel, done: make(chan error, 1), logs: &logBuffer{}}
	go func() {
		s.done <- serve(ctx, cfg, func() (config.Config, error) { return cfg, nil }, "test", s.logs,
			map[string]net.Listener{lifecycle.SocketClient: cl, lifecycle.SocketAdmin: al})
	}()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("daemon logs:\n%s", s.logs.String())
		}
	})
	waitUntil(t, 5*time.Second, func() bool {
		resp, err := http.Get("http://" + s.addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return s
}

// stop drains the daemon and waits for serve to return.
func (s *stack) stop() {
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Errorf("serve returned %v", err)
		}
		s.done <- err // keep it for a second stop
	case <-time.After(10 * time.Second):
		s.t.Errorf("serve did not return within 10s of the drain")
	}
}

func token(t *testing.T, sub string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Mint([]byte(testSecret), sub, ttl, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// client is a WebSocket client speaking the protocol.
type client struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

func (s *stack) dial(t *testing.T, user, query string) *client {
	t.Helper()
	c, err := s.tryDial(user, query)
	if err != nil {
		t.Fatalf("dial as %s: %v", user, err)
	}
	return c
}

func (s *stack) tryDial(user, query string) (*client, error) {
	d := ws.Dialer{Timeout: 5 * time.Second, Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + token(s.t, user, time.Hour)}})}
	u := "ws://" + s.addr + "/ws"
	if query != "" {
		u += "?" + query
	}
	conn, br, _, err := d.Dial(context.Background(), u)
	if err != nil {
		return nil, err
	}
	if br == nil {
		br = bufio.NewReader(conn)
	} else {
		// Frames may already be buffered after the handshake.
		br = bufio.NewReader(io.MultiReader(br, conn))
	}
	c := &client{t: s.t, conn: conn, br: br}
	s.t.Cleanup(func() { conn.Close() })
	return c, nil
}

func (c *client) send(v string) {
	c.t.Helper()
	if err := wsutil.WriteClientText(c.conn, []byte(v)); err != nil {
		c.t.Fatalf("send %s: %v", v, err)
	}
}

// smsg is a server message, decoded loosely.
type smsg struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Seq     int             `json:"seq"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
	Session string          `json:"session"`
	Resumed bool            `json:"resumed"`
	Node    string          `json:"node"`
	HBms    int             `json:"heartbeat_ms"`
	Reason  string          `json:"reason"`
}

// closed is returned by next when the server closed the connection.
type closed struct {
	code   ws.StatusCode
	reason string
}

// next reads the next text message, or the close frame.
func (c *client) next(timeout time.Duration) (smsg, *closed) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			c.t.Fatalf("read frame header: %v", err)
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(c.br, payload); err != nil {
			c.t.Fatalf("read payload: %v", err)
		}
		switch h.OpCode {
		case ws.OpText:
			var m smsg
			if err := json.Unmarshal(payload, &m); err != nil {
				c.t.Fatalf("server sent invalid JSON %q: %v", payload, err)
			}
			return m, nil
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(payload)
			return smsg{}, &closed{code, reason}
		case ws.OpPing:
			_ = ws.WriteFrame(c.conn, ws.MaskFrame(ws.NewPongFrame(payload)))
		}
	}
}

func (c *client) expect(timeout time.Duration) smsg {
	c.t.Helper()
	m, cl := c.next(timeout)
	if cl != nil {
		c.t.Fatalf("connection closed (%d %q) while a message was expected", cl.code, cl.reason)
	}
	return m
}

func (c *client) expectClose(timeout time.Duration) closed {
	c.t.Helper()
	for {
		m, cl := c.next(timeout)
		if cl != nil {
			return *cl
		}
		c.t.Logf("message before close: %+v", m)
	}
}

func waitUntil(t *testing.T, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawHandshake sends a handshake by hand and returns everything the server
// wrote before closing.
func rawHandshake(t *testing.T, addr, path string, headers map[string]string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n", path, addr)
	for k, v := range headers {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	if _, err := conn.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	out, _ := io.ReadAll(conn)
	return string(out)
}

func TestHandshakeRefusalsNeverUpgrade(t *testing.T) {
	s := startStack(t, baseYAML)
	// A session of alice, to be resumed by bob.
	a := s.dial(t, "alice", "")
	w := a.expect(2 * time.Second)
	expired, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject: "alice", ExpiresAt: jwt.NewNumericDate(time.Now().Add(-time.Minute)),
	}).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		headers    map[string]string
		status     string
		body       string
	}{
		{"wrong path", "/nope", map[string]string{"Authorization": "Bearer " + token(t, "alice", time.Hour)}, "404", `{"error":"not_found"}`},
		{"no token", "/ws", nil, "401", `{"error":"unauthorized"}`},
		{"garbage token", "/ws?token=abc.def.ghi", nil, "401", `{"error":"unauthorized"}`},
		{"expired token", "/ws?token=" + expired, nil, "401", `{"error":"unauthorized"}`},
		{"origin not allowed", "/ws", map[string]string{"Authorization": "Bearer " + token(t, "alice", time.Hour), "Origin": "https://evil.example"}, "403", `{"error":"origin_not_allowed"}`},
		{"someone else's session", "/ws?session=" + w.Session, map[string]string{"Authorization": "Bearer " + token(t, "bob", time.Hour)}, "403", `{"error":"forbidden"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := rawHandshake(t, s.addr, tc.path, tc.headers)
			if strings.Contains(out, " 101 ") {
				t.Fatalf("refused handshake was upgraded:\n%s", out)
			}
			if !strings.HasPrefix(out, "HTTP/1.1 "+tc.status+" ") {
				t.Fatalf("status line of\n%s\nwant %s", out, tc.status)
			}
			if _, body, _ := strings.Cut(out, "\r\n\r\n"); strings.TrimSpace(body) != tc.body {
				t.Fatalf("body %q, want %q", body, tc.body)
			}
		})
	}
	// Accepted: token in the query, allowed origin, subprotocol echoed.
	out := rawHandshake(t, s.addr, "/ws?token="+token(t, "carol", time.Hour), map[string]string{"Origin": "https://good.example", "Sec-WebSocket-Protocol": "x, orchestrator.v1"})
	if !strings.HasPrefix(out, "HTTP/1.1 101 ") || !strings.Contains(out, "Sec-WebSocket-Protocol: orchestrator.v1") {
		t.Fatalf("accepted handshake:\n%s", out)
	}
}

func TestEchoSession(t *testing.T) {
	s := startStack(t, baseYAML)
	c := s.dial(t, "alice", "")
	w := c.expect(2 * time.Second)
	if w.Type != "welcome" || !strings.HasPrefix(w.Session, "s_") || w.Resumed || w.Node != "test-node" || w.HBms != 5000 {
		t.Fatalf("welcome = %+v", w)
	}
	c.send(`{"type":"echo","id":"1","data":{"text":"hi","n":[1,2]}}`)
	if m := c.expect(2 * time.Second); m.Type != "result" || m.ID != "1" || string(m.Data) != `{"text":"hi","n":[1,2]}` {
		t.Fatalf("echo = %+v", m)
	}
	c.send(`not json`)
	if m := c.expect(2 * time.Second); m.Type != "error" || m.ID != "" || m.Code != "bad_request" {
		t.Fatalf("garbage = %+v", m)
	}
	c.send(`{"type":"nope","id":"2"}`)
	if m := c.expect(2 * time.Second); m.Code != "unknown_type" || m.ID != "2" {
		t.Fatalf("unknown = %+v", m)
	}
	c.send(`{"type":"ping","id":"p"}`)
	if m := c.expect(2 * time.Second); m.Type != "pong" || m.ID != "p" {
		t.Fatalf("ping = %+v", m)
	}
	// A slow request and a fast one: the fast one is not blocked behind it.
	c.send(`{"type":"slow","id":"s1","data":1}`)
	c.send(`{"type":"echo","id":"f1","data":2}`)
	first := c.expect(2 * time.Second)
	second := c.expect(2 * time.Second)
	if first.ID != "f1" || second.ID != "s1" || second.Type != "result" {
		t.Fatalf("order %+v then %+v, want f1 before s1", first, second)
	}
	// Binary frames close 1003.
	if err := ws.WriteFrame(c.conn, ws.MaskFrame(ws.NewBinaryFrame([]byte{1, 2}))); err != nil {
		t.Fatal(err)
	}
	if cl := c.expectClose(2 * time.Second); cl.code != 1003 {
		t.Fatalf("binary frame closed with %d, want 1003", cl.code)
	}
}

func TestResumeTakeoverAndOutbox(t *testing.T) {
	s := startStack(t, baseYAML)
	a := s.dial(t, "alice", "")
	w := a.expect(2 * time.Second)

	// A second connection to the same session takes it over: 4009 for A.
	b := s.dial(t, "alice", "session="+w.Session)
	if wb := b.expect(2 * time.Second); !wb.Resumed || wb.Session != w.Session {
		t.Fatalf("resume welcome = %+v", wb)
	}
	if cl := a.expectClose(2 * time.Second); cl.code != 4009 {
		t.Fatalf("older connection closed with %d, want 4009", cl.code)
	}

	// A request whose answer is produced while nobody is attached lands in
	// the outbox and is delivered once after the next welcome.
	// The pong proves the daemon read the request before the close
	// (frames of a connection are handled in order): without it, under
	// load, the takeover below could come first, and a request the daemon
	// never received has no answer to deliver (the client sends it again:
	// contract 4a, the welcome's inflight).
	b.send(`{"type":"slow","id":"late","data":"x"}`)
	b.send(`{"type":"ping","id":"read"}`)
	if m := b.expect(2 * time.Second); m.Type != "pong" || m.ID != "read" {
		t.Fatalf("before the close, got %+v, want the pong", m)
	}
	b.conn.Close()
	waitUntil(t, 3*time.Second, func() bool { return inFlight(t, s) == 0 })
	c := s.dial(t, "alice", "session="+w.Session)
	if wc := c.expect(2 * time.Second); wc.Type != "welcome" || !wc.Resumed {
		t.Fatalf("welcome = %+v", wc)
	}
	if m := c.expect(2 * time.Second); m.Type != "result" || m.ID != "late" || string(m.Data) != `"x"` {
		t.Fatalf("outbox delivery = %+v", m)
	}
	// Exactly once: a further resume gets nothing but the welcome.
	d := s.dial(t, "alice", "session="+w.Session)
	d.expect(2 * time.Second)
	d.send(`{"type":"ping","id":"after"}`)
	if m := d.expect(2 * time.Second); m.Type != "pong" {
		t.Fatalf("after the outbox was delivered, got %+v, want only the pong", m)
	}

	// An unknown session id gives a fresh session.
	e := s.dial(t, "alice", "session=s_doesnotexist")
	if we := e.expect(2 * time.Second); we.Resumed || we.Session == "s_doesnotexist" {
		t.Fatalf("unknown id welcome = %+v", we)
	}
}

// inFlight reads the node's requests in flight from the admin API.
func inFlight(t *testing.T, s *stack) int {
	resp, err := http.Get("http://" + s.admin + "/api/node")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&v)
	for _, k := range []string{"in_flight", "inflight", "InFlight"} {
		if n, ok := v[k].(float64); ok {
			return int(n)
		}
	}
	if c, ok := v["counters"].(map[string]any); ok {
		for _, k := range []string{"in_flight", "inflight", "InFlight"} {
			if n, ok := c[k].(float64); ok {
				return int(n)
			}
		}
	}
	t.Fatalf("no in-flight count in /api/node: %v", v)
	return 0
}

func TestTokenExpiryCloses4001(t *testing.T) {
	s := startStack(t, baseYAML)
	d := ws.Dialer{Timeout: 5 * time.Second, Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + token(t, "alice", 1500*time.Millisecond)}})}
	conn, br, _, err := d.Dial(context.Background(), "ws://"+s.addr+"/ws")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if br == nil {
		br = bufio.NewReader(conn)
	}
	c := &client{t: t, conn: conn, br: br}
	c.expect(2 * time.Second)
	start := time.Now()
	if cl := c.expectClose(5 * time.Second); cl.code != 4001 {
		t.Fatalf("closed with %d, want 4001", cl.code)
	}
	if el := time.Since(start); el > 4*time.Second {
		t.Fatalf("closed %s after expiry", el)
	}
}

func TestDrainSendsReconnect(t *testing.T) {
	s := startStack(t, baseYAML)
	idle := s.dial(t, "alice", "")
	idle.expect(2 * time.Second)
	busy := s.dial(t, "bob", "")
	busy.expect(2 * time.Second)
	busy.send(`{"type":"slow","id":"b1","data":1}`)
	waitUntil(t, 2*time.Second, func() bool { return inFlight(t, s) == 1 })
	s.cancel()
	if m := idle.expect(2 * time.Second); m.Type != "reconnect" || m.Reason != "draining" {
		t.Fatalf("idle got %+v, want reconnect", m)
	}
	if cl := idle.expectClose(2 * time.Second); cl.code != 1012 {
		t.Fatalf("idle closed %d, want 1012", cl.code)
	}
	if m := busy.expect(2 * time.Second); m.Type != "result" || m.ID != "b1" {
		t.Fatalf("busy got %+v, want its result first", m)
	}
	if m := busy.expect(2 * time.Second); m.Type != "reconnect" {
		t.Fatalf("busy got %+v, want reconnect", m)
	}
	if cl := busy.expectClose(2 * time.Second); cl.code != 1012 {
		t.Fatalf("busy closed %d, want 1012", cl.code)
	}
	s.stop()
}
