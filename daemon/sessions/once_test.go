package sessions

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/events"
)

// lagProxy forwards TCP connections to a Redis. While muted, what Redis
// answers is dropped: the commands still reach it and run, and the
// caller's operation times out, as on a loaded machine where the answer
// comes after the operation timeout (an ambiguous failure). unmute also
// closes the connections whose answers were dropped.
type lagProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	muted  bool
	held   map[net.Conn]net.Conn // client side -> Redis side, answers dropped; guarded by mu
	conns  map[net.Conn]struct{} // every open conn, closed by close; guarded by mu
	wg     sync.WaitGroup
}

func startLagProxy(t *testing.T, target string) *lagProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &lagProxy{ln: ln, target: target, held: map[net.Conn]net.Conn{}, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *lagProxy) addr() string { return p.ln.Addr().String() }

func (p *lagProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		r, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[r] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { // client -> Redis, always
			defer p.wg.Done()
			_, _ = io.Copy(r, c)
			r.Close()
			c.Close()
		}()
		go func() { // Redis -> client, dropped while muted
			defer p.wg.Done()
			defer c.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := r.Read(buf)
				if n > 0 {
					p.mu.Lock()
					muted := p.muted
					if muted {
						p.held[c] = r
					}
					p.mu.Unlock()
					if !muted {
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func (p *lagProxy) mute() {
	p.mu.Lock()
	p.muted = true
	p.mu.Unlock()
}

func (p *lagProxy) unmute() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.muted = false
	for c, r := range p.held {
		c.Close()
		r.Close()
	}
	clear(p.held)
}

func (p *lagProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// onceLimits keeps every entry the once tests write in the log.
var onceLimits = config.Sessions{TTL: config.Duration(time.Hour), OutboxMax: 3, HistoryMaxTurns: 3, ReplayMax: 100, ReplayBytes: 1 << 20}

// TestTerminalAmbiguousTimeoutOnce: a terminal whose append ran in Redis
// but whose answer was lost (the operation timed out) waits in memory and
// is retried; the retry must not log it a second time, at the next
// position. The proxy drops Redis's answers while the terminal is
// written, so the timeout is certain and the script has run (checked on
// the store directly). After it, the terminal is delivered once at the
// position its first attempt took, and the next terminals follow at the
// next positions; the log holds each once.
func TestTerminalAmbiguousTimeoutOnce(t *testing.T) {
	for _, b := range sharedBackends(t) {
		if b.addr != realRedis || b.url != "" {
			// A Cluster (and miniredis, which answers CLUSTER SLOTS with
			// its own address) makes the client connect around the proxy.
			continue
		}
		t.Run(b.name, func(t *testing.T) {
			px := startLagProxy(t, b.addr)
			lim := b.cfg(onceLimits)
			lim.RedisURL = "redis://" + px.addr() + "/0"
			m, err := OpenOptions(t.Context(), lim, "A", testLog(t).With("node", "A"),
				Options{Redis: RedisOptions{Prefix: b.prefix, OpTimeout: 300 * time.Millisecond}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { m.Close() })
			direct, err := OpenRedisStore(b.cfg(onceLimits), RedisOptions{Prefix: b.prefix}, testLog(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { direct.Close() })
			storePos := func(id string) uint64 {
				s, err := direct.c.Do(t.Context(), direct.c.B().Hget().Key(direct.kSession(id)).Field("pos").Build()).ToString()
				if err != nil {
					t.Fatalf("read pos of %s: %v", id, err)
				}
				n, _ := strconv.ParseUint(s, 10, 64)
				return n
			}

			o := &fakeOutlet{}
			id, _ := attach(t, m, "alice", "", o)
			if _, err := m.Terminal(t.Context(), id, "a", resultMsg("a")); err != nil {
				t.Fatalf("terminal a: %v", err)
			}
			px.mute()
			if _, err := m.Terminal(t.Context(), id, "b", resultMsg("b")); !errors.Is(err, ErrDeferred) {
				t.Fatalf("terminal b with Redis's answers dropped: %v, want ErrDeferred", err)
			}
			if got := storePos(id); got != 2 {
				t.Fatalf("position in the store after b's timed-out attempt: %d, want 2 (the script ran)", got)
			}
			if _, err := m.Terminal(t.Context(), id, "c", resultMsg("c")); !errors.Is(err, ErrDeferred) {
				t.Fatalf("terminal c behind b: %v, want ErrDeferred", err)
			}
			// The retries while muted run too, and must not add anything.
			time.Sleep(600 * time.Millisecond) // lets retries run while muted: the scenario, not synchronisation
			px.unmute()
			eventually(t, 10*time.Second, "b and c delivered", func() bool { return len(o.raw()) >= 4 })
			if _, err := m.Terminal(t.Context(), id, "d", resultMsg("d")); err != nil {
				t.Fatalf("terminal d: %v", err)
			}
			want := []string{string(welcomeMsg(id, false)), `{"type":"result","id":"a","pos":1,"data":"done"}`,
				`{"type":"result","id":"b","pos":2,"data":"done"}`, `{"type":"result","id":"c","pos":3,"data":"done"}`,
				`{"type":"result","id":"d","pos":4,"data":"done"}`}
			if got := o.raw(); !slices.Equal(got, want) {
				t.Fatalf("sent %q, want %q", got, want)
			}
			entries, err := direct.ReadLog(t.Context(), id, 0)
			if err != nil {
				t.Fatal(err)
			}
			var logged []string
			for _, e := range entries {
				logged = append(logged, string(e.Msg))
			}
			if !slices.Equal(logged, want[1:]) {
				t.Fatalf("log %q, want %q", logged, want[1:])
			}
		})
	}
}

// TestAppendOnceScript: the append script with a once id appends at the
// first attempt only; a later attempt of the same id returns the same
// position and adds nothing, for a terminal and for a gap, while another
// node's appends come in between; a new id appends.
func TestAppendOnceScript(t *testing.T) {
	for _, b := range sharedBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			s, _ := b.openStore(t, onceLimits)
			rs := s.(*RedisStore)
			ctx := context.Background()
			sess, err := rs.Create(ctx, "alice")
			if err != nil {
				t.Fatal(err)
			}
			id := sess.ID
			msg := func(req string) ([]byte, int) {
				m := events.AppendResult(nil, req, []byte(`"x"`))
				return m, events.PosIndex(m)
			}
			kA := func(n string) onceKey { return onceKey{field: "o:A", id: "incA." + n} }
			ma, at := msg("a")
			a1, err := rs.appendOnce(ctx, id, ma, at, kA("1"))
			if err != nil || a1.Pos != 1 {
				t.Fatalf("first attempt: %+v %v, want pos 1", a1, err)
			}
			mo, ato := msg("other")
			if a, err := rs.appendOnce(ctx, id, mo, ato, onceKey{field: "o:B", id: "incB.1"}); err != nil || a.Pos != 2 {
				t.Fatalf("another node's append: %+v %v, want pos 2", a, err)
			}
			a2, err := rs.appendOnce(ctx, id, ma, at, kA("1"))
			if err != nil || a2.Pos != 1 || string(a2.Msg) != string(a1.Msg) {
				t.Fatalf("second attempt: %+v %v, want pos 1 as the first (%s)", a2, err, a1.Msg)
			}
			if err := rs.appendGapOnce(ctx, id, 2, kA("2")); err != nil {
				t.Fatal(err)
			}
			if err := rs.appendGapOnce(ctx, id, 2, kA("2")); err != nil {
				t.Fatal(err)
			}
			mb, atb := msg("b")
			if a, err := rs.appendOnce(ctx, id, mb, atb, kA("3")); err != nil || a.Pos != 5 {
				t.Fatalf("after a gap of 2 attempted twice: %+v %v, want pos 5", a, err)
			}
			if a, err := rs.Append(ctx, id, mb, atb); err != nil || a.Pos != 6 {
				t.Fatalf("append without once: %+v %v, want pos 6", a, err)
			}
			entries, err := rs.ReadLog(ctx, id, 0)
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for _, e := range entries {
				got = append(got, e.Pos)
			}
			if want := []uint64{1, 2, 3, 4, 5, 6}; !slices.Equal(got, want) {
				t.Fatalf("log positions %v, want %v", got, want)
			}
		})
	}
}
