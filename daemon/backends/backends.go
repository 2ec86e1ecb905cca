package backends

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/orchestratord/orchestratord/daemon/events"
)

// Request is one backend call. The daemon owns it for the length of the
// call; backends read it and never keep it after Call returns.
type Request struct {
	// ID is the client's request id, SessionID and UserID whom it is for.
	ID, Type, SessionID, UserID string
	// TraceParent is a W3C traceparent to forward; "" makes the call
	// generate one.
	TraceParent string
	// Data is the client's data, already copied out of the read buffer.
	Data json.RawMessage
	// Context is the session's context object; nil means {}.
	Context json.RawMessage
	// History is the session's chat history (openai).
	History []events.Turn
}

// Result is the end of a successful call.
type Result struct {
	// Data is the final value; nil means JSON null.
	Data json.RawMessage
	// ContextPatch is an RFC 7386 merge patch for the session context, nil
	// when the backend sent none.
	ContextPatch json.RawMessage
	// Turns are appended to the session history (openai: user + assistant).
	Turns []events.Turn
}

// Emit receives one chunk of a streamed answer. It is called in order on
// the calling goroutine; part is valid only until Emit returns.
type Emit func(part json.RawMessage)

// Backend is one way of calling a service. Call streams zero or more chunks
// through emit and ends with one Result or one error. It returns promptly
// once ctx is done, with context.Cause(ctx) (possibly wrapped).
type Backend interface {
	Call(ctx context.Context, req *Request, emit Emit) (Result, error)
}

// sentinel is an error value that unwraps to a broader one, so that
// errors.Is(ErrOpen, ErrUnavailable) holds without allocating anything.
type sentinel struct {
	msg    string
	parent error
}

func (s *sentinel) Error() string { return s.msg }
func (s *sentinel) Unwrap() error { return s.parent }

var (
	// ErrUnavailable is the umbrella of "no healthy endpoint": dispatch
	// maps it to backend_unavailable. ErrOpen and ErrNoResponders wrap it.
	ErrUnavailable = errors.New("backend unavailable")
	// ErrOpen is returned at once, without calling anything, when the
	// breaker of every endpoint of a backend is open. Dispatch calls the
	// route's fallback when errors.Is(err, ErrOpen).
	ErrOpen error = &sentinel{msg: "backend unavailable: every endpoint's breaker is open", parent: ErrUnavailable}
	// ErrNoResponders is returned when NATS reports that nobody listens
	// on the subject. It counts as a breaker failure.
	ErrNoResponders error = &sentinel{msg: "backend unavailable: no responders on the subject", parent: ErrUnavailable}
	// ErrOverloaded is returned at once when the backend's bulkhead
	// (max_concurrent calls in flight) is full. It is not a breaker
	// failure.
	ErrOverloaded = errors.New("backend overloaded: too many calls in flight")
	// ErrUnhealthy is returned at once, without calling anything, when no
	// endpoint of a backend passes its health check (and none is merely
	// refused by its breaker). It wraps ErrOpen: dispatch calls the route's
	// fallback and answers backend_unavailable as for open breakers.
	ErrUnhealthy error = &sentinel{msg: "backend unavailable: no endpoint passes its health check", parent: ErrOpen}
	// ErrConnect marks a call that failed to connect to the endpoint (a
	// refused or timed-out TCP connect, a NATS client not connected). It
	// is the cause inside a 502 *Error.
	ErrConnect = errors.New("connect to backend failed")
	// ErrUnknownBackend is returned by Set.Reset for a name it lacks.
	ErrUnknownBackend = errors.New("unknown backend")
)

// Error is a failed call the backend is blamed for. Status 400..499 means
// the backend rejected the request (backend_rejected, not a breaker
// failure); anything else is a backend error (backend_error, a breaker
// failure when Status >= 500).
type Error struct {
	// Status is the HTTP status, or 502 for transport failures, malformed
	// answers and error objects in a stream.
	Status int
	// Message is safe to show the client: the backend's own message for a
	// 4xx, a generic description otherwise.
	Message string
	// Err is the underlying cause, for logs; may be nil.
	Err error
}

// Error returns the status, the message and the cause; a connect failure
// says so instead of showing a status no backend sent.
func (e *Error) Error() string {
	if errors.Is(e.Err, ErrConnect) {
		return e.Err.Error()
	}
	s := "backend status " + strconv.Itoa(e.Status) + ": " + e.Message
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Rejected reports whether the backend refused the request (4xx).
func (e *Error) Rejected() bool { return e.Status >= 400 && e.Status < 500 }

// badGateway returns a 502 *Error with a client-safe message and a cause.
func badGateway(msg string, cause error) *Error {
	return &Error{Status: 502, Message: msg, Err: cause}
}

// connectFailed returns the 502 *Error of a call that could not connect.
func connectFailed(cause error) *Error {
	return &Error{Status: 502, Message: "backend connection failed", Err: fmt.Errorf("%w: %w", ErrConnect, cause)}
}

// isDialError reports whether err is a failure to open the connection (as
// opposed to one that broke after it was open).
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// ctxErr is what a kind returns once ctx is done: the cause dispatch gave.
func ctxErr(ctx context.Context) error { return context.Cause(ctx) }
