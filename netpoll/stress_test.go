package netpoll

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// echoRoundTrips checks that a fresh client gets n echoes, each within max.
func echoRoundTrips(t *testing.T, addr string, n int, max time.Duration) {
	t.Helper()
	c := dialWS(t, addr)
	for i := range n {
		start := time.Now()
		msg := fmt.Sprintf("ping %d", i)
		c.write(text(msg))
		c.expect([]want{wText(msg)})
		if d := time.Since(start); d > max {
			t.Fatalf("echo %d took %v, want <= %v", i, d, max)
		}
	}
}

// TestIdleHalfOpen opens thousands of connections that never finish their
// handshake (half of them sent part of a request head) and checks that a
// normal client is still served promptly, that the engine's goroutine count
// does not grow with them, and that their memory stays bounded. The clients
// are raw sockets, so the heap figure is the engine's alone.
func TestIdleHalfOpen(t *testing.T) {
	n := 8000 // 2 fds per pair in one process; the fd limit is 20,000
	if testing.Short() {
		n = 1000
	}
	h := newEchoHandler()
	e, addr := startEngine(t, Config{HandshakeTimeout: time.Minute}, h, acceptAll{}, nil)
	base := runtime.NumGoroutine()
	m0 := heapStack()
	sa := &unix.SockaddrInet4{Port: e.listenerPortForTest(t, addr), Addr: [4]byte{127, 0, 0, 1}}
	fds := make([]int, 0, n)
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	for i := range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("socket %d: %v", i, err)
		}
		fds = append(fds, fd)
		if err := unix.Connect(fd, sa); err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
		if i%2 == 0 {
			if _, err := unix.Write(fd, []byte("GET /ws HTTP/1.1\r\nHost: half")); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
		}
	}
	eventually(t, 10*time.Second, "all half-open conns accepted and read", func() bool {
		k, heads := 0, 0
		t := *e.tab.Load()
		for i := range t {
			if c := t[i].Load(); c != nil {
				k++
				c.mu.Lock()
				if c.state == stHandshake && c.bytesIn.Load() > 0 {
					heads++
				}
				c.mu.Unlock()
			}
		}
		return k >= n && heads >= n/2
	})
	echoRoundTrips(t, addr, 50, time.Second)
	per := float64(int64(heapStack())-int64(m0)) / float64(n)
	t.Logf("%d half-open conns: %.0f B heap+stack each", n, per)
	if per > 1024 {
		t.Errorf("heap+stack per half-open conn = %.0f B, want <= 1024", per)
	}
	if g := runtime.NumGoroutine(); g > base+8 {
		t.Fatalf("goroutines grew from %d to %d with %d idle conns", base, g, n)
	}
	if e.Len() != 1 {
		t.Fatalf("Len = %d, want 1: the echo client (half-open conns are not open)", e.Len())
	}
}

// TestPartialFrameHeaders has thousands of upgraded peers send two bytes of a
// frame header and stall: no worker may wait for them, other clients are
// served, and each stalled frame completes when its peer goes on.
func TestPartialFrameHeaders(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 300
	}
	h := newEchoHandler()
	_, addr := startEngine(t, Config{}, h, acceptAll{}, nil)
	msg := []byte("hello")
	full := frame(true, 0, ws.OpText, msg)
	clients := make([]*wsClient, n)
	for i := range clients {
		clients[i] = dialWS(t, addr)
		clients[i].write(full[:2])
	}
	echoRoundTrips(t, addr, 50, time.Second)
	for _, c := range clients {
		c.write(full[2:])
	}
	for i, c := range clients {
		if _, p, err := c.readFrame(); err != nil || string(p) != "hello" {
			t.Fatalf("client %d: got %q %v, want the echo", i, p, err)
		}
	}
}

// TestManyClientsEcho has many clients echo at once through the worker pool,
// with messages split across reads, and checks every echo.
func TestManyClientsEcho(t *testing.T) {
	clients, msgs := 100, 100
	if testing.Short() {
		clients = 20
	}
	h := newEchoHandler()
	_, addr := startEngine(t, Config{}, h, acceptAll{}, nil)
	errs := make(chan error, clients)
	for k := range clients {
		c := dialWS(t, addr)
		go func() {
			for i := range msgs {
				msg := fmt.Sprintf("client %d message %d %s", k, i, strings.Repeat("é", i*7))
				f := text(msg)
				// Split each frame in two writes to exercise partial reads.
				if _, err := c.nc.Write(f[:len(f)/2]); err != nil {
					errs <- err
					return
				}
				if _, err := c.nc.Write(f[len(f)/2:]); err != nil {
					errs <- err
					return
				}
				_, p, err := c.readFrame()
				if err != nil {
					errs <- err
					return
				}
				if string(p) != msg {
					errs <- fmt.Errorf("client %d: got %.30q, want %.30q", k, p, msg)
					return
				}
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
