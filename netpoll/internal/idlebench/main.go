// Command idlebench measures what an idle WebSocket connection costs the
// netpoll engine: Go-side RSS (VmRSS delta after GC), heap and stack in use,
// file descriptors and goroutines per connection.
//
// By default it runs the engine and N raw-socket clients in one process
// (2 fds per pair: N=9000 fits a 20,000 fd limit). The clients are plain
// sockets driven by system calls, so they add no Go memory to the figures.
// For larger N, run the two sides as separate processes:
//
//	idlebench -mode server -listen 127.0.0.1:9100 -n 19000
//	idlebench -mode client -addr 127.0.0.1:9100 -n 19000
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/orchestratord/orchestratord/netpoll"
	"golang.org/x/sys/unix"
)

// nopHandler accepts connections and ignores messages.
type nopHandler struct{}

func (nopHandler) OnOpen(*netpoll.Conn)                            {}
func (nopHandler) OnMessage(*netpoll.Conn, []byte)                 {}
func (nopHandler) OnClose(*netpoll.Conn, netpoll.CloseCode, error) {}

// sample is one measurement of the process.
type sample struct {
	rss, heapStack uint64
	fds, goroutine int
}

func measure() sample {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return sample{rss: vmRSS(), heapStack: ms.HeapInuse + ms.StackInuse, fds: countFDs(), goroutine: runtime.NumGoroutine()}
}

// vmRSS reads VmRSS from /proc/self/status, in bytes.
func vmRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

const request = "GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// dialRaw opens n upgraded connections as raw blocking sockets.
func dialRaw(addr string, n int) ([]int32, error) {
	ap, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return nil, err
	}
	sa := &unix.SockaddrInet4{Port: ap.Port}
	copy(sa.Addr[:], ap.IP.To4())
	fds := make([]int32, 0, n)
	buf := make([]byte, 512)
	for i := range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fds, fmt.Errorf("socket %d: %w", i, err)
		}
		if err := unix.Connect(fd, sa); err != nil {
			unix.Close(fd)
			return fds, fmt.Errorf("connect %d: %w", i, err)
		}
		if _, err := unix.Write(fd, []byte(request)); err != nil {
			unix.Close(fd)
			return fds, fmt.Errorf("write %d: %w", i, err)
		}
		got := 0
		for !bytes.Contains(buf[:got], []byte("\r\n\r\n")) {
			k, err := unix.Read(fd, buf[got:])
			if err != nil || k <= 0 {
				unix.Close(fd)
				return fds, fmt.Errorf("read %d: %v", i, err)
			}
			got += k
		}
		if !bytes.HasPrefix(buf, []byte("HTTP/1.1 101 ")) {
			return fds, fmt.Errorf("conn %d: %q", i, buf[:got])
		}
		fds = append(fds, int32(fd))
	}
	return fds, nil
}

func main() {
	mode := flag.String("mode", "both", "both, server or client")
	n := flag.Int("n", 9000, "connections")
	listen := flag.String("listen", "127.0.0.1:0", "server listen address")
	addr := flag.String("addr", "", "client: server address")
	hold := flag.Duration("hold", 0, "client: keep connections open this long")
	flag.Parse()
	if err := run(*mode, *n, *listen, *addr, *hold); err != nil {
		fmt.Fprintln(os.Stderr, "idlebench:", err)
		os.Exit(1)
	}
}

func run(mode string, n int, listen, addr string, hold time.Duration) error {
	if mode == "client" {
		fds, err := dialRaw(addr, n)
		fmt.Printf("client: %d connections open\n", len(fds))
		if err != nil {
			return err
		}
		time.Sleep(hold)
		return nil
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e, err := netpoll.New(netpoll.Config{Heartbeat: time.Hour, HandshakeTimeout: time.Minute}, nopHandler{}, nil, nil, log)
	if err != nil {
		return err
	}
	defer e.Close()
	ln, err := net.Listen("tcp4", listen)
	if err != nil {
		return err
	}
	go e.Serve(ln)
	// Warm up pools and code paths with a few connections, then measure.
	warm, err := dialRaw(ln.Addr().String(), 16)
	if err != nil {
		return err
	}
	for _, fd := range warm {
		unix.Close(int32toInt(fd))
	}
	for e.Len() != 0 {
		time.Sleep(10 * time.Millisecond)
	}
	before := measure()
	clientFDs := 0
	start := time.Now()
	if mode == "both" {
		fds, err := dialRaw(ln.Addr().String(), n)
		if err != nil {
			return err
		}
		clientFDs = len(fds)
		defer func() {
			for _, fd := range fds {
				unix.Close(int32toInt(fd))
			}
		}()
	} else {
		fmt.Printf("server: listening on %s, waiting for %d connections\n", ln.Addr(), n)
	}
	for e.Len() < n {
		time.Sleep(20 * time.Millisecond)
	}
	dial := time.Since(start)
	after := measure()
	per := func(d uint64, b uint64) float64 { return float64(int64(d)-int64(b)) / float64(n) }
	fmt.Printf("connections:             %d (opened in %v)\n", n, dial.Round(time.Millisecond))
	fmt.Printf("VmRSS per conn:          %.0f B (%.1f MiB -> %.1f MiB)\n", per(after.rss, before.rss), mib(before.rss), mib(after.rss))
	fmt.Printf("HeapInuse+StackInuse/conn: %.0f B\n", per(after.heapStack, before.heapStack))
	fmt.Printf("server fds per conn:     %.2f (fds %d -> %d, %d of them client sockets)\n",
		float64(after.fds-before.fds-clientFDs)/float64(n), before.fds, after.fds, clientFDs)
	fmt.Printf("goroutines:              %d -> %d\n", before.goroutine, after.goroutine)
	return nil
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func int32toInt(fd int32) int { return int(fd) }
