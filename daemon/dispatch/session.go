package dispatch

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orchestratord/orchestratord/daemon/auth"
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
}

// Reply writes one message on the connection the request came in on. It
// returns an error when the connection is gone.
type Reply func(msg []byte) error

// call is one request in flight.
type call struct {
	id     string
	cancel context.CancelCauseFunc
}

// Session is the dispatch state of one session on this node: its rate
// limiter and its requests in flight. It lives while a connection holds it
// or a request of it runs, so a client that resumes on this node can cancel
// what it started before the drop.
type Session struct {
	ID   string
	User string

	r *Router

	mu       sync.Mutex // guards the fields below
	inflight map[string]*call
	refs     int  // connections holding the session
	dead     bool // removed from the registry; Acquire again
	// limiter is replaced whole on reload (a Bucket must not be
	// reconfigured while in use).
	limiter atomic.Pointer[auth.Bucket]
	// trace is the trace id of the attached connection's trusted
	// handshake traceparent; nil or "": a new one per request.
	trace atomic.Pointer[string]
}

// Acquire returns the dispatch state of session id for a connection that
// attached it. Call Release when the connection closes.
func (r *Router) Acquire(id, user string) *Session {
	for {
		v, ok := r.sessions.Load(id)
		if !ok {
			lim := r.Table().limits
			s := &Session{ID: id, User: user, r: r}
			s.limiter.Store(auth.NewBucket(lim.SessionRate, lim.SessionBurst))
			v, _ = r.sessions.LoadOrStore(id, s)
		}
		s := v.(*Session)
		s.mu.Lock()
		if s.dead {
			s.mu.Unlock()
			continue
		}
		s.refs++
		s.mu.Unlock()
		return s
	}
}

// Release drops a connection's hold on s. Requests in flight keep running.
func (s *Session) Release() {
	s.mu.Lock()
	s.refs--
	s.maybeRemoveLocked()
	s.mu.Unlock()
}

// InFlight returns the number of requests of s in flight.
func (s *Session) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.inflight)
}

func (s *Session) maybeRemoveLocked() {
	if s.refs <= 0 && len(s.inflight) == 0 && !s.dead {
		s.dead = true
		s.r.sessions.CompareAndDelete(s.ID, s)
	}
}

// allow applies the session's message rate.
func (s *Session) allow(now time.Time) bool {
	return s.limiter.Load().Allow(now)
}

// register adds id to the in-flight registry, enforcing the per-session
// cap. It returns the protocol code of a refusal, or "".
func (s *Session) register(c *call, max int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.inflight[c.id]; dup {
		return CodeDuplicateID
	}
	if len(s.inflight) >= max {
		return CodeOverloaded
	}
	if s.inflight == nil {
		s.inflight = make(map[string]*call, 4)
	}
	s.inflight[c.id] = c
	return ""
}

// unregister removes id and reports how many requests remain.
func (s *Session) unregister(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.inflight, id)
	n := len(s.inflight)
	s.maybeRemoveLocked()
	return n
}

// cancel stops request id with cause; false when it is not in flight.
func (s *Session) cancel(id string, cause error) bool {
	s.mu.Lock()
	c, ok := s.inflight[id]
	s.mu.Unlock()
	if ok {
		c.cancel(cause)
	}
	return ok
}

// cancelAll stops every request of s with cause.
func (s *Session) cancelAll(cause error) {
	s.mu.Lock()
	calls := make([]*call, 0, len(s.inflight))
	for _, c := range s.inflight {
		calls = append(calls, c)
	}
	s.mu.Unlock()
	for _, c := range calls {
		c.cancel(cause)
	}
}

// setRate applies a reloaded message rate.
func (s *Session) setRate(r float64, burst int) {
	s.limiter.Store(auth.NewBucket(r, burst))
}
