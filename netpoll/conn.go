package netpoll

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// connState is where a connection is in its life.
type connState uint8

const (
	stHandshake connState = iota // reading the request head
	stAdmitting                  // head complete, on an admit goroutine
	stOpen                       // upgraded; frames flow
	stClosing                    // close frame queued or sent; waiting for the peer
	stHTTPDone                   // an HTTP response queued; close once sent
	stClosed                     // fd closed
)

// Pending work bits (Conn.pending), set by whoever wakes the connection.
const (
	evRead   uint32 = 1 << iota // readable (or EOF/error to find by reading)
	evHup                       // peer hung up or error: read until EOF
	evWrite                     // writable: flush the queue
	evTimer                     // a wheel deadline came due
	evCheck                     // re-evaluate state (close requested, write failed)
	evAbort                     // the engine is closing
	evFin                       // the peer's FIN is in (EPOLLRDHUP without EPOLLHUP/EPOLLERR)
	evErrHup                    // EPOLLHUP or EPOLLERR: read until the error
)

// Scheduling states (Conn.sched): a connection is processed by at most one
// goroutine at a time, and queued at most once.
const (
	schedIdle    uint32 = iota // not queued, not running
	schedQueued                // in a run queue
	schedRunning               // its poller or an admit goroutine owns it
	schedDirty                 // running, and woken again meanwhile
)

// Conn is one client connection. Its methods may be called from any
// goroutine. Per-connection memory is kept small on purpose: an idle
// connection holds this struct (192 bytes, TestConnSize) and its fd-table
// slot, and no buffer and no goroutine. What only some connections need
// lives behind pointers that are nil otherwise: an IPv6 peer or a client
// reported by a trusted proxy (addrs), a scheduled close (closeAt), the
// close's code and cause (cl), a partly read message (rs), a request head
// (hs), unsent bytes (wq), tagged frames (dv). Flags are bits of one byte
// per owner (the processing goroutine, c.mu, the wheel's lock), so that no
// two owners ever write the same byte.
type Conn struct {
	e     *Engine
	id    uint64 // accept time in unix ms << idSeqBits, made unique (newID)
	value any

	// Set before the connection is shared (addConn, the handshake).
	addrs *connAddrs // nil: the peer is the IPv4 r4:rport, no proxied client

	// Owned by the goroutine that processes the connection (sched running).
	rs *frameReader // borrowed while a frame or message is partly read
	hs *handshake   // exists while the request head is read and admitted

	// Guarded by mu.
	wq *outQueue  // nil unless bytes are pending
	dv *delivery  // tagged frames and NotifyDrained (delivery.go); nil until used
	cl *closeInfo // the close's code and cause; nil until known

	// Guarded by e.wheel.mu.
	wnext, wprev *Conn
	closeAt      *closeAtArgs // code and reason of a scheduled close (CloseAt)

	msgsIn, msgsOut, bytesIn, bytesOut atomic.Uint64

	sched   atomic.Uint32
	pending atomic.Uint32

	lastRead uint32 // wheel tick of the last byte read (owner)
	lastPing uint32 // wheel tick of the last ping sent (owner)

	mu sync.Mutex // guards the fields marked so
	fd int32      // guarded by mu

	// Guarded by e.wheel.mu.
	wat      uint32
	tState   uint32
	tCloseAt uint32
	tBeat    uint32

	r4    [4]byte // IPv4 peer (when rport != 0)
	rport uint16

	state  connState // guarded by mu
	mflags uint8     // mf* bits, guarded by mu
	cork   uint8     // corkOn, corkWrote, corkQueued (guarded by mu): see writeLocked
	oflags uint8     // of* bits, owner only
	tKinds uint8     // armed timers, guarded by e.wheel.mu
	wflags uint8     // wf* bits, guarded by e.wheel.mu
}

// Flag bits of Conn.oflags (owner), Conn.mflags (c.mu) and Conn.wflags
// (wheel lock).
const (
	ofPeerClosed uint8 = 1 << iota // the peer's close frame was read
	ofRFail                        // a violation was read: discard input until EOF
	ofEOF                          // read returned EOF or an error
)

const (
	mfOpened  uint8 = 1 << iota // OnOpen was called: OnClose is owed
	mfBroken                    // a write failed
	mfShutWr                    // shutdown(SHUT_WR) done
	mfSettle1                   // two bits: rounds the close waited for acknowledgements (delivery.go)
	mfSettle2
	mfPolled // registered with its poller's epoll instance
	mfOut    // EPOLLOUT wanted (bytes waited for room once): registered, or to register, with it
)

const (
	wfIn   uint8 = 1 << iota // linked in a wheel slot
	wfDead                   // removed for good
)

// connAddrs holds the addresses that do not fit Conn's inline IPv4 peer.
type connAddrs struct {
	remote netip.AddrPort // the peer, when it is not IPv4
	client netip.AddrPort // reported by a trusted proxy (clientaddr.go); invalid: none
}

// closeInfo is how a connection closes: the code sent or to report, and the
// cause (nil for a clean close).
type closeInfo struct {
	code CloseCode
	err  error
}

// closeAtArgs are the close code and reason of a scheduled close.
type closeAtArgs struct {
	code   CloseCode
	reason string
}

// idSeqBits is how many low bits of a connection id count connections
// accepted within the same millisecond.
const idSeqBits = 20

// newID returns a fresh connection id for a connection accepted at now: the
// millisecond in the high bits (Conn.Since reads it back), strictly
// increasing so that ids are unique.
func (e *Engine) newID(now time.Time) uint64 {
	ms := uint64(now.UnixMilli()) << idSeqBits
	for {
		old := e.lastID.Load()
		id := max(old+1, ms)
		if e.lastID.CompareAndSwap(old, id) {
			return id
		}
	}
}

// setRemote records the peer's address; called before the connection is
// shared.
func (c *Conn) setRemote(ap netip.AddrPort) {
	switch {
	case ap.Addr().Is4() && ap.Port() != 0:
		c.r4, c.rport = ap.Addr().As4(), ap.Port()
	case ap.IsValid():
		c.addrs = &connAddrs{remote: ap}
	}
}

// setClient records the client address a trusted proxy reported; called by
// the owner during the handshake, before the connection is shared.
func (c *Conn) setClient(ap netip.AddrPort) {
	if c.addrs == nil {
		c.addrs = &connAddrs{}
	}
	c.addrs.client = ap
}

// closeCodeErrLocked returns the close's code and cause. c.mu must be held.
func (c *Conn) closeCodeErrLocked() (CloseCode, error) {
	if c.cl == nil {
		return 0, nil
	}
	return c.cl.code, c.cl.err
}

// setCloseLocked records the close's code and cause. c.mu must be held.
func (c *Conn) setCloseLocked(code CloseCode, err error) {
	if c.cl == nil {
		c.cl = &closeInfo{}
	}
	c.cl.code, c.cl.err = code, err
}

// setErrLocked records err as the close's cause unless one is known. c.mu
// must be held.
func (c *Conn) setErrLocked(err error) {
	if c.cl == nil {
		c.cl = &closeInfo{}
	}
	if c.cl.err == nil {
		c.cl.err = err
	}
}

// ConnStats are a connection's counters since it was accepted.
type ConnStats struct {
	MsgsIn, MsgsOut, BytesIn, BytesOut uint64
}

// ID returns the connection's engine-unique id.
func (c *Conn) ID() uint64 { return c.id }

// Remote returns the peer's address (invalid for non-IP listeners).
func (c *Conn) Remote() netip.AddrPort {
	if c.rport != 0 {
		return netip.AddrPortFrom(netip.AddrFrom4(c.r4), c.rport)
	}
	if c.addrs != nil {
		return c.addrs.remote
	}
	return netip.AddrPort{}
}

// Value returns Decision.Value given by the Gatekeeper.
func (c *Conn) Value() any { return c.value }

// Since returns when the connection was accepted.
func (c *Conn) Since() time.Time { return time.UnixMilli(int64(c.id >> idSeqBits)) }

// Stats returns the connection's counters.
func (c *Conn) Stats() ConnStats {
	return ConnStats{
		MsgsIn: c.msgsIn.Load(), MsgsOut: c.msgsOut.Load(),
		BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load(),
	}
}

// Send queues msg as one text frame; msg is copied. It never blocks: the
// frame is written at once when nothing is queued, and what the socket does
// not take waits for EPOLLOUT. It returns ErrClosed once the connection is
// closing, and ErrSlowConsumer when the queue would pass
// OutboundQueueBytes, in which case the connection is closed with 4008.
func (c *Conn) Send(msg []byte) error {
	c.mu.Lock()
	if c.state != stOpen {
		c.mu.Unlock()
		return ErrClosed
	}
	err := c.writeFrameLocked(opText, msg, true)
	if errors.Is(err, ErrSlowConsumer) {
		c.beginCloseLocked(CloseSlowConsumer, "slow consumer", ErrSlowConsumer)
	}
	c.mu.Unlock()
	if err == nil {
		c.msgsOut.Add(1)
	}
	return err
}

// Close sends a close frame with code and reason after the frames already
// queued, waits up to Config.CloseWait for the peer's close frame, then closes
// the socket. It is idempotent and does nothing once closing has begun.
// reason is cut to 123 bytes.
func (c *Conn) Close(code CloseCode, reason string) {
	c.mu.Lock()
	if c.state == stOpen {
		c.beginCloseLocked(code, reason, nil)
	}
	c.mu.Unlock()
}

// CloseAt schedules Close(code, reason) at t on the timing wheel (within one
// tick). A later call replaces an earlier one. A time beyond the wheel's
// horizon (2^30 ticks: 62 days at the finest 5ms tick) is not scheduled.
func (c *Conn) CloseAt(t time.Time, code CloseCode, reason string) {
	c.mu.Lock()
	open := c.state == stOpen
	c.mu.Unlock()
	w := c.e.wheel
	if !open || t.Sub(time.Now()) > time.Duration(1<<30)*w.tick {
		return
	}
	w.setCloseAt(c, w.at(t), code, reason)
}

// beginCloseLocked queues the close frame and arms the close wait.
// c.mu must be held and c.state be stOpen.
func (c *Conn) beginCloseLocked(code CloseCode, reason string, err error) {
	c.state = stClosing
	c.setCloseLocked(code, err)
	var pb [maxControlPayload]byte
	p := pb[:0]
	if code != CloseNoStatus {
		p = append(p, byte(code>>8), byte(code))
		p = append(p, truncUTF8(reason, maxControlPayload-2)...)
	}
	_ = c.writeFrameLocked(opClose, p, false)
	w := c.e.wheel
	w.clear(c, tmBeat|tmCloseAt)
	w.set(c, tmState, w.after(c.e.cfg.CloseWait))
	c.e.wake(c, evCheck)
}

// truncUTF8 returns s cut to at most n bytes on a rune boundary.
func truncUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// process does the connection's pending work. It runs on the connection's
// poller, which owns it; it returns true when it handed ownership to an
// admit goroutine.
func (c *Conn) process(w *poller) bool {
	bits := c.pending.Swap(0)
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	if st == stClosed {
		return false
	}
	if bits&evAbort != 0 {
		switch st {
		case stOpen:
			c.Close(CloseGoingAway, "server shutting down")
		case stHandshake:
			c.finalize(CloseAbnormal, ErrClosed)
			return false
		}
	}
	if bits&evTimer != 0 {
		if c.onTimer() {
			return false
		}
	}
	if bits&evWrite != 0 {
		c.mu.Lock()
		c.flushLocked()
		drained := c.takeDrainedLocked() // delivery hook: NotifyDrained
		c.mu.Unlock()
		if drained != nil {
			drained()
		}
	}
	if bits&(evRead|evHup) != 0 {
		c.mu.Lock()
		st = c.state
		c.mu.Unlock()
		switch st {
		case stHandshake:
			if c.readHead(w.buf, bits&evHup != 0) {
				c.e.admitQ.push(c)
				return true
			}
		case stOpen, stClosing:
			c.readFrames(w, bits&evHup != 0, bits&(evFin|evErrHup) == evFin)
		case stHTTPDone:
			c.discard(w)
		}
	}
	c.settle()
	return false
}

// onTimer handles due wheel deadlines. It returns true if the connection was
// finalized.
func (c *Conn) onTimer() bool {
	e := c.e
	kinds, code, reason := e.wheel.take(c)
	if kinds == 0 {
		return false
	}
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	if kinds&tmState != 0 {
		switch st {
		case stHandshake, stHTTPDone:
			c.finalize(CloseAbnormal, ErrClosed)
			return true
		case stClosing:
			c.mu.Lock()
			code, err := c.closeCodeErrLocked()
			c.mu.Unlock()
			if err == nil {
				err = ErrCloseTimeout
			}
			c.finalize(code, err)
			return true
		}
	}
	if kinds&tmCloseAt != 0 && st == stOpen {
		c.Close(code, reason)
		return false
	}
	if kinds&tmBeat != 0 && st == stOpen {
		now := e.wheel.now.Load()
		if !tickBefore(now, c.lastRead+2*e.beatTicks) {
			c.finalize(CloseAbnormal, ErrHeartbeatTimeout)
			return true
		}
		if !tickBefore(now, c.lastPing+e.beatTicks) {
			c.lastPing = now
			c.mu.Lock()
			if c.state == stOpen {
				if err := c.writeFrameLocked(opPing, nil, true); errors.Is(err, ErrSlowConsumer) {
					c.beginCloseLocked(CloseSlowConsumer, "slow consumer", ErrSlowConsumer)
				}
			}
			c.mu.Unlock()
		}
		next := c.lastPing + e.beatTicks
		if t := c.lastRead + 2*e.beatTicks; tickBefore(t, next) {
			next = t
		}
		c.mu.Lock()
		if c.state == stOpen {
			e.wheel.set(c, tmBeat, next)
		}
		c.mu.Unlock()
	}
	return false
}

// maxReadPerPass bounds the bytes one pass reads from a connection before it
// goes to the back of its poller's queue, so that one fast peer cannot hold
// the poller.
const maxReadPerPass = 256 << 10

// readFrames reads what the socket has and decodes it. With edge-triggered
// readiness a short read means the socket is drained; after a hang-up it
// reads on until EOF. fin says the peer's FIN had arrived before the pass
// began (and no error): the kernel reports it only once every byte before
// it is queued, so a short read took them all and the end is reached
// without the read that would return 0 (one system call less for every
// connection its peer closes).
func (c *Conn) readFrames(w *poller, hup, fin bool) {
	e := c.e
	if hs := c.hs; hs != nil {
		c.hs = nil
		if len(hs.rest) > 0 {
			c.decode(hs.rest)
		}
		hs.release(&e.bufs)
	}
	c.mu.Lock()
	c.cork = corkOn
	c.mu.Unlock()
	defer c.uncork()
	for budget := maxReadPerPass; c.oflags&ofEOF == 0; {
		if budget <= 0 {
			// The next pass goes on; a hang-up already reported raises
			// no new edge, so it is carried over.
			more := evRead
			if hup {
				more |= evHup
			}
			if fin {
				more |= evFin
			}
			c.pending.Or(more)
			break
		}
		n, err := readRaw(int(c.fd), w.buf)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		if err != nil || n <= 0 {
			c.oflags |= ofEOF
			if err != nil {
				c.setErr(err)
			}
			break
		}
		c.bytesIn.Add(uint64(n))
		c.lastRead = e.wheel.now.Load()
		budget -= n
		c.decode(w.buf[:n])
		if n < len(w.buf) {
			if fin {
				c.oflags |= ofEOF
				break
			}
			if !hup {
				break
			}
		}
	}
	if c.rs != nil && (c.rs.done || c.rs.idle()) {
		e.putReader(c.rs)
		c.rs = nil
	}
}

// uncork ends a read pass: the frames its handler calls queued after the
// first are written now, in one writev.
func (c *Conn) uncork() {
	c.mu.Lock()
	queued := c.cork&corkQueued != 0
	c.cork = 0
	var drained func()
	if queued {
		c.flushLocked()
		drained = c.takeDrainedLocked() // delivery hook: NotifyDrained
	}
	c.mu.Unlock()
	if drained != nil {
		drained()
	}
}

// decode feeds p to the frame reader unless input is being discarded.
func (c *Conn) decode(p []byte) {
	if c.oflags&ofRFail != 0 || c.oflags&ofPeerClosed != 0 {
		return
	}
	if c.rs == nil {
		c.rs = c.e.getReader()
	}
	err := c.rs.feed(p, c)
	if err == nil {
		return
	}
	// Only here: errors.As takes &pe as an interface, which moves pe to
	// the heap, one allocation per call (per message on the echo path).
	var pe *protocolError
	if errors.As(err, &pe) {
		c.oflags |= ofRFail
		c.mu.Lock()
		if c.state == stOpen {
			c.beginCloseLocked(pe.code, "", pe)
		}
		c.mu.Unlock()
	}
}

// setErr records the read error as the close cause unless one is known.
func (c *Conn) setErr(err error) {
	c.mu.Lock()
	c.setErrLocked(err)
	c.mu.Unlock()
}

// discard reads and drops input until EAGAIN or EOF (after an HTTP response).
func (c *Conn) discard(w *poller) {
	for range 64 {
		n, err := readRaw(int(c.fd), w.buf)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return
		}
		if err != nil || n <= 0 {
			c.oflags |= ofEOF
			return
		}
	}
	c.pending.Or(evRead)
}

// onText is a complete text message from the frame reader.
func (c *Conn) onText(p []byte) {
	c.mu.Lock()
	open := c.state == stOpen
	c.mu.Unlock()
	if open {
		c.msgsIn.Add(1)
		c.e.h.OnMessage(c, p)
	}
}

// onPing answers a ping with a pong carrying the same payload, in order
// with everything else written to the connection.
func (c *Conn) onPing(p []byte) {
	c.mu.Lock()
	if c.state == stOpen {
		if err := c.writeFrameLocked(opPong, p, true); errors.Is(err, ErrSlowConsumer) {
			c.beginCloseLocked(CloseSlowConsumer, "slow consumer", ErrSlowConsumer)
		}
	}
	c.mu.Unlock()
}

// onPong ignores pongs; any byte read already counts as liveness.
func (c *Conn) onPong([]byte) {}

// onClose answers the peer's close frame by echoing its code, unless the
// close handshake was started by this side.
func (c *Conn) onClose(code CloseCode, _ []byte) {
	c.oflags |= ofPeerClosed
	c.mu.Lock()
	if c.state == stOpen {
		c.beginCloseLocked(code, "", nil)
	}
	c.mu.Unlock()
}

// settle ends a pass: it finalizes a connection whose close is complete, or
// half-closes one that only waits for its peer to go.
func (c *Conn) settle() {
	c.mu.Lock()
	st, flushed, broken := c.state, c.wq == nil, c.mflags&mfBroken != 0
	code, err := c.closeCodeErrLocked()
	c.mu.Unlock()
	switch st {
	case stOpen, stHandshake:
		if broken || c.oflags&ofEOF != 0 {
			if err == nil {
				err = ErrPeerGone
			}
			c.finalize(CloseAbnormal, err)
		}
	case stClosing:
		switch {
		case broken:
			c.finalize(code, err)
		case flushed && (c.oflags&ofPeerClosed != 0 || c.oflags&ofEOF != 0):
			c.finalize(code, err)
		case flushed && c.oflags&ofRFail != 0:
			c.shutdownWrite()
		}
	case stHTTPDone:
		switch {
		case broken || c.oflags&ofEOF != 0:
			c.finalize(CloseAbnormal, nil)
		case flushed:
			c.shutdownWrite()
		}
	}
}

// shutdownWrite sends FIN once, so that the peer sees the end and closes.
func (c *Conn) shutdownWrite() {
	c.mu.Lock()
	if c.mflags&mfShutWr == 0 && c.state != stClosed {
		c.mflags |= mfShutWr
		_ = unix.Shutdown(int(c.fd), unix.SHUT_WR)
	}
	c.mu.Unlock()
}

// finalize closes the socket and releases everything the connection holds;
// OnClose follows for an opened connection. Only the owner calls it.
func (c *Conn) finalize(code CloseCode, err error) {
	e := c.e
	c.mu.Lock()
	if c.state == stClosed {
		c.mu.Unlock()
		return
	}
	if c.awaitAcksLocked() {
		// Tagged frames are on their way or received but not yet
		// acknowledged: wait for the peer's TCP, writing nothing more
		// (delivery.go). The state timer brings the close back here.
		if c.wq != nil {
			c.wq.release(&e.bufs)
			e.putQueue(c.wq)
			c.wq = nil
		}
		e.wheel.set(c, tmState, e.wheel.after(ackSettleWait))
		c.mu.Unlock()
		return
	}
	opened := c.mflags&mfOpened != 0
	fd := int(c.fd)
	// Delivery hook: what the peer acknowledged is read from the kernel
	// before anything else touches the socket (delivery.go).
	reset := c.closeDeliveryLocked()
	// A close that held the kernel's queue for acknowledgements resets:
	// a FIN would wait behind the held queue.
	reset = reset || c.mflags&(mfSettle1|mfSettle2) != 0
	c.state = stClosed
	if c.wq != nil {
		c.wq.release(&e.bufs)
		e.putQueue(c.wq)
		c.wq = nil
	}
	drained := c.takeDrainedLocked()
	// After the peer's end (EOF read) nothing more can arrive and close
	// sends FIN by itself: shutdown would be a system call for nothing (it
	// fails with ENOTCONN when the peer reset).
	shut := c.mflags&mfShutWr == 0 && c.mflags&mfBroken == 0 && !reset && c.oflags&ofEOF == 0
	c.mflags |= mfShutWr
	c.mu.Unlock()
	if drained != nil {
		drained()
	}
	// A close with unread input makes the kernel send RST, which can
	// destroy the close frame still in flight; read what is there first,
	// then FIN.
	if reset {
		// Tagged frames the peer has not acknowledged are still in the
		// kernel's send queue: discard them (delivery.go).
		_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	} else if c.oflags&ofEOF == 0 && drainInput(fd) {
		shut = false // the peer's end was read: as above
	}
	if shut {
		_ = unix.Shutdown(fd, unix.SHUT_WR)
	}
	e.detach(c, fd)
	if c.rs != nil {
		e.putReader(c.rs)
		c.rs = nil
	}
	if c.hs != nil {
		c.hs.release(&e.bufs)
		c.hs = nil
	}
	if opened {
		e.open.Add(-1)
		e.h.OnClose(c, code, err)
	}
	e.connWG.Done()
}

// maxDrainInput bounds what drainInput reads: a peer that keeps sending
// faster than that is reset.
const maxDrainInput = 1 << 20

// drainInput discards what is left in the socket's receive buffer, until
// EAGAIN or EOF (at most maxDrainInput bytes), so that closing it sends FIN
// rather than RST (which could destroy the close frame or response still
// in flight to the peer). It reports whether it read the peer's end (EOF
// or a reset).
func drainInput(fd int) (end bool) {
	var b [8192]byte
	for read := 0; read < maxDrainInput; {
		n, err := readRaw(fd, b[:])
		read += max(n, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return err != unix.EAGAIN
		}
	}
	return false
}
