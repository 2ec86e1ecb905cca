// Package dispatch routes decoded client messages to backend pools. It owns
// the routing table (swapped whole through an atomic pointer on reload),
// the per-session limits (message rate, requests in flight), the in-flight
// registry (duplicate ids, cancel), the three deadlines of a route, and the
// invariant of the contract: zero or more chunks, then exactly one terminal
// message per accepted request id. It is the one place that turns an error
// into a protocol error code (Code).
//
// Trace ids (contract section 7): every request has a W3C trace id. It is
// the one of the handshake's traceparent when the gateway trusted it
// (Session.TraceID, kept in the session's record), else a new one per
// request. The request's traceparent, sent to the backend, carries that
// trace id and a new span id (daemon/traceparent); every log line about the
// request has the trace id under "trace".
//
// It imports events, backends, config and traceparent; sessions are
// reached through the Sessions interface declared here, and connections
// through a Reply.
package dispatch
