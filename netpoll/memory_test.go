package netpoll

import (
	"bytes"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dialRawUpgraded opens n upgraded connections as raw blocking sockets, so
// that the client side adds no Go memory to what the test measures.
func dialRawUpgraded(t *testing.T, port int, n int) []int {
	t.Helper()
	sa := &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
	fds := make([]int, 0, n)
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	buf := make([]byte, 512)
	for i := range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("socket %d: %v", i, err)
		}
		fds = append(fds, fd)
		tv := unix.Timeval{Sec: 5}
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		// Blocking system calls from Go: a signal (the runtime's
		// preemption) interrupts them with EINTR; try again.
		for err := unix.Connect(fd, sa); err != nil && err != unix.EISCONN; err = unix.Connect(fd, sa) {
			if err != unix.EINTR && err != unix.EALREADY {
				t.Fatalf("connect %d: %v", i, err)
			}
			time.Sleep(time.Millisecond)
		}
		for _, err := unix.Write(fd, []byte(upgradeRequest)); err != nil; _, err = unix.Write(fd, []byte(upgradeRequest)) {
			if err != unix.EINTR {
				t.Fatalf("write %d: %v", i, err)
			}
		}
		got := 0
		for !bytes.Contains(buf[:got], []byte("\r\n\r\n")) {
			k, err := unix.Read(fd, buf[got:])
			if err == unix.EINTR {
				continue
			}
			if err != nil || k <= 0 {
				t.Fatalf("read %d: %v", i, err)
			}
			got += k
		}
		if !bytes.HasPrefix(buf, []byte("HTTP/1.1 101 ")) {
			t.Fatalf("conn %d: %q", i, buf[:got])
		}
	}
	return fds
}

// heapStack returns HeapInuse+StackInuse after a GC.
func heapStack() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// TestIdleConnCost checks what an idle upgraded connection costs: Go heap
// and stack (at most 320 B; the RSS goal is 0.5 KB), exactly one fd, and no
// goroutine. The full measurement with RSS is netpoll/internal/idlebench.
func TestIdleConnCost(t *testing.T) {
	n := 2000
	h := &countingHandler{}
	e, addr := startEngine(t, Config{Heartbeat: time.Hour}, h, nil, nil)
	port := e.listenerPortForTest(t, addr)
	dialRawUpgraded(t, port, 16) // warm pools and code paths
	fdsBefore := countFDs(t)
	g0 := runtime.NumGoroutine()
	m0 := heapStack()
	dialRawUpgraded(t, port, n)
	eventually(t, 10*time.Second, "all conns open", func() bool { return e.Len() == n+16 })
	m1 := heapStack()
	per := float64(int64(m1)-int64(m0)) / float64(n)
	fds := float64(countFDs(t)-fdsBefore-n) / float64(n) // minus the client sockets
	t.Logf("per idle conn: %.0f B heap+stack, %.2f server fds; goroutines %d -> %d", per, fds, g0, runtime.NumGoroutine())
	// Conn is 192 B (TestConnSize) and its fd-table slot 8 B, plus the
	// table's doubling slack: 320 leaves room for that slack and noise,
	// not for a second per-connection object.
	if per > 320 {
		t.Errorf("heap+stack per idle conn = %.0f B, want <= 320", per)
	}
	if fds != 1 {
		t.Errorf("server fds per conn = %.2f, want 1", fds)
	}
	if g := runtime.NumGoroutine(); g > g0+2 {
		t.Errorf("goroutines grew from %d to %d", g0, g)
	}
}

// countingHandler does nothing but count.
type countingHandler struct{}

func (countingHandler) OnOpen(*Conn)                    {}
func (countingHandler) OnMessage(*Conn, []byte)         {}
func (countingHandler) OnClose(*Conn, CloseCode, error) {}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}
