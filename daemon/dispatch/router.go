package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orchestratord/orchestratord/daemon/auth"
	"github.com/orchestratord/orchestratord/daemon/backends"
	"github.com/orchestratord/orchestratord/daemon/events"
	"github.com/orchestratord/orchestratord/daemon/traceparent"
)

// Metrics is what dispatch reports. Implementations must be cheap and safe
// for concurrent use.
type Metrics interface {
	Request(route, outcome string, d time.Duration)
}

// RequestObservers is what a Metrics may implement besides: the
// recorder of one route's requests with one outcome, resolved once. The
// inline echo records its results through it, without the per-request
// series lookup of Request.
type RequestObservers interface {
	RequestObserver(route, outcome string) func(d time.Duration)
}

type noMetrics struct{}

func (noMetrics) Request(string, string, time.Duration) {}

// unknownRoute labels the metrics of messages whose type is no route.
const unknownRoute = "_unknown"

// Router routes messages. The zero value is not usable: call New.
type Router struct {
	table    atomic.Pointer[Table]
	store    Sessions
	metrics  Metrics
	log      *slog.Logger
	rate     atomic.Pointer[auth.Bucket] // the per-session message rate of the table in force (state in each Session)
	inlineOK bool                        // the store numbers terminals without a round trip
	// epoch is when New ran; Handle's clock is epoch plus the monotonic
	// time since (clock).
	epoch time.Time

	inflight atomic.Int64 // requests in flight on the node
	draining atomic.Bool
	access   atomic.Bool    // log.requests: one access line per request
	wg       sync.WaitGroup // one per request running on its own goroutine

	// onIdle, when set, is called (from a request goroutine) when a
	// session's last request ends while the node drains.
	onIdle atomic.Pointer[func(sessionID string)]
}

// New returns a router serving t.
func New(t *Table, store Sessions, m Metrics, log *slog.Logger) *Router {
	if m == nil {
		m = noMetrics{}
	}
	r := &Router{store: store, metrics: m, log: log, inlineOK: store.InlineTerminals(), epoch: time.Now()}
	r.table.Store(t)
	r.rate.Store(auth.NewBucket(t.limits.SessionRate, t.limits.SessionBurst))
	return r
}

// Table returns the table in force.
func (r *Router) Table() *Table { return r.table.Load() }

// Swap puts t in force and returns the previous table. Requests in flight
// finish on the routes they started with; every session gets the new rate.
func (r *Router) Swap(t *Table) *Table {
	old := r.table.Swap(t)
	r.rate.Store(auth.NewBucket(t.limits.SessionRate, t.limits.SessionBurst))
	return old
}

// SetAccessLog turns the access log (one info line per request) on or off
// (config log.requests; reloadable).
func (r *Router) SetAccessLog(on bool) { r.access.Store(on) }

// InFlight returns the number of requests in flight on the node.
func (r *Router) InFlight() int { return int(r.inflight.Load()) }

// SetDraining makes new requests fail with draining (or not).
func (r *Router) SetDraining(on bool) { r.draining.Store(on) }

// Draining reports whether new requests fail with draining.
func (r *Router) Draining() bool { return r.draining.Load() }

// OnIdle registers fn, called when a session's last request ends while
// the node is draining.
func (r *Router) OnIdle(fn func(sessionID string)) { r.onIdle.Store(&fn) }

// Wait blocks until every request running on its own goroutine has ended,
// or ctx is done.
func (r *Router) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// CancelAll stops every request in flight with cause (drain past its
// timeout: ErrDraining).
func (r *Router) CancelAll(cause error) {
	r.store.Each(func(s Session) { s.CancelAll(cause) })
}

// Handle processes one client frame of session s. It runs on a poller
// worker and never blocks: backend calls run on their own goroutine. reply
// writes on the connection the frame came in on. payload is valid only
// until Handle returns.
func (r *Router) Handle(s Session, payload []byte, reply Reply) {
	var env events.Envelope
	if err := events.Decode(payload, &env); err != nil {
		var de *events.DecodeError
		id := ""
		reason := "invalid message"
		if errors.As(err, &de) {
			id, reason = de.ID, de.Reason
		}
		r.refuse(reply, id, "", CodeBadRequest, reason)
		return
	}
	switch env.Type {
	case "ping":
		bp := getBuf()
		*bp = events.AppendPong((*bp)[:0], env.ID)
		_ = reply.Send(*bp)
		putBuf(bp)
		return
	case "cancel":
		r.handleCancel(s, &env, reply)
		return
	case events.TypeAck:
		// No answer (contract 1.1 section 4a), but a bad one is told.
		pos, ok := events.AckPos(env.Pos)
		if !ok {
			r.refuse(reply, env.ID, "", CodeBadRequest, `ack needs "pos": an integer from 0 to 2^53-1`)
			return
		}
		r.store.Ack(s.ID(), pos)
		return
	}
	t := r.table.Load()
	// Metrics are labelled by the route's configured name, never by bytes
	// of the frame (they alias the read buffer, and a client could make up
	// any number of types).
	rt, ok := t.routes[env.Type]
	label := unknownRoute
	if ok {
		label = rt.name
	}
	now := r.clock()
	if !r.rate.Load().AllowAt(s.RateState(), now) {
		r.refuse(reply, env.ID, label, CodeRateLimited, "message rate limit exceeded")
		return
	}
	if r.draining.Load() {
		r.refuse(reply, env.ID, label, CodeDraining, message(CodeDraining, nil))
		return
	}
	if !ok {
		r.refuse(reply, env.ID, label, CodeUnknownType, "no route for this type")
		return
	}
	if rt.inline && r.inlineOK {
		r.inlineEcho(s, rt, &env, now)
		return
	}
	// Count the request before the last draining check, so a drain's Wait
	// cannot miss a request that slipped in.
	r.wg.Add(1)
	if r.draining.Load() {
		r.wg.Done()
		r.refuse(reply, env.ID, rt.name, CodeDraining, message(CodeDraining, nil))
		return
	}
	if n := r.inflight.Add(1); n > int64(t.limits.MaxInflight) {
		r.inflight.Add(-1)
		r.wg.Done()
		r.refuse(reply, env.ID, rt.name, CodeOverloaded, message(CodeOverloaded, nil))
		return
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	// env aliases the frame buffer (zero-copy decode): the id must be
	// copied before it outlives this call.
	id := strings.Clone(env.ID)
	if dup, full := s.Register(id, cancel, t.limits.SessionInflight); dup || full {
		r.inflight.Add(-1)
		r.wg.Done()
		cancel(nil)
		code, msg := CodeOverloaded, "too many requests in flight in this session"
		if dup {
			code, msg = CodeDuplicateID, "this id is already in flight"
		}
		r.refuse(reply, env.ID, rt.name, code, msg)
		return
	}
	req := &backends.Request{
		ID:        id,
		Type:      rt.name,
		SessionID: s.ID(),
		UserID:    s.User(),
		Data:      append(json.RawMessage(nil), env.Data...),
	}
	var trace string
	req.TraceParent, trace = traceparent.New(s.TraceID())
	go r.run(ctx, cancel, s, rt, req, trace, false)
}

// clock returns the time now as the router's epoch plus the monotonic
// time since: one clock read (time.Now reads the wall and the monotonic
// clocks, two vDSO calls). The rate buckets and the request durations,
// its only readers, need a steady clock, not the wall's (which this one
// follows only as far as the two clocks keep pace; a step of the wall
// clock does not move it).
func (r *Router) clock() time.Time { return r.epoch.Add(time.Since(r.epoch)) }

// inlineEcho answers an echo route on the worker: no goroutine. Its
// result is a terminal like any other: numbered, logged and delivered by
// the session store, which does it in memory (Router.inlineOK). start is
// when Handle took the frame (the rate check's clock reading, reused).
func (r *Router) inlineEcho(s Session, rt *route, env *events.Envelope, start time.Time) {
	bp := getBuf()
	defer putBuf(bp)
	msg := events.AppendResult((*bp)[:0], env.ID, env.Data)
	*bp = msg
	_, _ = r.store.Terminal(context.Background(), s.ID(), env.ID, msg)
	d := time.Since(start)
	(*r.inlineObserver(rt))(d)
	if rt.inlineDone != nil {
		rt.inlineDone(d)
	}
	if r.access.Load() {
		_, trace := traceparent.New(s.TraceID())
		r.accessLine(s, rt, env.ID, "result", d, len(env.Data), len(msg), trace)
	}
}

// inlineObserver returns the recorder of rt's inline results: the
// metrics' RequestObserver when they have one, else Request.
func (r *Router) inlineObserver(rt *route) *func(time.Duration) {
	if o := rt.inlineObs.Load(); o != nil {
		return o
	}
	var o func(time.Duration)
	if ro, ok := r.metrics.(RequestObservers); ok {
		o = ro.RequestObserver(rt.name, "result")
	} else {
		name, m := rt.name, r.metrics
		o = func(d time.Duration) { m.Request(name, "result", d) }
	}
	rt.inlineObs.Store(&o)
	return &o
}

// accessLine writes the access log line of one request (log.requests).
func (r *Router) accessLine(s Session, rt *route, id, outcome string, d time.Duration, in, out int, trace string) {
	r.log.LogAttrs(context.Background(), slog.LevelInfo, "request",
		slog.String("session", s.ID()), slog.String("user", s.User()), slog.String("request", id),
		slog.String("trace", trace), slog.String("route", rt.name), slog.String("backend", rt.backend),
		slog.String("outcome", outcome), slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.Int("bytes_in", in), slog.Int("bytes_out", out))
}

func (r *Router) handleCancel(s Session, env *events.Envelope, reply Reply) {
	var target struct {
		ID string `json:"id"`
	}
	found := false
	if err := json.Unmarshal(env.Data, &target); err == nil && events.ValidID(target.ID) {
		found = s.Cancel(target.ID, ErrCanceled)
	} else {
		r.refuse(reply, env.ID, "cancel", CodeBadRequest, `cancel needs data {"id":"<request id>"}`)
		return
	}
	bp := getBuf()
	*bp = events.AppendResult((*bp)[:0], env.ID, cancelData(found))
	_ = reply.Send(*bp)
	putBuf(bp)
}

// The data of a cancel's own answer.
var (
	canceledTrue  = []byte(`{"canceled":true}`)
	canceledFalse = []byte(`{"canceled":false}`)
)

func cancelData(found bool) []byte {
	if found {
		return canceledTrue
	}
	return canceledFalse
}

// refuse sends the terminal error of a request that was never accepted.
func (r *Router) refuse(reply Reply, id, routeName, code, msg string) {
	bp := getBuf()
	*bp = events.AppendError((*bp)[:0], id, code, msg)
	_ = reply.Send(*bp)
	putBuf(bp)
	if routeName != "" {
		r.metrics.Request(routeName, code, 0)
	}
}

// bufs holds encode buffers for replies written on the worker. Reply copies
// what it queues, so a buffer is reused as soon as reply returns.
var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func getBuf() *[]byte { return bufs.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) <= 64<<10 {
		bufs.Put(b)
	}
}
