package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orchestratord/orchestratord/daemon/auth"
	"github.com/orchestratord/orchestratord/daemon/events"
	"github.com/orchestratord/orchestratord/daemon/sessions"
	"github.com/orchestratord/orchestratord/daemon/traceparent"
	"github.com/orchestratord/orchestratord/netpoll"
)

// Subprotocol is echoed when a client offers it.
const Subprotocol = "orchestrator.v1"

// Metrics is what the gateway reports.
type Metrics interface {
	MessageIn()
	MessageOut()
	BytesIn(n int)
	BytesOut(n int)
	Handshake(outcome string)
	Closed(code int)
	StoreError(op string)
}

type noMetrics struct{}

func (noMetrics) MessageIn()        {}
func (noMetrics) MessageOut()       {}
func (noMetrics) BytesIn(int)       {}
func (noMetrics) BytesOut(int)      {}
func (noMetrics) Handshake(string)  {}
func (noMetrics) Closed(int)        {}
func (noMetrics) StoreError(string) {}

// Options are the gateway's settings.
type Options struct {
	Node                    string
	Heartbeat               time.Duration
	AllowExpiredConnections bool
	ReconnectAfter          time.Duration
	// Path is the WebSocket path: a plain request for it is answered 400
	// (not a valid WebSocket handshake).
	Path string
	// Plain serves non-upgrade requests other than /healthz and /readyz
	// (the demo page); nil answers 404.
	Plain http.Handler
	// Ready, when set, is an extra readiness condition (readiness.backends):
	// its error makes /readyz fail with reason "backends".
	Ready func() error
}

// Gateway binds connections to sessions. Build it with New.
type Gateway struct {
	opts    Options
	gate    Gate
	mgr     Sessions
	router  Dispatcher
	metrics Metrics
	log     *slog.Logger

	ctx    context.Context // cancelled by Close: stops attach goroutines
	cancel context.CancelFunc
	wg     sync.WaitGroup // attach goroutines

	attaching atomic.Int64
	msgsIn    atomic.Uint64    // messages received since start
	msgsOut   atomic.Uint64    // messages sent since start
	alive     func() time.Time // the engine's liveness
}

// New returns a gateway: gate decides handshakes, mgr binds connections
// to sessions (ManagerSessions of the session manager), router handles
// their frames. Liveness for /healthz is set with SetAlive.
func New(opts Options, gate Gate, mgr Sessions, router Dispatcher, m Metrics, log *slog.Logger) *Gateway {
	if m == nil {
		m = noMetrics{}
	}
	if opts.ReconnectAfter == 0 {
		opts.ReconnectAfter = time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &Gateway{opts: opts, gate: gate, mgr: mgr, router: router, metrics: m, log: log, ctx: ctx, cancel: cancel}
	router.OnIdle(g.sessionIdle)
	return g
}

// Messages returns the messages received from and sent to clients since
// start, closed connections included.
func (g *Gateway) Messages() (in, out uint64) { return g.msgsIn.Load(), g.msgsOut.Load() }

// SetAlive sets the liveness source used by /healthz.
func (g *Gateway) SetAlive(alive func() time.Time) { g.alive = alive }

// Admit decides a handshake before any upgrade: admission and auth through
// the gate, then the ownership check of a resumed session. The client's
// address is r.Client (the TCP peer, or what a trusted proxy reported).
// Every refusal is a row of the one refusal table, chosen by the gate.
func (g *Gateway) Admit(r *netpoll.Request) netpoll.Decision {
	h := auth.Handshake{Path: r.Path, RawQuery: r.RawQuery, Header: r.Header, Remote: r.Client}
	id, ref := g.gate.Check(&h)
	resume := ""
	var from sessions.Resume
	if ref == nil {
		resume = queryValue(r.RawQuery, "session")
		var ok bool
		if from, ok = resumeFrom(r.RawQuery); !ok {
			ref = g.gate.Reject(&h, auth.CodeBadRequest, fmt.Errorf("user %q: last= is not a position", id.User))
		} else {
			ref = g.checkResume(&h, id.User, resume)
		}
	}
	if ref != nil {
		g.metrics.Handshake(ref.Code)
		return netpoll.Decision{Refusal: ref}
	}
	g.metrics.Handshake("accepted")
	pre := &preAttach{user: id.User, expires: id.Expires, resume: resume, from: from}
	if r.Trusted {
		pre.traceparent = handshakeTraceparent(r.Header)
	}
	st := &conn{g: g, at: pre}
	d := netpoll.Decision{Value: st}
	if offersSubprotocol(r.Header.Values("Sec-WebSocket-Protocol"), Subprotocol) {
		d.Subprotocol = Subprotocol
	}
	return d
}

// checkResume refuses, through the gate, a resume of another user's session
// (403) or one that cannot be checked because the store is down (503). An
// unknown session is no refusal: the client gets a fresh one.
func (g *Gateway) checkResume(h *auth.Handshake, user, resume string) *auth.Refusal {
	if resume == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(g.ctx, 2*time.Second)
	owner, err := g.mgr.Lookup(ctx, resume)
	cancel()
	switch {
	case err == nil && owner != user:
		return g.gate.Reject(h, auth.CodeForbidden, fmt.Errorf("user %q resuming session %s of another user", user, resume))
	case err != nil && !errors.Is(err, sessions.ErrNotFound):
		g.metrics.StoreError("lookup")
		return g.gate.Reject(h, auth.CodeStoreUnavailable, fmt.Errorf("look up session %s: %w", resume, err))
	}
	return nil
}

// OnOpen attaches the new connection to its session off the poller: the
// store may take a round trip. Frames that arrive meanwhile wait, in order.
func (g *Gateway) OnOpen(c *netpoll.Conn) {
	g.open(connOf(c), c)
}

// connOf returns the gateway's state of c.
func connOf(c *netpoll.Conn) *conn {
	st, _ := c.Value().(*conn)
	return st
}

// cid is the connection's id in log lines.
func (st *conn) cid() string { return "c" + strconv.FormatUint(st.c.ID(), 36) }

func (g *Gateway) open(st *conn, c wsConn) {
	st.c = c
	// st.at is not shared yet: attach starts below.
	pre := st.pre()
	if exp := pre.expires; !exp.IsZero() && !g.opts.AllowExpiredConnections {
		c.CloseAt(exp, netpoll.CloseTokenExpired, "token expired")
	}
	if g.log.Enabled(context.Background(), slog.LevelDebug) {
		g.log.LogAttrs(context.Background(), slog.LevelDebug, "connection open",
			slog.String("conn", st.cid()), slog.String("remote", clientString(c.Client())), slog.String("user", pre.user))
	}
	g.attaching.Add(1)
	g.wg.Add(1)
	go g.attach(st, pre)
}

// attach binds st to its session; pre is st's pre-attach state, taken
// before the goroutine started.
func (g *Gateway) attach(st *conn, pre *preAttach) {
	defer g.wg.Done()
	defer g.attaching.Add(-1)
	ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
	defer cancel()
	rec, err := g.mgr.Bind(ctx, pre.user, pre.resume, pre.from, st, st.welcome)
	if err != nil {
		g.metrics.StoreError("attach")
		g.log.Warn("attach session failed", "conn", st.cid(), "remote", clientString(st.c.Client()), "user", pre.user, "err", err)
		st.c.Close(netpoll.CloseInternalError, "session store unavailable")
		return
	}
	rec.SetTraceID(traceparent.TraceID(pre.traceparent))
	st.mu.Lock()
	if st.at != any(pre) { // closed meanwhile
		st.mu.Unlock()
		g.mgr.Detach(rec, st, st.c.Acked())
		return
	}
	// Frames received meanwhile, in order, before any later one (OnMessage
	// waits on st.mu).
	for _, p := range pre.pending {
		g.router.Handle(rec, p, st)
	}
	st.at = rec
	st.mu.Unlock()
	if g.router.Draining() && rec.InFlight() == 0 {
		g.reconnect(st)
	}
}

// maxPending bounds the frames a connection may send before its session is
// attached.
const maxPending = 32

// OnMessage hands one frame to dispatch. It runs on the poller: nothing
// here waits on the store (dispatch never does on this path).
func (g *Gateway) OnMessage(c *netpoll.Conn, payload []byte) {
	g.message(connOf(c), payload)
}

func (g *Gateway) message(st *conn, payload []byte) {
	g.msgsIn.Add(1)
	g.metrics.MessageIn()
	g.metrics.BytesIn(len(payload))
	st.mu.Lock()
	var rec Session
	switch a := st.at.(type) {
	case *sessions.Record:
		// Attached to the daemon's record, first: a type word compare
		// on every frame, where the Session case (in record) looks up
		// an itab (callgrind, BenchmarkMessagePath: +9 instructions per
		// message over the separate fields, +30 without this case).
		rec = a
	case *preAttach:
		if len(a.pending) >= maxPending {
			st.mu.Unlock()
			st.c.Close(netpoll.ClosePolicyViolation, "too many messages before welcome")
			return
		}
		a.pending = append(a.pending, append([]byte(nil), payload...))
		st.mu.Unlock()
		return
	default:
		rec = st.record()
	}
	st.mu.Unlock()
	if rec == nil {
		return // closed
	}
	rec.Touch()
	g.router.Handle(rec, payload, st)
}

// OnClose detaches the connection; its requests keep running and their
// output goes to the session.
func (g *Gateway) OnClose(c *netpoll.Conn, code netpoll.CloseCode, err error) {
	g.metrics.Closed(int(code))
	st := connOf(c)
	if st == nil {
		return
	}
	if g.log.Enabled(context.Background(), slog.LevelDebug) {
		st.mu.Lock()
		rec, user, sid := st.record(), "", ""
		if pre := st.pre(); pre != nil {
			user = pre.user
		}
		st.mu.Unlock()
		if rec != nil {
			user, sid = rec.User(), rec.ID()
		}
		attrs := []slog.Attr{slog.String("conn", st.cid()), slog.String("remote", clientString(c.Client())),
			slog.String("user", user), slog.String("session", sid), slog.Int("code", int(code))}
		if err != nil {
			attrs = append(attrs, slog.Any("err", err))
		}
		g.log.LogAttrs(context.Background(), slog.LevelDebug, "connection closed", attrs...)
	}
	g.gate.Release(c.Client().Addr())
	g.closed(st)
}

func (g *Gateway) closed(st *conn) {
	st.mu.Lock()
	rec, attached := st.at.(Session)
	st.at = nil
	st.mu.Unlock()
	if !attached {
		return // not attached yet (attach detaches it), detached by DetachAll, or closed already
	}
	// The session's delivered cursor moves to what the peer's TCP
	// acknowledged: the terminals after it (never written, or still in
	// the kernel's send queue) go to the next resume without ?last=.
	// Detach writes it off this goroutine.
	g.mgr.Detach(rec, st, st.c.Acked())
}

// Close stops the attach goroutines and waits for them.
func (g *Gateway) Close() {
	g.cancel()
	g.wg.Wait()
}

func queryValue(rawQuery, key string) string {
	for rawQuery != "" {
		var kv string
		kv, rawQuery, _ = strings.Cut(rawQuery, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k == key {
			if u, err := url.QueryUnescape(v); err == nil {
				return u
			}
			return ""
		}
	}
	return ""
}

func offersSubprotocol(values []string, want string) bool {
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			if strings.TrimSpace(p) == want {
				return true
			}
		}
	}
	return false
}

// resumeFrom reads ?last= (contract 1.1 section 4a): absent, a v1 resume
// (after the delivered cursor); else a decimal integer from 0 to 2^53-1,
// anything else refused (ok false: 400 bad_request), so that a client bug
// is seen rather than turned into a replay from the wrong place.
func resumeFrom(rawQuery string) (sessions.Resume, bool) {
	if !hasQueryKey(rawQuery, "last") {
		return sessions.Resume{}, true
	}
	pos, ok := events.AckPos([]byte(queryValue(rawQuery, "last")))
	if !ok {
		return sessions.Resume{}, false
	}
	return sessions.Resume{Last: pos, HasLast: true}, true
}

func hasQueryKey(rawQuery, key string) bool {
	for rawQuery != "" {
		var kv string
		kv, rawQuery, _ = strings.Cut(rawQuery, "&")
		if k, _, _ := strings.Cut(kv, "="); k == key {
			return true
		}
	}
	return false
}
