package load

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDialNoKeepAlive checks that the load tool's sockets send no TCP
// keepalive probes: on an idle run they are kernel work per connection
// that no process is billed for.
func TestDialNoKeepAlive(t *testing.T) {
	srv := startServer(t, true, 0, false)
	for _, src := range [][]netip.Addr{nil, {netip.MustParseAddr("127.0.0.2")}} {
		d := &Dialer{URL: srv.url(), Sources: src, Timeout: 5 * time.Second}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		dc, err := d.dial(ctx)
		cancel()
		if err != nil {
			t.Fatalf("dial from %v: %v", src, err)
		}
		on, err := unix.GetsockoptInt(dc.fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE)
		_ = dc.nc.Close()
		if err != nil {
			t.Fatalf("getsockopt SO_KEEPALIVE: %v", err)
		}
		if on != 0 {
			t.Errorf("dial from %v: SO_KEEPALIVE = %d, want 0 (no probes on idle connections)", src, on)
		}
	}
}
