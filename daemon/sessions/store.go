package sessions

import (
	"context"
	"encoding/json"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/events"
)

// Store holds session state. Implementations are safe for concurrent use;
// every method returns quickly (the Redis store bounds each call with a
// short timeout) and returns ErrNotFound for an unknown or expired id.
// Bounds (TTL, history_max_turns, outbox_max) come from config.Sessions.
type Store interface {
	// Get returns a copy of the session.
	Get(ctx context.Context, id string) (*Session, error)
	// Owner returns the user of the session (the handshake's 403 check).
	Owner(ctx context.Context, id string) (string, error)
	// Create makes a fresh session of user with a new id and an empty context.
	Create(ctx context.Context, user string) (*Session, error)
	// Restore re-creates session id of user with an empty context when the
	// store no longer has it (a Redis that restarted empty) while a
	// connection still holds it. An existing session is left untouched.
	Restore(ctx context.Context, id, user string) error
	// PatchContext applies an RFC 7386 merge patch to the session's context.
	PatchContext(ctx context.Context, id string, patch json.RawMessage) error
	// AppendHistory appends turns, keeping the newest history_max_turns.
	AppendHistory(ctx context.Context, id string, turns []events.Turn) error
	// PushOutbox appends messages to the session's outbox, dropping the
	// oldest beyond outbox_max (with a log line), and returns the session's
	// current Holder, so that the caller can tell it to drain.
	PushOutbox(ctx context.Context, id string, msgs ...[]byte) (Holder, error)
	// DrainOutbox removes and returns the outbox, oldest first.
	DrainOutbox(ctx context.Context, id string) ([][]byte, error)
	// Claim records node/conn as the session's holder, increments its epoch,
	// and drains its outbox, atomically; it returns the other nodes that
	// held the session before. ErrForbidden, and no change, if the session
	// is not user's.
	Claim(ctx context.Context, id, user, node string, conn uint64) (Claim, error)
	// Holder returns the session's current holder (zero Holder if none).
	Holder(ctx context.Context, id string) (Holder, error)
	// Touch refreshes the session's TTL.
	Touch(ctx context.Context, id string) error
	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
	// Close releases the store's goroutines and connections. Idempotent.
	Close() error
}

// limits are the store bounds taken from config.Sessions, with the
// defaults of config.Default for zero values.
type limits struct {
	ttl        time.Duration
	outboxMax  int
	historyMax int
}

func limitsOf(cfg config.Sessions) limits {
	l := limits{ttl: cfg.TTL.D(), outboxMax: cfg.OutboxMax, historyMax: cfg.HistoryMaxTurns}
	if l.ttl <= 0 {
		l.ttl = 24 * time.Hour
	}
	if l.outboxMax <= 0 {
		l.outboxMax = 100
	}
	if l.historyMax <= 0 {
		l.historyMax = 20
	}
	return l
}
