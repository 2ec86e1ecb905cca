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
// (one goroutine per Serve, waiting in poll(2)), so a connection never gets a
// net.Conn: it costs one fd and a Conn. Each socket is registered once, by
// its raw fd, with one easygo epoll instance, edge-triggered for reads and
// writes (EPOLLET makes EPOLLOUT fire only when a full send buffer gets room,
// so no Epoll.Mod is ever needed). The epoll goroutine only records what
// happened and queues the connection; a fixed pool of workers reads what is
// there into a per-worker scratch buffer and feeds the incremental frame
// reader, which calls the Handler. A small fixed pool runs Gatekeeper.Admit
// and the plain handler. One hashed timing wheel drives handshake deadlines,
// heartbeats, close waits and CloseAt. The number of goroutines is
// Workers + AdmitWorkers + 2 (+1 per Serve), whatever the connection count.
//
// # Memory
//
// Buffers exist only while bytes are in flight: the request head while it
// arrives, the frame reader while a frame or message is partly read, the
// outbound queue while the socket does not take everything. An idle
// connection holds its Conn (256 bytes), its epoll callback and map entry and
// a table slot: about 320 bytes of Go heap and 360-490 bytes of RSS
// (netpoll/internal/idlebench measures it).
//
// # Ownership
//
// A connection is processed by one goroutine at a time (Conn.sched): the
// worker that dequeued it, or the admit goroutine it was handed to. Handler
// methods run there and must not block; OnMessage's payload is valid only
// until it returns. Send, Close and CloseAt may be called from any goroutine
// and never block.
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
