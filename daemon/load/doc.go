// Package load drives WebSocket servers for benchmarks: the orchestratord
// daemon (protocol mode: JSON envelopes, ids, chunks and one terminal per
// request) and bare echo servers (raw mode: the frame comes back as sent).
//
// The client side is event-driven: handshakes run on a bounded pool of
// goroutines (gobwas/ws), then each socket's fd is handed to one of a few
// epoll loops (golang.org/x/sys/unix) that parse server frames, answer pings,
// send requests and check every response. There is no goroutine per
// connection, so one process holds close to its fd limit of connections, and
// Run can fan out to several coordinated processes (shards) that each stay
// under it, with the server sampled once from the parent.
//
// Modes: hold (idle connections; server memory, fds, slab, goroutines and
// idle CPU per connection), echo (closed loop, K workers), rate (open loop at a
// fixed rate, latency measured from the intended send time so that
// coordinated omission is corrected), slow (half-frame peers dribbling one
// byte a second while the other clients echo) and churn (connect/disconnect
// rate).
//
// The package imports auth (to mint test JWTs) and nothing else of daemon/.
package load
