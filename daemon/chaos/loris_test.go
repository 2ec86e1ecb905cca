package chaos

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// loris is one slow peer: it has written part of what it means to send
// and trickles the rest one byte per tick.
type loris struct {
	conn net.Conn
	rest []byte
	dead bool
}

// newLoris opens a peer: half of them stop in the middle of a handshake,
// the other half complete it and stop in the middle of a frame.
func newLoris(t *testing.T, addr, tok string, i int) (*loris, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	head := "GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer " + tok + "\r\n\r\n"
	if i%2 == 0 {
		// Half a handshake.
		cut := len(head) / 2
		if _, err := conn.Write([]byte(head[:cut])); err != nil {
			conn.Close()
			return nil, err
		}
		return &loris{conn: conn, rest: []byte(head[cut:])}, nil
	}
	if _, err := conn.Write([]byte(head)); err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("loris handshake: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 101 {
		conn.Close()
		return nil, fmt.Errorf("loris handshake: %s", resp.Status)
	}
	// Half a frame: a masked text frame announcing 64 bytes.
	payload := []byte(fmt.Sprintf(`{"type":"echo","id":"loris%d","data":"%s"}`, i, "................."))
	frame := ws.MaskFrameWith(ws.NewTextFrame(payload), [4]byte{1, 2, 3, 4})
	raw, err := ws.CompileFrame(frame)
	if err != nil {
		conn.Close()
		return nil, err
	}
	cut := 3
	if _, err := conn.Write(raw[:cut]); err != nil {
		conn.Close()
		return nil, err
	}
	return &loris{conn: conn, rest: raw[cut:]}, nil
}

// TestSlowLoris: thousands of peers that send half handshakes and half
// frames one byte a second, while healthy clients keep their round trips
// at a bounded latency; half handshakes are closed at
// ws.handshake_timeout; the daemon's memory is bounded and everything
// returns to baseline when the peers leave.
func TestSlowLoris(t *testing.T) {
	be := newFakeBackend(t)
	d := startDaemon(t, "chaos-loris", clientConfig(be.url(), 1<<20))
	base := d.baseline()
	n := scale(400, 10000)
	tok := mint(t, "loris")

	// Healthy throughput before the attack.
	rate := func(label string, dur time.Duration) (int, time.Duration) {
		conns := dialMany(t, d.client, "fast"+label, 4)
		var total atomic.Int64
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		stop := time.Now().Add(dur)
		for i, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.close()
				for k := 0; time.Now().Before(stop); k++ {
					id := fmt.Sprintf("f%dx%d", i, k)
					t0 := time.Now()
					if err := c.request("echo", id, k); err != nil {
						t.Errorf("healthy client: %v", err)
						return
					}
					for {
						m, err := c.read(5 * time.Second)
						if err != nil {
							t.Errorf("healthy client %s: %v", label, err)
							return
						}
						if m.terminal() && m.ID == id {
							break
						}
					}
					mu.Lock()
					lat = append(lat, time.Since(t0))
					mu.Unlock()
					total.Add(1)
				}
			}()
		}
		wg.Wait()
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		p99 := time.Duration(0)
		if len(lat) > 0 {
			p99 = lat[len(lat)*99/100]
		}
		return int(total.Load()), p99
	}
	before, p99Before := rate("a", time.Second)

	var peers []*loris
	for i := 0; i < n; i++ {
		p, err := newLoris(t, d.client, tok, i)
		if err != nil {
			t.Fatalf("loris %d: %v", i, err)
		}
		peers = append(peers, p)
	}
	defer func() {
		for _, p := range peers {
			p.conn.Close()
		}
	}()
	// One byte a second to every peer, from one goroutine.
	stopTrickle := make(chan struct{})
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopTrickle:
				return
			case <-tick.C:
			}
			for _, p := range peers {
				if p.dead || len(p.rest) == 0 {
					continue
				}
				_ = p.conn.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
				if _, err := p.conn.Write(p.rest[:1]); err != nil {
					p.dead = true
					continue
				}
				p.rest = p.rest[1:]
			}
		}
	}()
	during, p99During := rate("b", 3*time.Second)
	under := d.stats()
	close(stopTrickle)
	<-trickled
	t.Logf("slow loris: %d peers; healthy round trips %d/s before (p99 %s), %d/s during (p99 %s); daemon %s",
		n, before, p99Before, during/3, p99During, under)
	if p99During > time.Second {
		t.Errorf("healthy p99 latency %s during the slow loris, want under 1s", p99During)
	}
	if during/3 < before/10 {
		t.Errorf("healthy throughput fell from %d/s to %d/s during the slow loris", before, during/3)
	}
	if limit := base.rssKB + n*16 + 64<<10; under.rssKB > limit {
		t.Errorf("daemon RSS %d KiB with %d slow peers, over %d KiB", under.rssKB, n, limit)
	}
	// Half handshakes are cut at ws.handshake_timeout (2s); 3 s of trickle
	// have passed since, so every one of them must read EOF now.
	open := 0
	for i, p := range peers {
		if i%2 != 0 {
			continue
		}
		_ = p.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		var b [256]byte
		if _, err := p.conn.Read(b[:]); err != nil && isTimeout(err) {
			open++
		}
	}
	if open != 0 {
		t.Errorf("%d half handshakes still open after ws.handshake_timeout", open)
	}
	for _, p := range peers {
		p.conn.Close()
	}
	be.srv.CloseClientConnections()
	d.settles(base, 16)
}
