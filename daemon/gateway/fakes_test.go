package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orchestratord/orchestratord/daemon/auth"
	"github.com/orchestratord/orchestratord/daemon/dispatch"
	"github.com/orchestratord/orchestratord/daemon/events"
	"github.com/orchestratord/orchestratord/daemon/sessions"
	"github.com/orchestratord/orchestratord/netpoll"
)

// Fakes of the gateway's dependencies: the gateway's own logic is tested
// without a socket, a store or routes.

// fakeWS is a connection: it records what is sent and how it closed.
type fakeWS struct {
	mu     sync.Mutex
	sent   []string
	tags   []uint64
	code   netpoll.CloseCode // 0 while open
	acked  uint64
	remote netip.AddrPort
}

func (c *fakeWS) Send(msg []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = append(c.sent, string(msg))
	return nil
}

func (c *fakeWS) SendTagged(msg []byte, tag uint64) error {
	c.mu.Lock()
	c.tags = append(c.tags, tag)
	c.mu.Unlock()
	return c.Send(msg)
}

func (c *fakeWS) Queued() int                                  { return 0 }
func (c *fakeWS) NotifyDrained(int, func())                    {}
func (c *fakeWS) CloseAt(time.Time, netpoll.CloseCode, string) {}
func (c *fakeWS) Client() netip.AddrPort                       { return c.remote }
func (c *fakeWS) ID() uint64                                   { return 7 }
func (c *fakeWS) Since() time.Time                             { return time.Time{} }
func (c *fakeWS) Stats() netpoll.ConnStats                     { return netpoll.ConnStats{} }

func (c *fakeWS) Acked() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acked
}

func (c *fakeWS) Close(code netpoll.CloseCode, _ string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.code == 0 {
		c.code = code
	}
}

func (c *fakeWS) closed() netpoll.CloseCode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code
}

func (c *fakeWS) messages() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.sent...)
}

// fakeSession is a session record.
type fakeSession struct {
	id       string
	user     string
	inflight atomic.Int64
	tat      atomic.Int64
	touches  atomic.Int64
}

func (s *fakeSession) ID() string               { return s.id }
func (s *fakeSession) User() string             { return s.user }
func (s *fakeSession) RateState() *atomic.Int64 { return &s.tat }
func (s *fakeSession) Register(string, context.CancelCauseFunc, int) (bool, bool) {
	return false, false
}
func (s *fakeSession) Unregister(string) int     { return 0 }
func (s *fakeSession) Cancel(string, error) bool { return false }
func (s *fakeSession) CancelAll(error)           {}
func (s *fakeSession) InFlight() int             { return int(s.inflight.Load()) }
func (s *fakeSession) Touch()                    { s.touches.Add(1) }
func (s *fakeSession) TraceID() string           { return "" }
func (s *fakeSession) SetTraceID(string)         {}

type detach struct {
	id    string
	out   sessions.Outlet
	acked uint64
}

// fakeSessions binds each connection to a session of its own, after gate
// (if set) is closed.
type fakeSessions struct {
	gate    chan struct{}
	bindErr error

	mu       sync.Mutex
	n        int
	outs     map[string]sessions.Outlet
	sess     map[string]*fakeSession
	detaches []detach
}

func newFakeSessions() *fakeSessions {
	return &fakeSessions{outs: map[string]sessions.Outlet{}, sess: map[string]*fakeSession{}}
}

func (f *fakeSessions) Lookup(context.Context, string) (string, error) {
	return "", sessions.ErrNotFound
}
func (f *fakeSessions) Ready(context.Context) error { return nil }

func (f *fakeSessions) Bind(ctx context.Context, user, _ string, _ sessions.Resume, out sessions.Outlet, welcome func(*events.Welcome) []byte) (Session, error) {
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.bindErr != nil {
		return nil, f.bindErr
	}
	f.mu.Lock()
	f.n++
	s := &fakeSession{id: "s_" + string(rune('a'+f.n-1)), user: user}
	f.outs[s.id], f.sess[s.id] = out, s
	f.mu.Unlock()
	_ = out.Send(welcome(&events.Welcome{Session: s.id}))
	return s, nil
}

func (f *fakeSessions) Detach(s Session, out sessions.Outlet, acked uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.detaches = append(f.detaches, detach{s.ID(), out, acked})
	if f.outs[s.ID()] == out {
		delete(f.outs, s.ID())
	}
}

func (f *fakeSessions) Outlet(id string) sessions.Outlet {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.outs[id]
}

func (f *fakeSessions) EachAttached(fn func(sessions.Outlet)) {
	f.mu.Lock()
	outs := make([]sessions.Outlet, 0, len(f.outs))
	for _, o := range f.outs {
		outs = append(outs, o)
	}
	f.mu.Unlock()
	for _, o := range outs {
		fn(o)
	}
}

func (f *fakeSessions) detached() []detach {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]detach(nil), f.detaches...)
}

// fakeRouter records the frames it is handed, per session, in order.
type fakeRouter struct {
	mu       sync.Mutex
	frames   []string
	sessions []string
	draining atomic.Bool
	idle     func(string)
}

func (r *fakeRouter) Handle(s dispatch.Session, payload []byte, _ dispatch.Reply) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.frames = append(r.frames, string(payload))
	r.sessions = append(r.sessions, s.ID())
}

func (r *fakeRouter) SetDraining(on bool)       { r.draining.Store(on) }
func (r *fakeRouter) Draining() bool            { return r.draining.Load() }
func (r *fakeRouter) OnIdle(fn func(id string)) { r.idle = fn }

func (r *fakeRouter) handled() ([]string, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.frames...), append([]string(nil), r.sessions...)
}

// fakeGate admits everyone as "u".
type fakeGate struct {
	released atomic.Int64
	draining atomic.Bool
}

func (g *fakeGate) Check(*auth.Handshake) (auth.Identity, *auth.Refusal) {
	return auth.Identity{User: "u"}, nil
}
func (g *fakeGate) Release(netip.Addr) { g.released.Add(1) }
func (g *fakeGate) Reject(h *auth.Handshake, code string, _ error) *auth.Refusal {
	g.Release(h.Remote.Addr())
	return auth.RefusalOf(code)
}
func (g *fakeGate) SetDraining(on bool) { g.draining.Store(on) }

type harness struct {
	g      *Gateway
	mgr    *fakeSessions
	router *fakeRouter
	gate   *fakeGate
}

func newHarness() *harness {
	h := &harness{mgr: newFakeSessions(), router: &fakeRouter{}, gate: &fakeGate{}}
	h.g = New(Options{Node: "n1", Heartbeat: time.Second, ReconnectAfter: 250 * time.Millisecond},
		h.gate, h.mgr, h.router, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return h
}

// open admits a handshake and opens its connection on a fakeWS.
func (h *harness) open() (*conn, *fakeWS) {
	d := h.g.Admit(&netpoll.Request{Path: "/ws", Remote: netip.MustParseAddrPort("127.0.0.1:1000")})
	st := d.Value.(*conn)
	ws := &fakeWS{remote: netip.MustParseAddrPort("127.0.0.1:1000")}
	h.g.open(st, ws)
	return st, ws
}

// attached waits until st is bound to its session.
func attached(st *conn) Session {
	for i := 0; i < 2000; i++ {
		if rec := st.session(); rec != nil {
			return rec
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}
