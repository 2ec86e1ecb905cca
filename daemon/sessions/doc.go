// Package sessions keeps the state of client sessions so that they survive
// reconnects and replicas: the Store (memory or Redis) holding a session's
// owner, context, chat history and outbox; the Manager binding live
// connections (Outlets) to sessions, with takeover (4009) and live resume of
// requests still streaming; and, for the Redis store, the bus (Redis pub/sub)
// that carries takeovers and relays a request's output to whichever replica
// holds the session's connection; and node-loss recovery (liveness keys,
// in-flight records, a sweeper) that ends a crashed replica's requests
// with exactly one node_lost, or runs them again (retry_on_node_loss).
//
// It imports config and events of the daemon, and nothing of netpoll,
// gateway or dispatch: those reach it through the Manager's API and the
// Outlet interface it declares. The design is described in docs/sessions.md.
package sessions
