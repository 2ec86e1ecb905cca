package netpoll

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// TestRemoteForms checks Conn.Remote and Conn.Client for each form a peer
// address is kept in: inline (IPv4), behind the addrs pointer (IPv6) and
// none (a Unix socket), and that Since and ID come back from the id.
func TestRemoteForms(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, network, addr string
		want                func(*testing.T, net.Conn, *Conn)
	}{
		{"ipv4", "tcp", "127.0.0.1:0", func(t *testing.T, nc net.Conn, c *Conn) {
			if got, want := c.Remote().String(), nc.LocalAddr().String(); got != want {
				t.Errorf("Remote = %s, want %s", got, want)
			}
			if c.addrs != nil {
				t.Errorf("IPv4 peer allocated addrs %+v", c.addrs)
			}
		}},
		{"ipv6", "tcp6", "[::1]:0", func(t *testing.T, nc net.Conn, c *Conn) {
			if got, want := c.Remote().String(), nc.LocalAddr().String(); got != want {
				t.Errorf("Remote = %s, want %s", got, want)
			}
		}},
		{"unix", "unix", filepath.Join(dir, "s"), func(t *testing.T, _ net.Conn, c *Conn) {
			if c.Remote().IsValid() {
				t.Errorf("Remote = %s, want invalid", c.Remote())
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen(tc.network, tc.addr)
			if err != nil {
				t.Skipf("no %s listener here: %v", tc.network, err)
			}
			h := newEchoHandler()
			e, err := New(Config{}, h, nil, nil, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- e.Serve(ln) }()
			defer func() {
				_ = e.Close()
				_ = ln.Close()
				<-served
			}()
			before := time.Now().Add(-time.Millisecond)
			nc, err := net.Dial(tc.network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(nc, upgradeRequest); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
			if err != nil || resp.StatusCode != 101 {
				t.Fatalf("handshake: %v %v", resp, err)
			}
			c := h.waitOpen(t)
			tc.want(t, nc, c)
			if c.Client() != c.Remote() {
				t.Errorf("Client = %s, want Remote %s", c.Client(), c.Remote())
			}
			if s := c.Since(); s.Before(before) || s.After(time.Now()) {
				t.Errorf("Since = %v, want between %v and now", s, before)
			}
			if c.ID() == 0 {
				t.Error("ID = 0")
			}
		})
	}
}

// TestNewIDUnique checks that ids stay unique and increasing when many
// connections are accepted within one millisecond.
func TestNewIDUnique(t *testing.T) {
	e := &Engine{}
	now := time.Now()
	prev := e.newID(now)
	for range 3000 {
		id := e.newID(now)
		if id <= prev {
			t.Fatalf("id %d after %d", id, prev)
		}
		prev = id
	}
	if got := time.UnixMilli(int64(prev >> idSeqBits)); got.Sub(now) > time.Millisecond || now.Sub(got) > time.Millisecond {
		t.Errorf("id time %v, want %v", got, now)
	}
}
