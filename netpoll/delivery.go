package netpoll

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// Delivery bookkeeping: which tagged frames the peer's TCP acknowledged.
//
// A frame sent with SendTagged records where it ends in the connection's
// output byte stream (Conn.bytesOut counts every byte written, the
// handshake response included, and the queue holds the rest). When the
// connection closes, before its fd is closed, the kernel says how much of
// what was written it still holds (SIOCOUTQ: written but not yet
// acknowledged by the peer) and how much the peer acknowledged (TCP_INFO's
// tcpi_bytes_acked, which survives a reset that purges the send queue);
// the smaller of the two acknowledged offsets decides: a frame counts as
// acknowledged only when it was written completely and every byte of it
// acknowledged. A frame still in the kernel's send queue, or in the user
// space queue, is not.
//
// The hooks in conn.go and queue.go are small on purpose (the poller is
// reworked elsewhere): writeFrameLocked is unchanged; SendTagged records
// the end offset before it (the frame's length is known) and takes it
// back if the write fails; flushLocked's callers run takeDrainedLocked
// and call its function after unlocking; finalize calls closeDelivery
// before the fd is closed.

// tagMark is one tagged frame: where it ends in the output stream.
type tagMark struct {
	end int64
	tag uint64
}

// delivery is a connection's tag bookkeeping, allocated by its first
// SendTagged or NotifyDrained (an idle connection has none). Guarded by
// Conn.mu.
type delivery struct {
	marks    []tagMark // tagged frames not known to be acknowledged, oldest first
	maxAcked uint64    // the largest tag of a frame known to be acknowledged
	acked    uint64    // every tagged frame up to this tag is acknowledged
	final    bool      // acked is final (the connection closed)
	below    int       // NotifyDrained threshold
	drained  func()    // NotifyDrained callback, nil if none
	lastPrun int       // len(marks) at the last prune
}

// pruneEvery is how many tagged frames may pile up before the kernel is
// asked what the peer acknowledged (one ioctl per pruneEvery frames).
const pruneEvery = 64

// SendTagged is Send with a tag (0 means untagged; tags normally ascend,
// and a lower tag sent after a higher one holds Acked below it): once the connection closes, Acked tells whether the peer's
// TCP acknowledged the frame.
func (c *Conn) SendTagged(msg []byte, tag uint64) error {
	c.mu.Lock()
	if c.state != stOpen {
		c.mu.Unlock()
		return ErrClosed
	}
	var d *delivery
	if tag != 0 {
		// The mark goes in before the write: its stores (the delivery's
		// and the marks' lines, cold by now on a busy node) then complete
		// during the write's system call instead of holding up the
		// unlock's atomic after it.
		d = c.deliveryLocked()
		end := int64(c.bytesOut.Load()) + int64(frameHeaderLen(len(msg))+len(msg))
		if c.wq != nil {
			end += int64(c.wq.size)
		}
		d.marks = append(d.marks, tagMark{end: end, tag: tag})
	}
	err := c.writeFrameLocked(opText, msg, true)
	if d != nil {
		if err != nil {
			d.marks = d.marks[:len(d.marks)-1]
		} else if len(d.marks) >= d.lastPrun+pruneEvery {
			c.pruneLocked(d)
		}
	}
	if errors.Is(err, ErrSlowConsumer) {
		c.beginCloseLocked(CloseSlowConsumer, "slow consumer", ErrSlowConsumer)
	}
	c.mu.Unlock()
	if err == nil {
		c.msgsOut.Add(1)
	}
	return err
}

func (c *Conn) deliveryLocked() *delivery {
	if c.dv == nil {
		c.dv = &delivery{}
	}
	return c.dv
}

// ackedOffset returns how many bytes of the output stream the peer's TCP
// acknowledged, as far as the kernel can tell; ok false if it cannot.
func (c *Conn) ackedOffset() (int64, bool) {
	off, _, ok := c.ackState()
	return off, ok
}

// ackState is ackedOffset plus the segments sent and not yet acknowledged
// (tcpi_unacked; -1 when TCP_INFO failed), from one TCP_INFO read.
func (c *Conn) ackState() (off int64, inFlight int64, ok bool) {
	fd := int(c.fd)
	outq, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return 0, -1, false
	}
	off, inFlight = int64(c.bytesOut.Load())-int64(outq), -1
	if ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
		// After a reset the kernel purged its send queue (SIOCOUTQ 0):
		// what the peer acknowledged is then only tcpi_bytes_acked.
		off = min(off, int64(ti.Bytes_acked))
		inFlight = int64(ti.Unacked)
	}
	return off, inFlight, true
}

// pruneLocked drops the marks the peer acknowledged already. c.mu held.
//
// It asks TCP_INFO alone (one system call every pruneEvery tagged
// frames, not two): on an open connection tcpi_bytes_acked is exactly
// what ackState's SIOCOUTQ gives (bytes written less those the kernel
// still holds unacknowledged), and after a reset it is the one that stays
// right; the close (closeDeliveryLocked, awaitAcksLocked) still asks both.
// Never more than the peer acknowledged, so never a frame counted
// acknowledged too early; a failed read prunes nothing.
func (c *Conn) pruneLocked(d *delivery) {
	if off, ok := c.bytesAcked(); ok {
		d.ackUpTo(off)
	}
	d.lastPrun = len(d.marks)
}

// bytesAcked is the output stream's offset the peer's TCP acknowledged,
// from TCP_INFO alone (tcpi_bytes_acked, at most what was written); ok
// false if it cannot be read. c.mu held.
func (c *Conn) bytesAcked() (int64, bool) {
	ti, err := unix.GetsockoptTCPInfo(int(c.fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, false
	}
	return min(int64(ti.Bytes_acked), int64(c.bytesOut.Load())), true
}

// ackUpTo records the frames ending at or before off as acknowledged.
// Tags may reach a connection out of order (terminals relayed from several
// replicas): acked is the largest acknowledged tag below every tag still
// unacknowledged, so a lower tag sent after a higher one holds it back.
func (d *delivery) ackUpTo(off int64) {
	k := 0
	for k < len(d.marks) && d.marks[k].end <= off {
		d.maxAcked = max(d.maxAcked, d.marks[k].tag)
		k++
	}
	if k > 0 {
		n := copy(d.marks, d.marks[k:])
		d.marks = d.marks[:n]
	}
	d.acked = d.maxAcked
	for _, m := range d.marks {
		if m.tag <= d.acked {
			d.acked = m.tag - 1
		}
	}
}

// closeDelivery settles Acked before the fd is closed. It reports whether
// a tagged frame written to the kernel is still unacknowledged: the close
// must then reset the connection (SO_LINGER 0), so that the kernel
// discards its send queue instead of delivering it after the close. A
// frame counted unacknowledged is then never delivered (the peer still
// reads what its TCP acknowledged, then sees the reset), and a v1 resume
// that replays it is not a duplicate. c.mu held.
func (c *Conn) closeDeliveryLocked() (reset bool) {
	d := c.dv
	if d == nil || d.final {
		return false
	}
	if len(d.marks) > 0 {
		if off, ok := c.ackedOffset(); ok {
			d.ackUpTo(off)
		}
		reset = len(d.marks) > 0 && d.marks[0].end <= int64(c.bytesOut.Load())
		if !reset {
			d.marks = nil
		}
	}
	d.final = true
	return reset
}

// settleResetLocked asks the kernel once more, right before the fd of a
// connection to be reset is closed: until the reset, the kernel goes on
// sending its queue as the peer reads, and the peer acknowledges it, so
// what was measured at the start of the close (before the close frame's
// callbacks, the poller's removal, a preemption) can be behind what the
// peer has: frames it then reads were counted unacknowledged and come
// again in a v1 resume. Measured again here, only the few microseconds
// between this ioctl and the close can still move, not the whole close
// sequence (chaos TestSlowReaders with -race and CHAOS_RACE=1 on a loaded
// machine: 13 duplicates in 1 run of 6 without it, none in 14 with it).
// c.mu held.
func (c *Conn) settleResetLocked() {
	d := c.dv
	if d == nil || len(d.marks) == 0 {
		return
	}
	if off, ok := c.ackedOffset(); ok {
		d.ackUpTo(off)
	}
	d.marks = nil
}

// Waiting for acknowledgements before a reset. A peer's TCP may hold
// frames it received but has not acknowledged yet (a delayed ACK, up to
// 200 ms on Linux), and frames may be on their way to it: counted
// unacknowledged at the reset, the peer still reads them, and a v1 resume
// replays them (a duplicate). So a server-initiated close (stClosing:
// 4008, 4009, 1001, a close timeout) of a live peer that finds tagged
// frames written to the kernel but not acknowledged, with segments in
// flight (tcpi_unacked), first writes nothing more and waits
// ackSettleWait (at least one wheel tick) for the acknowledgements, up to
// maxSettleRounds times while segments stay in flight (a peer that keeps
// reading gets more of the kernel's queue meanwhile). With nothing in
// flight, everything the kernel sent is acknowledged and what it did not
// send the reset discards: the count is exact. A peer still reading
// after the last round can get a frame counted unacknowledged: the one
// case left where a v1 resume repeats a terminal (a client passing
// ?last= never sees it).
const (
	ackSettleWait   = 100 * time.Millisecond
	maxSettleRounds = 3
)

// awaitAcksLocked reports whether the close must wait for the peer's
// acknowledgements first, counting the round. Only the owner calls it
// (finalize). c.mu held.
func (c *Conn) awaitAcksLocked() bool {
	d := c.dv
	rounds := int(c.mflags&(mfSettle1|mfSettle2)) / int(mfSettle1)
	if d == nil || d.final || len(d.marks) == 0 || c.state != stClosing ||
		c.mflags&mfBroken != 0 || c.oflags&ofEOF != 0 || rounds >= maxSettleRounds {
		return false
	}
	off, inFlight, ok := c.ackState()
	if !ok {
		return false
	}
	d.ackUpTo(off)
	if len(d.marks) == 0 || d.marks[0].end > int64(c.bytesOut.Load()) {
		return false // every frame written is acknowledged; the rest never left
	}
	if inFlight <= 0 {
		return false // nothing in flight (or unknown): the count is exact as it is
	}
	if rounds == 0 {
		// Hold the kernel's queue: at a pacing rate of 1 byte/s the next
		// segment waits for hours, so what the peer can get stops growing
		// and its acknowledgements catch up. (0 would mean no pacing.)
		_ = unix.SetsockoptUint64(int(c.fd), unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE, 1)
	}
	c.mflags = c.mflags&^(mfSettle1|mfSettle2) | uint8(rounds+1)*mfSettle1
	return true
}

// Acked returns, in and after OnClose, the largest tag T such that every
// tagged frame up to T was written completely and acknowledged by the
// peer's TCP; 0 if none. Before the close it asks the kernel (one ioctl)
// and returns what is acknowledged so far (a takeover uses it: 4009).
func (c *Conn) Acked() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dv == nil {
		return 0
	}
	if !c.dv.final && c.state != stClosed && len(c.dv.marks) > 0 {
		c.pruneLocked(c.dv)
	}
	return c.dv.acked
}

// Queued returns the bytes queued in user space, not yet written to the
// socket.
func (c *Conn) Queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wq == nil {
		return 0
	}
	return c.wq.size
}

// NotifyDrained calls fn once Queued() <= below: at once, on the calling
// goroutine, if it already is; else on the connection's goroutine after
// the flush that brings it there, or when the connection closes. fn must
// not block. A later call replaces an earlier one not yet called.
func (c *Conn) NotifyDrained(below int, fn func()) {
	c.mu.Lock()
	if c.wq == nil || c.wq.size <= below || c.state == stClosed {
		c.mu.Unlock()
		fn()
		return
	}
	d := c.deliveryLocked()
	d.below, d.drained = below, fn
	c.mu.Unlock()
}

// takeDrainedLocked returns the NotifyDrained callback once it is due (the
// queue is at or under its threshold, or the connection closed), for the
// caller to call after unlocking c.mu; nil otherwise.
func (c *Conn) takeDrainedLocked() func() {
	d := c.dv
	if d == nil || d.drained == nil {
		return nil
	}
	if c.wq != nil && c.wq.size > d.below && c.state != stClosed && c.mflags&mfBroken == 0 {
		return nil
	}
	fn := d.drained
	d.drained = nil
	return fn
}

// frameHeaderLen is the length of appendFrameHeader's header for a
// payload of n bytes.
func frameHeaderLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xFFFF:
		return 4
	}
	return 10
}
