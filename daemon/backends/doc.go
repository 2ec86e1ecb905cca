// Package backends calls the services behind the daemon: the echo, http,
// openai and nats kinds of the wire contract (section 3), each endpoint
// wrapped in a circuit breaker, balanced round robin or by least in-flight
// calls, behind a per-backend bulkhead.
//
// A call runs on the caller's goroutine (dispatch runs one goroutine per
// request in flight), streams zero or more chunks through Emit and ends with
// one Result or one error. The caller's context reaches the backend: a done
// context aborts the HTTP request or publishes a NATS cancel.
//
// Errors are classified with sentinels and the *Error type; the mapping to
// protocol codes belongs to dispatch. ErrUnavailable is the umbrella of
// "no healthy endpoint" (ErrOpen, ErrNoResponders).
//
// It imports config, events and the leaves redact and traceparent of the
// daemon and nothing else of it: never gateway, netpoll, sessions or
// dispatch.
package backends
