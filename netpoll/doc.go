// Package netpoll is orchestratord's WebSocket engine: it accepts TCP
// connections, reads HTTP request heads on readiness, asks a Gatekeeper
// whether a handshake gets in (writing the refusal or the 101 itself), serves
// plain requests (/healthz, /readyz, the demo page) with an http.Handler on
// the same port, and decodes and encodes RFC 6455 frames without a goroutine
// per connection.
//
// # Shape
//
// Listeners that expose their socket are accepted from with accept4 directly
// (one goroutine per Serve, waiting in Go's netpoller on a dup of the
// listening socket), so a connection never gets a net.Conn: it costs one fd
// and a Conn. Each socket is registered once, by
// its raw fd, with the epoll instance of one of the engine's pollers (one
// per P, Config.Pollers; a connection belongs to pollers[fd % n] for its
// life), edge-triggered for reads; EPOLLOUT is added (one EPOLL_CTL_MOD)
// only when a write first leaves bytes queued, since a socket registered
// writable reports EPOLLOUT at once, an event for nothing per connection
// (EPOLLET then makes EPOLLOUT fire only when a full send buffer gets room).
//
// A poller never blocks a thread: its epoll fd is non-blocking and parked in
// Go's own netpoller (os.NewFile, then syscall.RawConn.Read), so while
// nothing happens the poller goroutine is parked like any goroutine waiting
// on a socket; when the runtime reports the epoll fd readable, the goroutine
// drains it with epoll_wait(..., 0) until it is empty, and parks again at
// once (poller.go). Every ready connection is processed inline, on the
// poller goroutine: read into the poller's scratch buffer, frames decoded,
// Handler.OnMessage called, replies coalesced and flushed. Nothing is handed
// to another goroutine on the message path, and its system calls (read,
// write and writev, epoll_wait with a zero timeout, accept4), which never
// wait, are raw: no entersyscall/exitsyscall, so the runtime never moves the
// P to another thread (rawsys.go).
//
// A small fixed pool (AdmitWorkers) runs what may wait: Gatekeeper.Admit and
// the plain handler. The request head is read right after accept, on the
// accept loop (it is usually there already; a socket joins its poller's
// epoll after that read), and on readiness by the poller when it was not
// complete; an engine without a Gatekeeper completes upgrades there too. One
// hashed timing wheel drives handshake deadlines, heartbeats, close waits
// and CloseAt; it and other goroutines (Send's close paths, the admit pool
// handing a connection back) reach a poller through its inbox and eventfd.
// The number of goroutines is Pollers + AdmitWorkers + 1 (+1 per Serve),
// whatever the connection count.
//
// # Memory
//
// Buffers exist only while bytes are in flight: the request head while it
// arrives, the frame reader while a frame or message is partly read, the
// outbound queue while the socket does not take everything. An idle IPv4
// connection holds its Conn (192 bytes: what only some connections need,
// an IPv6 peer, a proxied client, a scheduled close, the close's cause,
// hangs off nil pointers) and one fd-table slot (8 bytes; the table grows
// by doubling), no buffer, no goroutine, no epoll callback
// (netpoll/internal/idlebench and bench/run.sh measure it).
//
// # Ownership
//
// A connection is processed by one goroutine at a time (Conn.sched): its
// poller, or the admit goroutine it was handed to. Handler methods run there
// and must not block (see Handler for which runs where); OnMessage's payload
// is valid only until it returns. Send, Close and CloseAt may be called from
// any goroutine and never block.
//
// # Client address
//
// Conn.Remote is the TCP peer; Conn.Client (and Request.Client) is the
// client: the peer, or, when the peer is in Config.TrustedProxies, the
// address it reported in a PROXY protocol v1/v2 header (ProxyProtocol,
// proxyproto.go, parsed on readiness before the request head within
// HandshakeTimeout) or in X-Forwarded-For / X-Real-IP (clientaddr.go).
//
// # Refusals
//
// Every HTTP refusal the engine writes, its own (400, 404, 413, 426, 431,
// 500) and the Gatekeeper's (Decision.Refusal), is a row of the one table
// in netpoll/refusal, a leaf package that daemon/auth uses too.
//
// netpoll knows sockets, handshakes, frames, heartbeats, outbound queues and
// close codes. It must not import anything under daemon/ (a test checks).
package netpoll
