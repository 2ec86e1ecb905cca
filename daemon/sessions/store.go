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
	// Append numbers a terminal and appends it to the session's replay
	// log, atomically (one round trip): the position is the session's
	// previous one plus 1, written into the message after its id (at is
	// events.PosIndex of msg); the log keeps the newest replay_max entries
	// within replay_bytes; the TTL is refreshed. It returns the position,
	// the message as logged (valid until the session's next Append:
	// Appended.Msg), and the session's current Holder.
	Append(ctx context.Context, id string, msg []byte, at int) (Appended, error)
	// AppendGap takes n positions for terminals that were lost before they
	// could be logged (the store was unavailable and the node's memory
	// for them full): a resume over them reports them missed.
	AppendGap(ctx context.Context, id string, n int) error
	// Claim records node/conn as the session's holder, increments its epoch,
	// and reads the log after the resume point, atomically; it returns the
	// other nodes that held the session before. ErrForbidden, and no
	// change, if the session is not user's.
	Claim(ctx context.Context, id, user, node string, conn uint64, from Resume) (Claim, error)
	// ReadLog returns the log entries with a position above after.
	ReadLog(ctx context.Context, id string, after uint64) ([]LogEntry, error)
	// Delivered raises the session's delivered cursor to pos: the
	// terminals up to pos reached a client (its TCP acknowledged them).
	Delivered(ctx context.Context, id string, pos uint64) error
	// Ack drops the log entries up to pos (the client has them) and raises
	// the delivered cursor to pos. A pos beyond the session's position is
	// taken as the position.
	Ack(ctx context.Context, id string, pos uint64) error
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
	ttl         time.Duration
	outboxMax   int
	historyMax  int
	replayMax   int
	replayBytes int64
	budget      int64
}

func limitsOf(cfg config.Sessions) limits {
	l := limits{ttl: cfg.TTL.D(), outboxMax: cfg.OutboxMax, historyMax: cfg.HistoryMaxTurns,
		replayMax: cfg.ReplayMax, replayBytes: cfg.ReplayBytes, budget: cfg.MemoryBudgetBytes}
	if l.replayMax <= 0 {
		l.replayMax = 100
	}
	if l.replayBytes <= 0 {
		l.replayBytes = 1 << 20
	}
	if l.budget <= 0 {
		l.budget = 256 << 20
	}
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
