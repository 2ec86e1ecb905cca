package main

// End-to-end tests of the daemon's lifecycle: the real binary, built once
// by TestLifecycleE2E, runs as a subprocess against real sockets. This file
// holds the harness: build, config, process control, probes and a small
// WebSocket client (gobwas/ws).

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/orchestratord/orchestratord/internal/logbuf"
)

// e2e is what every scenario shares: the binary built once.
type e2e struct {
	bin string
}

// buildDaemon builds the binary into dir.
func buildDaemon(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "orchestratord")
	args := []string{"build", "-o", bin}
	env := os.Environ()
	if raceBuild {
		args = append(args, "-race")
	} else {
		env = append(env, "CGO_ENABLED=0")
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// requireRedis skips (or, with CI=true, fails) when Redis is not at
// 127.0.0.1:6379.
func requireRedis(t *testing.T) {
	t.Helper()
	requireServer(t, "redis", "127.0.0.1:6379")
}

// requireServer skips t (or, with CI=true, fails it) when nothing accepts
// connections on addr, where the server name should listen.
func requireServer(t *testing.T, name, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s at %s is required (CI=true): %v", name, addr, err)
		}
		t.Skipf("%s at %s not reachable: %v", name, addr, err)
	}
	c.Close()
}

// getJSON GETs url and decodes its JSON body as a T, failing t on error.
func getJSON[T any](t *testing.T, url string) T {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v T
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// freePort returns a loopback address with a port free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// eventually polls cond every 5ms until it is true or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// writeFile writes a file, failing the test on error.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// configYAML returns a config for the tests: anonymous auth, loopback
// listeners, a short drain. extra is appended verbatim (backends, routes,
// sessions, limits...).
func configYAML(client, admin string, lbGrace, timeout time.Duration, extra string) string {
	return fmt.Sprintf(`node: e2e
listen:
  client: %q
  admin: %q
auth:
  anonymous: true
drain:
  lb_grace: %s
  timeout: %s
  reconnect_after: 250ms
log:
  level: info
%s`, client, admin, lbGrace, timeout, extra)
}

// logBuffer collects a process's output, line by line.
type logBuffer struct{ logbuf.Buffer }

// messages returns the "msg" of every JSON log line.
func (l *logBuffer) messages() []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		var rec struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg != "" {
			out = append(out, rec.Msg)
		}
	}
	return out
}

// count returns how many log lines have msg starting with prefix.
func (l *logBuffer) count(prefix string) int {
	n := 0
	for _, m := range l.messages() {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

// proc is a running daemon (or a wrapper that execs it).
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	logs   *logBuffer
	done   chan struct{}
	err    error // set before done is closed
	client string
	admin  string
}

// baseEnv is the test's environment without what would change the
// daemon's behaviour behind the test's back.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch {
		case strings.HasPrefix(kv, "ORCH_"), strings.HasPrefix(kv, "NOTIFY_SOCKET="),
			strings.HasPrefix(kv, "LISTEN_"), strings.HasPrefix(kv, "WATCHDOG_"):
			continue
		}
		env = append(env, kv)
	}
	return env
}

// startProc starts argv with env added to baseEnv and extra files as fds
// 3, 4, ... It is killed at the end of the test if still running.
func startProc(t *testing.T, client, admin string, env []string, files []*os.File, argv ...string) *proc {
	t.Helper()
	p := &proc{t: t, logs: &logBuffer{}, done: make(chan struct{}), client: client, admin: admin}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(baseEnv(), env...)
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	p.cmd.ExtraFiles = files
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of %s (pid %d):\n%s", filepath.Base(argv[0]), p.cmd.Process.Pid, tail(p.logs.String(), 60))
		}
	})
	return p
}

func tail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > lines {
		all = append([]string{fmt.Sprintf("... %d lines before", len(all)-lines)}, all[len(all)-lines:]...)
	}
	return strings.Join(all, "\n")
}

// startDaemon runs "orchestratord serve --config cfg".
func (e *e2e) startDaemon(t *testing.T, cfg, client, admin string, env ...string) *proc {
	t.Helper()
	return startProc(t, client, admin, env, nil, e.bin, "serve", "--config", cfg)
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// exitCode waits for the process to exit and returns its exit code.
func (p *proc) exitCode(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("process did not exit within %s", timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		p.t.Fatalf("wait: %v", p.err)
	}
	return 0
}

var probeClient = &http.Client{Timeout: 2 * time.Second}

// status GETs http://addr/path and returns the status code (0 when the
// request failed).
func status(addr, path string) int {
	resp, err := probeClient.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitReady waits until /readyz on the admin listener answers 200.
func (p *proc) waitReady(timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for status(p.admin, "/readyz") != http.StatusOK {
		select {
		case <-p.done:
			p.t.Fatalf("daemon exited before it was ready: %v", p.err)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("daemon not ready within %s", timeout)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// msg is any server message of the contract.
type msg struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Session string          `json:"session"`
	Node    string          `json:"node"`
	Resumed bool            `json:"resumed"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Reason  string          `json:"reason"`
	AfterMS int             `json:"after_ms"`
	Seq     int             `json:"seq"`
	Pos     uint64          `json:"pos"`
	Data    json.RawMessage `json:"data"`
	// Welcome of a resume (v1.1): terminals replayed, requests in flight.
	Replay   int      `json:"replay"`
	Inflight []string `json:"inflight"`
}

// terminal reports whether m ends a request.
func (m msg) terminal() bool { return m.Type == "result" || m.Type == "error" }

// wsClient is one WebSocket client. Reads and writes may run on two
// goroutines, but each on one only.
type wsClient struct {
	conn    net.Conn
	r       *bufio.Reader
	w       sync.Mutex
	welcome msg
}

// dialWS connects to ws://addr/ws?query and reads the welcome.
func dialWS(addr, query string, timeout time.Duration) (*wsClient, error) {
	return dialWSOver(nil, addr, query, timeout)
}

// dialWSRetry is dialWS as a client reconnecting after its replica died
// does it: a handshake refused with 502 (the proxy found no replica
// answering) or 503 (the replica cannot serve now: its session store is
// failing over, or it drains) is tried again, with a backoff from 100 ms
// to 1 s, until within has passed; any other failure is returned at once.
func dialWSRetry(addr, query string, timeout, within time.Duration) (*wsClient, error) {
	deadline := time.Now().Add(within)
	wait := 100 * time.Millisecond
	for {
		c, err := dialWS(addr, query, timeout)
		if st := statusOf(err); err == nil || st != http.StatusBadGateway && st != http.StatusServiceUnavailable ||
			time.Now().Add(wait).After(deadline) {
			return c, err
		}
		time.Sleep(wait) // backoff between attempts, not synchronisation
		wait = min(2*wait, time.Second)
	}
}

// dialWSOver is dialWS over an already connected TCP conn (nil: dial).
func dialWSOver(tcp net.Conn, addr, query string, timeout time.Duration) (*wsClient, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := ws.Dialer{Timeout: timeout}
	if tcp != nil {
		d.NetDial = func(context.Context, string, string) (net.Conn, error) { return tcp, nil }
	}
	u := "ws://" + addr + "/ws"
	if query != "" {
		u += "?" + query
	}
	conn, br, _, err := d.Dial(ctx, u)
	if err != nil {
		if tcp != nil {
			tcp.Close()
		}
		return nil, err
	}
	c := &wsClient{conn: conn, r: br}
	if c.r == nil {
		c.r = bufio.NewReader(conn)
	}
	m, err := c.read(timeout)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("read welcome: %w", err)
	}
	if m.Type != "welcome" || m.Session == "" {
		conn.Close()
		return nil, fmt.Errorf("first message %+v, want a welcome", m)
	}
	c.welcome = m
	return c, nil
}

// send writes one JSON text frame.
func (c *wsClient) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.w.Lock()
	defer c.w.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return wsutil.WriteClientText(c.conn, b)
}

// request sends {"type":typ,"id":id,"data":data}.
func (c *wsClient) request(typ, id string, data any) error {
	return c.send(map[string]any{"type": typ, "id": id, "data": data})
}

// read returns the next data message. A close frame is returned as a
// wsutil.ClosedError (see closeCode); pings are answered. Frames are read
// by hand: gobwas/ws's control handler refuses close codes above 1011
// (1012 service restart is an IANA-registered code the contract uses).
func (c *wsClient) read(timeout time.Duration) (msg, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	var payload []byte
	for {
		h, err := ws.ReadHeader(c.r)
		if err != nil {
			return msg{}, err
		}
		b := make([]byte, h.Length)
		if _, err := io.ReadFull(c.r, b); err != nil {
			return msg{}, err
		}
		if h.Masked {
			ws.Cipher(b, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			c.w.Lock()
			_ = wsutil.WriteClientMessage(c.conn, ws.OpPong, b)
			c.w.Unlock()
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			code, reason := 1005, ""
			if len(b) >= 2 {
				code, reason = int(binary.BigEndian.Uint16(b)), string(b[2:])
			}
			c.w.Lock()
			_ = wsutil.WriteClientMessage(c.conn, ws.OpClose, b[:min(len(b), 2)])
			c.w.Unlock()
			return msg{}, wsutil.ClosedError{Code: ws.StatusCode(code), Reason: reason}
		case ws.OpBinary:
			return msg{}, fmt.Errorf("binary frame")
		}
		payload = append(payload, b...)
		if h.Fin {
			break
		}
	}
	var m msg
	if err := json.Unmarshal(payload, &m); err != nil {
		return msg{}, fmt.Errorf("bad message %q: %w", payload, err)
	}
	return m, nil
}

// closeCode returns the close code of err when it is a close frame, else 0.
func closeCode(err error) int {
	var ce wsutil.ClosedError
	if errors.As(err, &ce) {
		return int(ce.Code)
	}
	return 0
}

func (c *wsClient) close() { c.conn.Close() }

// roundTrip sends a request and reads until its terminal, returning it.
// Messages of other ids are returned in others.
func (c *wsClient) roundTrip(typ, id string, data any, timeout time.Duration) (term msg, others []msg, err error) {
	if err := c.request(typ, id, data); err != nil {
		return msg{}, nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		m, err := c.read(time.Until(deadline))
		if err != nil {
			return msg{}, others, err
		}
		if m.ID == id && (m.terminal() || m.Type == "pong") {
			return m, others, nil
		}
		others = append(others, m)
	}
}

// statusOf returns the HTTP status of a refused handshake, else 0.
func statusOf(err error) int {
	var se ws.StatusError
	if errors.As(err, &se) {
		return int(se)
	}
	return 0
}
