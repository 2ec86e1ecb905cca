package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/orchestratord/orchestratord/daemon/backends"
	"github.com/orchestratord/orchestratord/daemon/events"
)

// run executes one accepted request on its own goroutine and writes its
// chunks and exactly one terminal message through the session's Output.
// trace is the trace id of req.TraceParent, for the log lines. restart:
// the request runs again after node loss (Rerun).
func (r *Router) run(ctx context.Context, cancel context.CancelCauseFunc, s Session, rt *route, req *backends.Request, trace string, restart bool) {
	defer r.wg.Done()
	start := time.Now()
	out := beginRun(r.store, rt, req, restart) // NODELOSS HOOK: recorded for node-loss recovery
	waitRecorded(ctx, out)                     // NODELOSS HOOK: accepted once recorded

	ctx, stop := context.WithTimeoutCause(ctx, rt.timeout, ErrTimeout)
	defer stop()
	defer cancel(nil)

	// First-chunk and idle deadlines share one timer, re-armed per chunk.
	var (
		watchMu sync.Mutex
		watch   *time.Timer
		ended   bool
	)
	if rt.firstChunk > 0 {
		watch = time.AfterFunc(rt.firstChunk, func() { cancel(fmt.Errorf("%w: no first chunk within %s", ErrTimeout, rt.firstChunk)) })
	}
	seq := 0
	outBytes := 0 // chunk bytes sent, for the access log
	var buf []byte
	emit := func(part json.RawMessage) {
		watchMu.Lock()
		if ended {
			watchMu.Unlock()
			return
		}
		if watch != nil {
			watch.Stop()
		}
		if rt.idle > 0 {
			watch = time.AfterFunc(rt.idle, func() { cancel(fmt.Errorf("%w: stream idle for %s", ErrTimeout, rt.idle)) })
		} else {
			watch = nil
		}
		buf = events.AppendChunk(buf[:0], req.ID, seq, part)
		seq++
		outBytes += len(buf)
		watchMu.Unlock()
		out.Chunk(buf)
	}

	res, err := r.call(ctx, rt, req, emit)

	watchMu.Lock()
	ended = true
	if watch != nil {
		watch.Stop()
	}
	watchMu.Unlock()

	if err == nil {
		err = r.save(ctx, req.SessionID, res)
	}
	if err != nil && ctx.Err() != nil {
		// The context's cause says why: timeout, cancel or drain.
		if cause := context.Cause(ctx); cause != nil {
			err = cause
		}
	}

	var msg []byte
	outcome := "result"
	if err != nil {
		outcome = Code(err)
		msg = events.AppendError(buf[:0], req.ID, outcome, message(outcome, err))
		if outcome == CodeBackendError || outcome == CodeTimeout {
			r.log.LogAttrs(ctx, slog.LevelWarn, "request failed",
				slog.String("session", req.SessionID), slog.String("user", req.UserID), slog.String("request", req.ID),
				slog.String("trace", trace), slog.String("route", rt.name), slog.String("backend", rt.backend),
				slog.String("code", outcome), slog.Any("err", err))
		}
	} else {
		msg = events.AppendResult(buf[:0], req.ID, res.Data)
	}
	// Unregister before the terminal is written, so a client that reuses
	// the id right after receiving it is not refused as a duplicate.
	left := s.Unregister(req.ID)
	out.End(msg)
	// Counted out only once its terminal is on the socket or in the
	// outbox: "nothing in flight" means nothing still to deliver.
	r.inflight.Add(-1)
	d := time.Since(start)
	r.metrics.Request(rt.name, outcome, d)
	if r.access.Load() {
		r.accessLine(s, rt, req.ID, outcome, d, len(req.Data), outBytes+len(msg), trace)
	}
	if left == 0 && r.draining.Load() {
		if fn := r.onIdle.Load(); fn != nil {
			(*fn)(req.SessionID)
		}
	}
}

// call runs the backend, reading the session first when the backend needs
// it, and falls back when every endpoint's breaker is open.
func (r *Router) call(ctx context.Context, rt *route, req *backends.Request, emit backends.Emit) (backends.Result, error) {
	if rt.needsSession {
		sctx, hist, err := r.store.Load(ctx, req.SessionID, req.UserID)
		if err != nil {
			return backends.Result{}, fmt.Errorf("%w: load session: %w", ErrStore, err)
		}
		req.Context, req.History = sctx, hist
	}
	res, err := rt.pool.Call(ctx, req, emit)
	if err != nil && rt.fallback != nil && errors.Is(err, backends.ErrOpen) {
		return rt.fallback.Call(ctx, req, emit)
	}
	return res, err
}

// save applies what a result asks of the session before its terminal is
// written.
func (r *Router) save(ctx context.Context, sessionID string, res backends.Result) error {
	if len(res.ContextPatch) > 0 && string(res.ContextPatch) != "null" {
		if err := r.store.PatchContext(ctx, sessionID, res.ContextPatch); err != nil {
			return fmt.Errorf("%w: patch context: %w", ErrStore, err)
		}
	}
	if len(res.Turns) > 0 {
		if err := r.store.AppendHistory(ctx, sessionID, res.Turns); err != nil {
			return fmt.Errorf("%w: append history: %w", ErrStore, err)
		}
	}
	return nil
}
