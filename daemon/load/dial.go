package load

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// Dialer opens WebSocket connections from a rotating set of loopback source
// addresses. Each socket gets IP_BIND_ADDRESS_NO_PORT before its bind so the
// port is chosen at connect time from the whole 4-tuple space: one source
// address is then not limited to one ephemeral port range per destination.
type Dialer struct {
	URL     string
	Token   string // sent as Authorization: Bearer when non-empty
	Sources []netip.Addr
	Timeout time.Duration

	next atomic.Uint64
}

// dialed is an upgraded connection before it joins a loop.
type dialed struct {
	nc   net.Conn
	fd   int
	head []byte // bytes the handshake reader had already buffered
}

// ParseSources expands "127.0.0.2-127.0.0.9" or "127.0.0.2,127.0.0.3" (or
// "" for the kernel's choice) into addresses.
func ParseSources(s string) ([]netip.Addr, error) {
	if s == "" {
		return nil, nil
	}
	var out []netip.Addr
	for part := range splitComma(s) {
		lo, hi, isRange := cut(part, '-')
		a, err := netip.ParseAddr(lo)
		if err != nil {
			return nil, fmt.Errorf("source %q: %w", part, err)
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		b, err := netip.ParseAddr(hi)
		if err != nil {
			return nil, fmt.Errorf("source %q: %w", part, err)
		}
		for x := a; x.Compare(b) <= 0 && len(out) < 4096; x = x.Next() {
			out = append(out, x)
		}
	}
	return out, nil
}

func splitComma(s string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for s != "" {
			p, rest, _ := cut(s, ',')
			if p != "" && !yield(p) {
				return
			}
			s = rest
		}
	}
}

func cut(s string, sep byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func (d *Dialer) netDialer() *net.Dialer {
	// No TCP keepalive: Go's default probes every idle socket every 15 s,
	// kernel work (two packets, a timer) that no process is billed for and
	// that the server's WebSocket heartbeat makes redundant. At 200,000
	// idle connections on one host the probes overflowed loopback's
	// backlog (net.core.netdev_max_backlog) and 2,719 connections were
	// aborted for unanswered probes (docs/benchmarks.md).
	nd := &net.Dialer{Timeout: d.Timeout, KeepAlive: -1}
	if len(d.Sources) > 0 {
		src := d.Sources[int(d.next.Add(1)-1)%len(d.Sources)]
		nd.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		nd.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			})
			return errors.Join(err, serr)
		}
	}
	return nd
}

// dial opens one connection, does the upgrade and returns the raw socket.
func (d *Dialer) dial(ctx context.Context) (*dialed, error) {
	nc, br, err := d.DialBlocking(ctx)
	if err != nil {
		return nil, err
	}
	dc := &dialed{nc: nc}
	if br != nil {
		if n := br.Buffered(); n > 0 {
			dc.head = make([]byte, n)
			_, _ = br.Read(dc.head)
		}
		ws.PutReader(br)
	}
	if err := rawFD(nc, &dc.fd); err != nil {
		_ = nc.Close()
		return nil, err
	}
	return dc, nil
}

// DialBlocking opens a connection for callers that talk to it with blocking
// reads (churn, the late-connection probe): the net.Conn and any buffered
// bytes.
func (d *Dialer) DialBlocking(ctx context.Context) (net.Conn, *bufio.Reader, error) {
	nd := d.netDialer()
	wd := ws.Dialer{
		Timeout: d.Timeout,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return nd.DialContext(ctx, network, addr)
		},
	}
	if d.Token != "" {
		wd.Header = ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + d.Token}})
	}
	nc, br, _, err := wd.Dial(ctx, d.URL)
	return nc, br, err
}

func rawFD(nc net.Conn, fd *int) error {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return errors.New("load: connection has no fd")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("syscall conn: %w", err)
	}
	return rc.Control(func(f uintptr) { *fd = int(f) })
}

// dialErrKey turns a dial error into a short key for the error counts.
func dialErrKey(err error) string {
	var se ws.StatusError
	if errors.As(err, &se) {
		return fmt.Sprintf("handshake status %d", int(se))
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "dial timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no source port (EADDRNOTAVAIL)"
	case errors.Is(err, syscall.EMFILE):
		return "too many open files"
	}
	s := err.Error()
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}
