package dispatch

import (
	"context"
	"encoding/json"
	"sync/atomic"

	"github.com/orchestratord/orchestratord/daemon/events"
)

// Output routes a request's messages to the session: to its live
// connection wherever it is, or, for the terminal, to its outbox.
type Output interface {
	Chunk(msg []byte) // msg may be reused after return
	End(msg []byte)   // exactly once per request
}

// Sessions is the session store as dispatch sees it.
type Sessions interface {
	Begin(sessionID, requestID string) Output
	// Terminal numbers, logs and delivers the terminal of a request that
	// ran without a stream (an inline answer).
	Terminal(ctx context.Context, sessionID, requestID string, msg []byte) (uint64, error)
	// Ack trims the session's replay log up to pos (the client's ack); it
	// never blocks.
	Ack(sessionID string, pos uint64)
	// InlineTerminals reports whether Terminal may run on a connection
	// worker (no store round trip); if not, inline routes run on a
	// goroutine like the others.
	InlineTerminals() bool
	// Load returns the session's context and history; user is the
	// session's owner, for a store that must re-create a lost session.
	Load(ctx context.Context, sessionID, user string) (context json.RawMessage, history []events.Turn, err error)
	PatchContext(ctx context.Context, sessionID string, patch json.RawMessage) error
	AppendHistory(ctx context.Context, sessionID string, turns []events.Turn) error
	// Each calls fn for every session this node holds (CancelAll).
	Each(fn func(Session))
	// Hold returns the record of session sessionID of user, kept
	// registered until release is called (Rerun registers a request on
	// it in between).
	Hold(sessionID, user string) (s Session, release func())
}

// Reply is the connection a request came in on. Send writes one message
// on it and returns an error when the connection is gone. An interface
// rather than a func, so that a connection's state can be its Reply
// without a closure per connection (the gateway's conn is one).
type Reply interface {
	Send(msg []byte) error
}

// ReplyFunc is a func used as a Reply.
type ReplyFunc func(msg []byte) error

// Send calls f(msg).
func (f ReplyFunc) Send(msg []byte) error { return f(msg) }

// Session is a session's record as dispatch uses it: the one record of
// the session on this node (sessions.Record), which keeps dispatch's
// per-session state (its requests in flight and its rate limiter's state)
// so that a session is one object whatever the layer. Methods are safe
// for concurrent use and never block on I/O.
type Session interface {
	ID() string
	// User is the session's user.
	User() string
	// RateState is the session's message rate limiter state
	// (auth.Bucket.AllowAt); the rate is the table's.
	RateState() *atomic.Int64
	// Register adds request id with its cancel func to the requests in
	// flight unless id is in flight already (dup) or max are (full).
	Register(id string, cancel context.CancelCauseFunc, max int) (dup, full bool)
	// Unregister removes request id and returns how many remain.
	Unregister(id string) int
	// Cancel stops request id with cause; false when it is not in flight.
	Cancel(id string, cause error) bool
	// CancelAll stops every request in flight with cause.
	CancelAll(cause error)
	// InFlight returns the number of requests in flight.
	InFlight() int
	// TraceID is the trace id of the attached connection's trusted
	// handshake traceparent, or "": a new one per request (trace.go).
	TraceID() string
}
