package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const socketActivate = "/usr/bin/systemd-socket-activate"

// echoConfig is a config with one echo route. The listen addresses are
// ones nothing listens on: with socket activation they must not be used.
func echoConfig(t *testing.T, dir string) string {
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, configYAML(freePort(t), freePort(t), 200*time.Millisecond, 3*time.Second, `backends:
  echo: {kind: echo}
routes:
  echo: {backend: echo}
`))
	return cfg
}

// echoOnce checks that c answers an echo request.
func echoOnce(t *testing.T, c *wsClient, id string) {
	t.Helper()
	res, _, err := c.roundTrip("echo", id, id, 5*time.Second)
	if err != nil || res.Type != "result" || string(res.Data) != strconv.Quote(id) {
		t.Errorf("echo %s: got %+v, %v", id, res, err)
	}
}

// testSocketActivate runs the daemon under systemd-socket-activate with
// two named sockets (client, admin). systemd-socket-activate starts the
// daemon only on the first connection, so the clients below connect
// before the daemon accepts anything: they wait in the backlog and are
// served.
func (e *e2e) testSocketActivate(t *testing.T) {
	if _, err := os.Stat(socketActivate); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required with CI=true: %v", socketActivate, err)
		}
		t.Skipf("%s not installed", socketActivate)
	}
	dir := t.TempDir()
	cfg := echoConfig(t, dir)
	client, admin := freePort(t), freePort(t)
	p := startProc(t, client, admin, nil, nil, socketActivate,
		"-l", client, "-l", admin, "--fdname=client:admin",
		"--", e.bin, "serve", "--config", cfg)
	eventually(t, 5*time.Second, "systemd-socket-activate listening", func() bool {
		return strings.Count(p.logs.String(), "Listening on") == 2
	})

	const n = 20
	clients := make([]*wsClient, n)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialWS(client, "", 10*time.Second)
			if err != nil {
				t.Errorf("client %d: %v", i, err)
				return
			}
			clients[i] = c
			echoOnce(t, c, "a"+strconv.Itoa(i))
		}()
	}
	wg.Wait()
	for _, c := range clients {
		if c != nil {
			c.close()
		}
	}
	if c := status(admin, "/readyz"); c != 200 {
		t.Errorf("admin /readyz on the activated admin socket: %d, want 200", c)
	}
	if !strings.Contains(p.logs.String(), `"client":"`+client+`"`) {
		t.Errorf("the daemon did not serve on the activated client socket %s", client)
	}
	// systemd-socket-activate exec'd the daemon: same pid.
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(10 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// holder holds listening sockets and runs the daemon behind them the way
// systemd does: fds 3 and 4, LISTEN_FDS=2, LISTEN_FDNAMES=client:admin and
// LISTEN_PID set to the daemon's pid (by a shell that execs it).
type holder struct {
	client, admin string
	files         []*os.File
}

func newHolder(t *testing.T) *holder {
	h := &holder{}
	for _, name := range []string{"client", "admin"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		ln.Close() // f is a duplicate: the socket stays open
		if name == "client" {
			h.client = ln.Addr().String()
		} else {
			h.admin = ln.Addr().String()
		}
		h.files = append(h.files, f)
		t.Cleanup(func() { f.Close() })
	}
	return h
}

func (h *holder) start(t *testing.T, e *e2e, cfg string) *proc {
	return startProc(t, h.client, h.admin, []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=client:admin"}, h.files,
		"/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, e.bin, "serve", "--config", cfg)
}

// testRestartHeldSockets: the daemon is stopped and started again behind
// the same listening sockets (what systemctl restart does with socket
// units). A prober connects all along: no connection is refused. Clients
// that connect while no daemon runs wait in the backlog and are served by
// the next one; clients of the first get reconnect and 1012, and
// reconnect to the second.
func (e *e2e) testRestartHeldSockets(t *testing.T) {
	dir := t.TempDir()
	cfg := echoConfig(t, dir)
	h := newHolder(t)

	p1 := h.start(t, e, cfg)
	p1.waitReady(10 * time.Second)
	const n = 10
	first := make([]*wsClient, n)
	for i := range first {
		c, err := dialWS(h.client, "", 5*time.Second)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		defer c.close()
		first[i] = c
		echoOnce(t, c, "one-"+strconv.Itoa(i))
	}

	// The prober: TCP connects all along; none may be refused.
	var (
		mu       sync.Mutex
		refused  []error
		accepted int
	)
	stop := make(chan struct{})
	var probing sync.WaitGroup
	probing.Add(1)
	go func() {
		defer probing.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", h.client, time.Second)
			mu.Lock()
			if err != nil {
				refused = append(refused, err)
			} else {
				accepted++
				c.Close()
			}
			mu.Unlock()
			time.Sleep(5 * time.Millisecond) // polling interval
		}
	}()

	p1.signal(syscall.SIGTERM)
	for i, c := range first {
		var last msg
		for {
			m, err := c.read(5 * time.Second)
			if code := closeCode(err); code != 0 {
				if code != 1012 || last.Type != "reconnect" {
					t.Errorf("client %d: closed %d after %+v, want reconnect then 1012", i, code, last)
				}
				break
			}
			if err != nil {
				t.Fatalf("client %d: %v", i, err)
			}
			last = m
		}
	}
	if code := p1.exitCode(10 * time.Second); code != 0 {
		t.Fatalf("first daemon: exit code %d, want 0", code)
	}

	// No daemon runs now. Connections are accepted by the kernel into the
	// backlog; their handshakes wait for the next daemon.
	const waiting = 10
	type dialed struct {
		c   *wsClient
		err error
	}
	results := make(chan dialed, waiting)
	for i := 0; i < waiting; i++ {
		tcp, err := net.DialTimeout("tcp", h.client, time.Second)
		if err != nil {
			t.Fatalf("connect while no daemon runs: %v (refused: the socket was not held)", err)
		}
		go func() {
			c, err := dialWSOver(tcp, h.client, "", 10*time.Second)
			results <- dialed{c, err}
		}()
	}
	select {
	case r := <-results:
		t.Fatalf("a handshake completed with no daemon running: %+v", r)
	case <-time.After(200 * time.Millisecond): // asserting that nothing happens meanwhile
	}

	p2 := h.start(t, e, cfg)
	for i := 0; i < waiting; i++ {
		r := <-results
		if r.err != nil {
			t.Errorf("client queued during the restart: %v", r.err)
			continue
		}
		echoOnce(t, r.c, "queued-"+strconv.Itoa(i))
		r.c.close()
	}
	// The first daemon's clients reconnect, resuming their sessions.
	for i, c := range first {
		c2, err := dialWS(h.client, "session="+c.welcome.Session, 5*time.Second)
		if err != nil {
			t.Errorf("client %d: reconnect: %v", i, err)
			continue
		}
		echoOnce(t, c2, "two-"+strconv.Itoa(i))
		c2.close()
	}
	p2.waitReady(5 * time.Second)
	close(stop)
	probing.Wait()
	if len(refused) != 0 {
		t.Errorf("%d of %d connects refused during the restart: %v", len(refused), len(refused)+accepted, errors.Join(refused...))
	}
	t.Logf("restart: %d connects accepted, none refused", accepted)
	p2.signal(syscall.SIGTERM)
	if code := p2.exitCode(10 * time.Second); code != 0 {
		t.Errorf("second daemon: exit code %d, want 0", code)
	}
}
