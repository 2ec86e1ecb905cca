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

	"github.com/orchestratord/orchestratord/daemon/backends"
	"github.com/orchestratord/orchestratord/daemon/events"
)

// Metrics is what dispatch reports. Implementations must be cheap and safe
// for concurrent use.
type Metrics interface {
	Request(route, outcome string, d time.Duration)
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
	sessions sync.Map // session id -> *Session

	inflight atomic.Int64 // requests in flight on the node
	draining atomic.Bool
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
	r := &Router{store: store, metrics: m, log: log}
	r.table.Store(t)
	return r
}

// Table returns the table in force.
func (r *Router) Table() *Table { return r.table.Load() }

// Swap puts t in force and returns the previous table. Requests in flight
// finish on the routes they started with; every session gets the new rate.
func (r *Router) Swap(t *Table) *Table {
	old := r.table.Swap(t)
	r.sessions.Range(func(_, v any) bool {
		v.(*Session).setRate(t.limits.SessionRate, t.limits.SessionBurst)
		return true
	})
	return old
}

// InFlight returns the number of requests in flight on the node.
func (r *Router) InFlight() int { return int(r.inflight.Load()) }

// SetDraining makes new requests fail with draining (or not).
func (r *Router) SetDraining(on bool) { r.draining.Store(on) }

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
	r.sessions.Range(func(_, v any) bool {
		v.(*Session).cancelAll(cause)
		return true
	})
}

// Handle processes one client frame of session s. It runs on a poller
// worker and never blocks: backend calls run on their own goroutine. reply
// writes on the connection the frame came in on. payload is valid only
// until Handle returns.
func (r *Router) Handle(s *Session, payload []byte, reply Reply) {
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
		_ = reply(*bp)
		putBuf(bp)
		return
	case "cancel":
		r.handleCancel(s, &env, reply)
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
	if !s.allow(time.Now()) {
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
	if rt.inline {
		r.inlineEcho(s, rt, &env, reply, t)
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
	c := &call{id: strings.Clone(env.ID), cancel: cancel}
	if code := s.register(c, t.limits.SessionInflight); code != "" {
		r.inflight.Add(-1)
		r.wg.Done()
		cancel(nil)
		msg := "too many requests in flight in this session"
		if code == CodeDuplicateID {
			msg = "this id is already in flight"
		}
		r.refuse(reply, env.ID, rt.name, code, msg)
		return
	}
	req := &backends.Request{
		ID:        c.id,
		Type:      rt.name,
		SessionID: s.ID,
		UserID:    s.User,
		Data:      append(json.RawMessage(nil), env.Data...),
	}
	go r.run(ctx, cancel, s, rt, req, false)
}

// inlineEcho answers an echo route on the worker: no goroutine, no copy.
// It still counts against the session's in-flight registry for the
// duplicate check, so ids keep their meaning.
func (r *Router) inlineEcho(s *Session, rt *route, env *events.Envelope, reply Reply, t *Table) {
	start := time.Now()
	bp := getBuf()
	defer putBuf(bp)
	msg := events.AppendResult((*bp)[:0], env.ID, env.Data)
	*bp = msg
	if err := reply(msg); err != nil {
		// The connection went away between read and reply: keep the
		// answer for the session.
		out := r.store.Begin(s.ID, strings.Clone(env.ID))
		out.End(msg)
	}
	r.metrics.Request(rt.name, "result", time.Since(start))
}

func (r *Router) handleCancel(s *Session, env *events.Envelope, reply Reply) {
	var target struct {
		ID string `json:"id"`
	}
	found := false
	if err := json.Unmarshal(env.Data, &target); err == nil && events.ValidID(target.ID) {
		found = s.cancel(target.ID, ErrCanceled)
	} else {
		r.refuse(reply, env.ID, "cancel", CodeBadRequest, `cancel needs data {"id":"<request id>"}`)
		return
	}
	bp := getBuf()
	*bp = events.AppendResult((*bp)[:0], env.ID, cancelData(found))
	_ = reply(*bp)
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
	_ = reply(*bp)
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
