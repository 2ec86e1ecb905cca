package auth

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// testGate returns a Gate over testConfig with mod applied, a good token,
// and a settable clock.
func testGate(t *testing.T, mod func(*config.Config)) (*Gate, string, *time.Time) {
	t.Helper()
	cfg := testConfig(t)
	if mod != nil {
		mod(&cfg)
	}
	v, err := NewVerifier(t.Context(), cfg.Auth, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	g := NewGate(cfg, v, testLogger(t))
	clock := time.Unix(1_700_000_000, 0)
	g.now = func() time.Time { return clock }
	tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("alice"), "")
	return g, tok, &clock
}

// status returns 0 for an accepted Check, else the refusal status.
func status(r *Refusal) int {
	if r == nil {
		return 0
	}
	return r.Status
}

func TestGateOrigin(t *testing.T) {
	for _, c := range []struct {
		name    string
		allowed []string
		origin  string // "" : no Origin header
		want    int
	}{
		{"allowed", []string{"https://app.example.com"}, "https://app.example.com", 0},
		{"allowed, case and slash", []string{"https://App.example.com/"}, "https://app.EXAMPLE.com", 0},
		{"second entry", []string{"https://a.test", "http://localhost:3000"}, "http://localhost:3000", 0},
		{"refused", []string{"https://app.example.com"}, "https://evil.example.com", 403},
		{"refused port", []string{"http://localhost:3000"}, "http://localhost:3001", 403},
		{"refused scheme", []string{"https://app.example.com"}, "http://app.example.com", 403},
		{"null origin", []string{"https://app.example.com"}, "null", 403},
		{"no Origin header (not a browser)", []string{"https://app.example.com"}, "", 0},
		{"empty list: any", nil, "https://evil.example.com", 0},
		{"star: any", []string{"*"}, "https://evil.example.com", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, tok, _ := testGate(t, func(cfg *config.Config) { cfg.WS.AllowedOrigins = c.allowed })
			h := handshake("127.0.0.1:1000", tok)
			if c.origin != "" {
				h.Header.Set("Origin", c.origin)
			}
			_, r := g.Check(h)
			if got := status(r); got != c.want {
				t.Fatalf("got %d, want %d", got, c.want)
			}
			if r != nil && r.Code != CodeOriginNotAllowed {
				t.Fatalf("got code %q, want %q", r.Code, CodeOriginNotAllowed)
			}
			if r != nil && g.Connections() != 0 {
				t.Fatalf("refusal holds a slot")
			}
		})
	}
}

// TestGateOrder checks that the cheaper check wins when several fail.
func TestGateOrder(t *testing.T) {
	g, _, _ := testGate(t, func(cfg *config.Config) {
		cfg.WS.AllowedOrigins = []string{"https://ok.test"}
		cfg.Limits.HandshakeRate = 1
		cfg.Limits.HandshakeBurst = 1
	})
	bad := func(path string) *Handshake {
		h := handshake("127.0.0.9:1", "garbage")
		h.Path = path
		h.Header.Set("Origin", "https://evil.test")
		return h
	}
	for i, want := range []struct {
		status int
		code   string
	}{
		{404, CodeNotFound},         // wrong path first: spends no rate token
		{403, CodeOriginNotAllowed}, // right path: takes the only token, then origin
		{429, CodeRateLimited},      // bucket empty: before origin and token
		{503, CodeDraining},         // draining beats everything
	} {
		path := "/ws"
		if i == 0 {
			path = "/nope"
		}
		if i == 3 {
			g.SetDraining(true)
		}
		_, r := g.Check(bad(path))
		if r == nil || r.Status != want.status || r.Code != want.code {
			t.Fatalf("step %d: got %+v, want %d %s", i, r, want.status, want.code)
		}
	}
	if !g.Draining() {
		t.Fatal("Draining() = false after SetDraining(true)")
	}
}

func TestGateDrainingAndCap(t *testing.T) {
	g, tok, _ := testGate(t, func(cfg *config.Config) { cfg.Limits.MaxConnections = 2 })
	a, b := handshake("127.0.0.2:1", tok), handshake("127.0.0.3:1", tok)
	for _, h := range []*Handshake{a, b} {
		if _, r := g.Check(h); r != nil {
			t.Fatalf("under the cap: refused %v", r)
		}
	}
	_, r := g.Check(handshake("127.0.0.4:1", tok))
	if status(r) != 503 || r.Code != CodeAtCapacity {
		t.Fatalf("at the cap: got %+v, want 503 at_capacity", r)
	}
	g.Release(a.Remote.Addr())
	if _, r := g.Check(handshake("127.0.0.4:1", tok)); r != nil {
		t.Fatalf("after a release: refused %v", r)
	}
	g.SetDraining(true)
	if _, r := g.Check(handshake("127.0.0.5:1", tok)); status(r) != 503 || r.Code != CodeDraining {
		t.Fatalf("draining: got %+v, want 503 draining", r)
	}
	if got := g.Connections(); got != 2 {
		t.Fatalf("draining dropped connections: got %d, want 2", got)
	}
	g.SetDraining(false)
	g.Release(b.Remote.Addr())
	if _, r := g.Check(handshake("127.0.0.5:1", tok)); r != nil {
		t.Fatalf("after draining off: refused %v", r)
	}
}

func TestGatePerIPLimit(t *testing.T) {
	g, tok, _ := testGate(t, func(cfg *config.Config) { cfg.Limits.PerIPConnections = 2 })
	check := func(remote string, want int) {
		t.Helper()
		_, r := g.Check(handshake(remote, tok))
		if got := status(r); got != want {
			t.Fatalf("%s: got %d, want %d", remote, got, want)
		}
		if r != nil && r.Code != CodeTooManyConnections {
			t.Fatalf("%s: got code %q, want %q", remote, r.Code, CodeTooManyConnections)
		}
	}
	check("127.0.0.2:1001", 0)
	check("127.0.0.2:1002", 0)
	check("127.0.0.2:1003", 429)
	check("[::ffff:127.0.0.2]:1004", 429) // IPv4-mapped is the same host
	check("127.0.0.3:1001", 0)
	check("127.0.0.3:1002", 0)
	check("127.0.0.3:1003", 429)
	check("127.0.0.4:1001", 0)
	g.Release(netip.MustParseAddr("127.0.0.2"))
	check("127.0.0.2:1005", 0)
	check("127.0.0.2:1006", 429)
	// IPv6 is counted per /64.
	check("[2001:db8::1]:1", 0)
	check("[2001:db8::2]:1", 0)
	check("[2001:db8::3]:1", 429)
	check("[2001:db8:0:1::1]:1", 0)
	if got := g.Connections(); got != 8 { // .2: 2, .3: 2, .4: 1, 2001:db8::/64: 2, 2001:db8:0:1::/64: 1
		t.Fatalf("got Connections %d, want 8", got)
	}
}

func TestGateHandshakeRate(t *testing.T) {
	g, tok, clock := testGate(t, func(cfg *config.Config) {
		cfg.Limits.HandshakeRate = 1
		cfg.Limits.HandshakeBurst = 2
		cfg.Limits.PerIPConnections = 3
	})
	try := func(remote string, want int, code string) {
		t.Helper()
		h := handshake(remote, tok)
		_, r := g.Check(h)
		if got := status(r); got != want || (r != nil && r.Code != code) {
			t.Fatalf("%s: got %+v, want %d %s", remote, r, want, code)
		}
		if r == nil {
			g.Release(h.Remote.Addr())
		}
	}
	try("127.0.0.2:1", 0, "")
	try("127.0.0.2:2", 0, "")
	try("127.0.0.2:3", 429, CodeRateLimited)
	try("127.0.0.3:1", 0, "") // another address has its own bucket
	*clock = clock.Add(999 * time.Millisecond)
	try("127.0.0.2:4", 429, CodeRateLimited)
	*clock = clock.Add(time.Millisecond)
	try("127.0.0.2:5", 0, "")
	try("127.0.0.2:6", 429, CodeRateLimited)

	// A handshake refused for the connection limit spends no rate token.
	*clock = clock.Add(time.Hour)
	var held []*Handshake
	for i := range 3 {
		h := handshake(fmt.Sprintf("127.0.0.7:%d", i+1), tok)
		if i < 2 {
			if _, r := g.Check(h); r != nil {
				t.Fatalf("handshake %d refused: %v", i, r)
			}
			held = append(held, h)
		}
		*clock = clock.Add(time.Second)
	}
	if _, r := g.Check(handshake("127.0.0.7:9", tok)); r != nil {
		t.Fatalf("third connection refused: %v", r)
	}
	for range 3 {
		if _, r := g.Check(handshake("127.0.0.7:10", tok)); status(r) != 429 || r.Code != CodeTooManyConnections {
			t.Fatalf("fourth connection: got %+v, want 429 too_many_connections", r)
		}
	}
	g.Release(held[0].Remote.Addr())
	if _, r := g.Check(handshake("127.0.0.7:11", tok)); r != nil {
		t.Fatalf("after release: refused %v (connection-limit refusals spent rate tokens?)", r)
	}
}

// TestGateUpdate: a hot reload changes limits and origins without dropping
// anyone.
func TestGateUpdate(t *testing.T) {
	g, tok, _ := testGate(t, nil)
	var held []netip.Addr
	for i := range 3 {
		h := handshake(fmt.Sprintf("127.0.0.2:%d", i+1), tok)
		if _, r := g.Check(h); r != nil {
			t.Fatalf("before reload: refused %v", r)
		}
		held = append(held, h.Remote.Addr())
	}
	lim := config.Default().Limits
	lim.MaxConnections = 3
	lim.PerIPConnections = 1
	g.Update(lim, []string{"https://ok.test"})
	if got := g.Connections(); got != 3 {
		t.Fatalf("reload dropped connections: got %d, want 3", got)
	}
	if _, r := g.Check(handshake("127.0.0.3:1", tok)); status(r) != 503 {
		t.Fatalf("over the lowered cap: got %+v, want 503", r)
	}
	for _, a := range held {
		g.Release(a)
	}
	if _, r := g.Check(handshake("127.0.0.2:9", tok)); r != nil {
		t.Fatalf("after release: refused %v", r)
	}
	if _, r := g.Check(handshake("127.0.0.2:10", tok)); status(r) != 429 {
		t.Fatalf("per-IP limit after reload: got %+v, want 429", r)
	}
	h := handshake("127.0.0.4:1", tok)
	h.Header.Set("Origin", "https://other.test")
	if _, r := g.Check(h); status(r) != 403 {
		t.Fatalf("origin after reload: got %+v, want 403", r)
	}
	if got := g.Connections(); got != 1 {
		t.Fatalf("got Connections %d, want 1", got)
	}
}

// TestGateForgetsIdleAddresses: entries with no connection and a full bucket
// are dropped, on release or by the lazy sweep.
func TestGateForgetsIdleAddresses(t *testing.T) {
	g, tok, clock := testGate(t, func(cfg *config.Config) {
		cfg.Limits.HandshakeRate = 10
		cfg.Limits.PerIPConnections = 10
	})
	for i := range 200 {
		h := handshake(fmt.Sprintf("127.0.%d.%d:1", i/100, i%100+1), tok)
		if _, r := g.Check(h); r != nil {
			t.Fatalf("refused %v", r)
		}
		g.Release(h.Remote.Addr())
	}
	if got := g.ips.len(); got != 200 {
		t.Fatalf("just after: tracked %d addresses, want 200 (buckets not yet full)", got)
	}
	*clock = clock.Add(ipSweepEvery + time.Second)
	// One handshake per shard runs each shard's sweep.
	for i := range 5000 {
		h := handshake(fmt.Sprintf("10.0.%d.%d:1", i/250, i%250+1), tok)
		if _, r := g.Check(h); r != nil {
			t.Fatalf("refused %v", r)
		}
		g.Release(h.Remote.Addr())
	}
	*clock = clock.Add(ipSweepEvery + time.Second)
	h := handshake("127.0.0.1:1", tok)
	// Release of an idle address with a full bucket forgets it at once.
	if _, r := g.Check(h); r != nil {
		t.Fatal(r)
	}
	*clock = clock.Add(time.Second)
	g.Release(h.Remote.Addr())
	if got := g.ips.len(); got > 5000 {
		t.Fatalf("tracked %d addresses after the sweep, want the first 200 forgotten", got)
	}
	for i := range 200 {
		a := netip.MustParseAddr(fmt.Sprintf("127.0.%d.%d", i/100, i%100+1))
		s := g.ips.shard(a)
		s.mu.Lock()
		_, ok := s.m[a]
		s.mu.Unlock()
		if ok {
			t.Fatalf("%v still tracked after the sweep", a)
		}
	}
}

// TestGateConcurrent hammers Check and Release from many goroutines (run
// with -race) and checks that the counts come back to zero.
func TestGateConcurrent(t *testing.T) {
	g, tok, _ := testGate(t, func(cfg *config.Config) {
		cfg.Limits.PerIPConnections = 3
		cfg.Limits.MaxConnections = 20
	})
	g.now = time.Now
	var wg sync.WaitGroup
	var mu sync.Mutex
	maxSeen := 0
	for w := range 8 {
		wg.Go(func() {
			for i := range 200 {
				h := handshake(fmt.Sprintf("127.0.0.%d:%d", 2+(w+i)%5, 1000+i), tok)
				if _, r := g.Check(h); r == nil {
					mu.Lock()
					maxSeen = max(maxSeen, g.Connections())
					mu.Unlock()
					g.Release(h.Remote.Addr())
				}
			}
		})
	}
	wg.Wait()
	if got := g.Connections(); got != 0 {
		t.Fatalf("got Connections %d after all released, want 0", got)
	}
	if got := g.ips.len(); got != 0 {
		t.Fatalf("tracked %d addresses after all released, want 0", got)
	}
	if maxSeen > 15 {
		t.Fatalf("saw %d connections, more than 5 addresses x 3", maxSeen)
	}
}

// TestGateRealSockets binds real client sockets to 127.0.0.2 and 127.0.0.3
// and feeds the addresses the listener sees to Gate.Check.
func TestGateRealSockets(t *testing.T) {
	g, tok, _ := testGate(t, func(cfg *config.Config) { cfg.Limits.PerIPConnections = 2 })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for i, c := range []struct {
		src  string
		want int
	}{
		{"127.0.0.2", 0}, {"127.0.0.2", 0}, {"127.0.0.2", 429}, {"127.0.0.3", 0}, {"127.0.0.3", 0}, {"127.0.0.3", 429},
	} {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(c.src)}, Timeout: 5 * time.Second}
		cc, err := d.DialContext(t.Context(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("dial from %s: %v", c.src, err)
		}
		defer cc.Close()
		if err := ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		sc, err := ln.Accept()
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
		defer sc.Close()
		remote, err := netip.ParseAddrPort(sc.RemoteAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		if remote.Addr().String() != c.src {
			t.Fatalf("listener saw %v, want source %s", remote, c.src)
		}
		h := handshake(remote.String(), tok)
		if _, r := g.Check(h); status(r) != c.want {
			t.Fatalf("connection %d from %s: got %+v, want %d", i, c.src, r, c.want)
		}
	}
	if got := g.Connections(); got != 4 {
		t.Fatalf("got Connections %d, want 4", got)
	}
}

// TestGateZeroRemote: a handshake without a usable remote address (a Unix
// socket, a broken adapter) is accounted under the zero address, not a panic.
func TestGateZeroRemote(t *testing.T) {
	g, tok, _ := testGate(t, func(cfg *config.Config) { cfg.Limits.PerIPConnections = 1 })
	h := handshake("127.0.0.1:1", tok)
	h.Remote = netip.AddrPort{}
	if _, r := g.Check(h); r != nil {
		t.Fatalf("first: refused %v", r)
	}
	if _, r := g.Check(h); status(r) != 429 {
		t.Fatalf("second: got %+v, want 429", r)
	}
	g.Release(h.Remote.Addr())
	if g.Connections() != 0 {
		t.Fatalf("got Connections %d, want 0", g.Connections())
	}
}
