package sessions

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/rueidis"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/events"
)

// realRedis is the Redis the workspace runs; with CI=true it must be there.
const realRedis = "127.0.0.1:6379"

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// requireRealRedis returns the address of the real Redis, skipping the test
// when it is down, or failing it under CI=true.
func requireRealRedis(t testing.TB) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", realRedis, time.Second)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and no Redis at %s: %v", realRedis, err)
		}
		t.Skipf("no Redis at %s: %v", realRedis, err)
	}
	c.Close()
	return realRedis
}

// randomPrefix isolates a test's keys and channels in a shared Redis.
func randomPrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "test:" + hex.EncodeToString(b[:]) + ":"
}

// cleanupPrefix deletes every key under prefix at the end of the test.
func cleanupPrefix(t testing.TB, addr, prefix string) {
	t.Cleanup(func() {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
		if err != nil {
			t.Logf("cleanup %s: %v", prefix, err)
			return
		}
		defer c.Close()
		ctx := context.Background()
		var cursor uint64
		for {
			e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(prefix+"*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				t.Logf("cleanup %s: %v", prefix, err)
				return
			}
			for _, k := range e.Elements {
				c.Do(ctx, c.B().Del().Key(k).Build())
			}
			if cursor = e.Cursor; cursor == 0 {
				return
			}
		}
	})
}

// backend is one place a store can live in a test.
type backend struct {
	name    string
	redis   bool
	addr    string                      // redis address
	url     string                      // sessions.redis_url when not redis://addr/0 (a Cluster)
	bus     string                      // sessions.bus: "" (redis) or "nats"
	prefix  string                      // redis key prefix, NATS subject prefix
	advance func(d time.Duration) error // moves the store's clock, nil if not possible
}

// backends returns memory, miniredis and the real Redis (when present).
func testBackends(t *testing.T) []backend {
	t.Helper()
	bs := []backend{{name: "memory"}}
	mr := miniredis.RunT(t)
	bs = append(bs, backend{name: "miniredis", redis: true, addr: mr.Addr(), prefix: randomPrefix(),
		advance: func(d time.Duration) error { mr.FastForward(d); return nil }})
	if c, err := net.DialTimeout("tcp", realRedis, time.Second); err == nil {
		c.Close()
		p := randomPrefix()
		cleanupPrefix(t, realRedis, p)
		bs = append(bs, backend{name: "redis", redis: true, addr: realRedis, prefix: p})
	} else if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and no Redis at %s: %v", realRedis, err)
	} else {
		t.Logf("no Redis at %s, testing memory and miniredis only", realRedis)
	}
	if len(bs) == 3 && haveNATS(t) {
		p := randomPrefix()
		cleanupPrefix(t, realRedis, p)
		bs = append(bs, backend{name: "redis/nats-bus", redis: true, addr: realRedis, prefix: p, bus: "nats"})
	}
	if c := testCluster(t); c != nil {
		bs = append(bs, backend{name: "cluster", redis: true, addr: c.Servers[0].Addr, url: c.URL(), prefix: randomPrefix()})
	}
	return bs
}

func (b backend) cfg(lim config.Sessions) config.Sessions {
	lim.Store = "memory"
	if b.redis {
		lim.Store = "redis"
		lim.RedisURL = "redis://" + b.addr + "/0"
		if b.url != "" {
			lim.RedisURL = b.url
		}
		lim.Bus = "redis"
		if b.bus != "" {
			lim.Bus = b.bus
			lim.NatsURLs = []string{"nats://" + realNATS}
		}
	}
	return lim
}

// openStore opens a bare store on b with lim. advance moves its clock (nil
// for the real Redis, whose clock cannot be moved).
func (b backend) openStore(t *testing.T, lim config.Sessions) (s Store, advance func(time.Duration)) {
	t.Helper()
	if b.redis {
		rs, err := OpenRedisStore(b.cfg(lim), RedisOptions{Prefix: b.prefix}, testLog(t))
		if err != nil {
			t.Fatalf("open redis store: %v", err)
		}
		s = rs
		if b.advance != nil {
			advance = func(d time.Duration) { _ = b.advance(d) }
		}
	} else {
		ms := NewMemoryStore(b.cfg(lim), testLog(t))
		var mu sync.Mutex
		var skew time.Duration
		ms.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(skew) }
		advance = func(d time.Duration) { mu.Lock(); skew += d; mu.Unlock() }
		s = ms
	}
	t.Cleanup(func() { s.Close() })
	return s, advance
}

// openManager opens a Manager on b as node.
func (b backend) openManager(t *testing.T, node string, lim config.Sessions) *Manager {
	t.Helper()
	m, err := OpenOptions(t.Context(), b.cfg(lim), node, testLog(t).With("node", node),
		Options{Redis: RedisOptions{Prefix: b.prefix}, AckTimeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("open manager %s on %s: %v", node, b.name, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// fakeOutlet records what a connection would have been sent. Its peer
// acknowledges every terminal at once (acked).
type fakeOutlet struct {
	mu     sync.Mutex
	msgs   []string
	kicked bool
	cut    bool
	gone   bool
	ack    uint64
}

func (o *fakeOutlet) SendTerminal(msg []byte, pos uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.gone {
		return errGone
	}
	o.msgs = append(o.msgs, string(msg))
	o.ack = max(o.ack, pos)
	return nil
}

func (o *fakeOutlet) Queued() int                    { return 0 }
func (o *fakeOutlet) NotifyDrained(_ int, fn func()) { fn() }
func (o *fakeOutlet) Cut() {
	o.mu.Lock()
	o.cut, o.gone = true, true
	o.mu.Unlock()
}

func (o *fakeOutlet) Acked() uint64 { return o.acked() }

func (o *fakeOutlet) acked() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.ack
}

// raw returns the messages as sent, positions included.
func (o *fakeOutlet) raw() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.msgs)
}

var errGone = errors.New("connection gone")

func (o *fakeOutlet) Send(msg []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.gone {
		return errGone
	}
	o.msgs = append(o.msgs, string(msg))
	return nil
}

func (o *fakeOutlet) Kick() {
	o.mu.Lock()
	o.kicked, o.gone = true, true
	o.mu.Unlock()
}

func (o *fakeOutlet) close() {
	o.mu.Lock()
	o.gone = true
	o.mu.Unlock()
}

// got returns the messages sent, without the positions of terminals (see
// raw), so that expectations can be written with resultMsg.
func (o *fakeOutlet) got() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]string, len(o.msgs))
	for i, m := range o.msgs {
		out[i] = posRe.ReplaceAllString(m, "")
	}
	return out
}

var posRe = regexp.MustCompile(`,"pos":[0-9]+`)

// welcomeFn writes the welcome as welcomeMsg does (the v1.1 fields are
// checked on their own).
func welcomeFn(w *events.Welcome) []byte { return welcomeMsg(w.Session, w.Resumed) }

func (o *fakeOutlet) wasKicked() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.kicked
}

func welcomeMsg(id string, resumed bool) []byte {
	return fmt.Appendf(nil, `{"type":"welcome","session":%q,"resumed":%t}`, id, resumed)
}

func chunkMsg(req string, seq int) []byte {
	return fmt.Appendf(nil, `{"type":"chunk","id":%q,"seq":%d,"data":"part %d"}`, req, seq, seq)
}

func resultMsg(req string) []byte {
	return fmt.Appendf(nil, `{"type":"result","id":%q,"data":"done"}`, req)
}

// countPrefix counts messages of msgs starting with p.
func countPrefix(msgs []string, p string) int {
	n := 0
	for _, m := range msgs {
		if strings.HasPrefix(m, p) {
			n++
		}
	}
	return n
}
