// Package dispatch routes decoded client messages to backend pools. It owns
// the routing table (swapped whole through an atomic pointer on reload),
// the per-session limits (message rate, requests in flight), the in-flight
// registry (duplicate ids, cancel), the three deadlines of a route, and the
// invariant of the contract: zero or more chunks, then exactly one terminal
// message per accepted request id. It is the one place that turns an error
// into a protocol error code (Code).
//
// It imports events, backends and config; sessions are reached through the
// Sessions interface declared here, and connections through a Reply.
package dispatch
