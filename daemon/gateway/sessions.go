package gateway

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/orchestratord/orchestratord/daemon/dispatch"
	"github.com/orchestratord/orchestratord/daemon/events"
	"github.com/orchestratord/orchestratord/daemon/sessions"
)

// StoreErrors counts session store failures by operation.
type StoreErrors interface{ StoreError(op string) }

// DispatchSessions adapts the session manager to what dispatch needs: the
// Sink of a request (its Stream) and the session's context and history.
// Store failures are counted in errs.
func DispatchSessions(m *sessions.Manager, errs StoreErrors) dispatch.Sessions {
	return sessionSink{m, errs}
}

type sessionSink struct {
	m    *sessions.Manager
	errs StoreErrors
}

func (s sessionSink) count(op string, err error) error {
	if err != nil && s.errs != nil {
		s.errs.StoreError(op)
	}
	return err
}

func (s sessionSink) Begin(sessionID, requestID string) dispatch.Output {
	return s.m.Begin(sessionID, requestID)
}

// BeginRoute implements dispatch.RouteBeginner: the request is recorded
// for node-loss recovery (docs/sessions.md, "Node loss").
func (s sessionSink) BeginRoute(sessionID, requestID, route string, retry []byte) dispatch.Output {
	return s.m.BeginRoute(sessionID, requestID, route, retry)
}

// Terminal writes a terminal through the manager (numbered, logged,
// delivered).
func (s sessionSink) Terminal(ctx context.Context, sessionID, requestID string, msg []byte) (uint64, error) {
	return s.m.Terminal(ctx, sessionID, requestID, msg)
}

// Each calls fn for every session record the node holds.
func (s sessionSink) Each(fn func(dispatch.Session)) {
	s.m.Each(func(r *sessions.Record) { fn(r) })
}

// Hold returns the session's record, registered until release.
func (s sessionSink) Hold(sessionID, user string) (dispatch.Session, func()) {
	return s.m.Hold(sessionID, user)
}

// Ack trims the session's replay log up to pos; it never blocks.
func (s sessionSink) Ack(sessionID string, pos uint64) { s.m.Ack(sessionID, pos) }

// InlineTerminals reports whether a terminal can be written on a
// connection worker: only when the store numbers it in memory.
func (s sessionSink) InlineTerminals() bool {
	_, ok := s.m.Store().(*sessions.MemoryStore)
	return ok
}

// Load reads the session. A session the store lost while a connection
// holds it (a Redis that restarted empty) is re-created under the same id
// with an empty context, so the connection keeps working.
func (s sessionSink) Load(ctx context.Context, sessionID, user string) (json.RawMessage, []events.Turn, error) {
	sess, err := s.m.Get(ctx, sessionID)
	if errors.Is(err, sessions.ErrNotFound) {
		if rerr := s.m.Restore(ctx, sessionID, user); rerr != nil {
			return nil, nil, s.count("restore", rerr)
		}
		sess, err = s.m.Get(ctx, sessionID)
	}
	if err != nil {
		return nil, nil, s.count("get", err)
	}
	return sess.Context, sess.History, nil
}

func (s sessionSink) PatchContext(ctx context.Context, sessionID string, patch json.RawMessage) error {
	return s.count("patch_context", s.m.PatchContext(ctx, sessionID, patch))
}

func (s sessionSink) AppendHistory(ctx context.Context, sessionID string, turns []events.Turn) error {
	return s.count("append_history", s.m.AppendHistory(ctx, sessionID, turns))
}
