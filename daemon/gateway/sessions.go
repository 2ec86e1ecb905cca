package gateway

import (
	"context"
	"encoding/json"

	"github.com/orchestratord/orchestratord/daemon/dispatch"
	"github.com/orchestratord/orchestratord/daemon/events"
	"github.com/orchestratord/orchestratord/daemon/sessions"
)

// DispatchSessions adapts the session manager to what dispatch needs: the
// Sink of a request (its Stream) and the session's context and history.
func DispatchSessions(m *sessions.Manager) dispatch.Sessions { return sessionSink{m} }

type sessionSink struct{ m *sessions.Manager }

func (s sessionSink) Begin(sessionID, requestID string) dispatch.Output {
	return s.m.Begin(sessionID, requestID)
}

func (s sessionSink) Load(ctx context.Context, sessionID string) (json.RawMessage, []events.Turn, error) {
	sess, err := s.m.Get(ctx, sessionID)
	if err != nil {
		return nil, nil, err
	}
	return sess.Context, sess.History, nil
}

func (s sessionSink) PatchContext(ctx context.Context, sessionID string, patch json.RawMessage) error {
	return s.m.PatchContext(ctx, sessionID, patch)
}

func (s sessionSink) AppendHistory(ctx context.Context, sessionID string, turns []events.Turn) error {
	return s.m.AppendHistory(ctx, sessionID, turns)
}
