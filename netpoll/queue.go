package netpoll

import (
	"errors"

	"golang.org/x/sys/unix"
)

// outQueue holds the bytes of a connection that the socket did not take yet.
// It exists only while bytes are pending: a connection whose writes complete
// at once never has one. Chunks are borrowed from the engine's bufPool.
type outQueue struct {
	chunks []*[]byte // chunks[0][off:] is the next byte to write
	off    int
	size   int // pending bytes

}

// minChunk is the smallest chunk a queue borrows.
const minChunk = 4096

// push copies p to the end of the queue.
func (q *outQueue) push(bufs *bufPool, p []byte) {
	q.size += len(p)
	for len(p) > 0 {
		if n := len(q.chunks); n > 0 {
			tail := q.chunks[n-1]
			if room := cap(*tail) - len(*tail); room > 0 {
				k := min(room, len(p))
				*tail = append(*tail, p[:k]...)
				p = p[k:]
				continue
			}
		}
		q.chunks = append(q.chunks, bufs.get(max(len(p), minChunk)))
	}
}

// iovecs fills v with the pending chunks, at most len(v).
func (q *outQueue) iovecs(v [][]byte) [][]byte {
	for i, c := range q.chunks {
		if len(v) == cap(v) {
			break
		}
		if i == 0 {
			v = append(v, (*c)[q.off:])
		} else {
			v = append(v, *c)
		}
	}
	return v
}

// consume drops n written bytes, giving finished chunks back.
func (q *outQueue) consume(bufs *bufPool, n int) {
	q.size -= n
	for n > 0 && len(q.chunks) > 0 {
		c := q.chunks[0]
		rest := len(*c) - q.off
		if n < rest {
			q.off += n
			return
		}
		n -= rest
		bufs.put(c)
		q.chunks[0] = nil
		q.chunks = q.chunks[1:]
		q.off = 0
	}
}

// release gives every chunk back.
func (q *outQueue) release(bufs *bufPool) {
	for i, c := range q.chunks {
		bufs.put(c)
		q.chunks[i] = nil
	}
	q.chunks, q.off, q.size = q.chunks[:0], 0, 0
}

// maxIovecs bounds the chunks written by one writev (at least 4 KiB each).
const maxIovecs = 64

// Write coalescing state of a read pass (Conn.cork).
const (
	corkOn     uint8 = 1 << iota // the owner is in a read pass
	corkWrote                    // a frame was written directly during the pass
	corkQueued                   // the queue holds frames of the pass: flush at its end
)

// maxCorked is the largest frame a read pass queues rather than writes: a
// larger one is written at once, its copy would cost more than the
// syscall it saves.
const maxCorked = 16 << 10

// writev writes bufs to the nonblocking fd with one system call. It returns
// the bytes written; unix.EAGAIN means none could be.
func writev(fd int, bufs [][]byte) (int, error) {
	var iov [maxIovecs]unix.Iovec
	n := 0
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		if n == maxIovecs {
			break
		}
		iov[n].Base = &b[0]
		iov[n].SetLen(len(b))
		n++
	}
	if n == 0 {
		return 0, nil
	}
	for {
		r, err := writevRaw(fd, iov[:n])
		if err == unix.EINTR {
			continue
		}
		return r, err
	}
}

// writePair writes a then b (either may be empty) to the nonblocking fd
// with one system call: write(2) when only one holds bytes, a writev(2) of
// two buffers otherwise (writev builds its iovecs for exactly two, where
// the general writev clears room for maxIovecs). It returns the bytes
// written; unix.EAGAIN means none could be.
func writePair(fd int, a, b []byte) (int, error) {
	if len(a) == 0 {
		a, b = b, nil
	}
	if len(a) == 0 {
		return 0, nil
	}
	for {
		var r int
		var err error
		if len(b) == 0 {
			r, err = writeRaw(fd, a)
		} else {
			iov := [2]unix.Iovec{{Base: &a[0]}, {Base: &b[0]}}
			iov[0].SetLen(len(a))
			iov[1].SetLen(len(b))
			r, err = writevRaw(fd, iov[:])
		}
		if err == unix.EINTR {
			continue
		}
		return r, err
	}
}

// writeFrameLocked writes one unmasked frame, or queues what the socket did
// not take. When bounded, a queue that would pass OutboundQueueBytes gives
// ErrSlowConsumer and nothing is written. c.mu must be held.
func (c *Conn) writeFrameLocked(op byte, payload []byte, bounded bool) error {
	var hb [10]byte
	h := appendFrameHeader(hb[:0], op, len(payload))
	return c.writeLocked(h, payload, bounded)
}

// writeLocked writes a then b (either may be empty), queueing the rest.
//
// Writes are coalesced per read pass: while the owner processes what it
// read (corkOn), the first frame goes out at once with one writev of
// header and payload, without a copy (the common one-reply case), and
// later small frames of the same pass are queued and written together, in
// one writev, when the pass ends (uncork). Outside a pass, a frame is
// written at once when nothing is queued. c.mu must be held.
func (c *Conn) writeLocked(a, b []byte, bounded bool) error {
	if c.mflags&mfBroken != 0 || c.state == stClosed {
		return ErrClosed
	}
	total := len(a) + len(b)
	if c.wq == nil && c.cork&corkOn != 0 && total <= maxCorked {
		if c.cork&corkWrote != 0 {
			c.wq = c.e.newQueue()
			c.cork |= corkQueued
		}
		c.cork |= corkWrote
	}
	if c.wq != nil {
		if bounded && c.wq.size+total > c.e.cfg.OutboundQueueBytes {
			return ErrSlowConsumer
		}
		c.wq.push(&c.e.bufs, a)
		c.wq.push(&c.e.bufs, b)
		return nil
	}
	n, err := writePair(int(c.fd), a, b)
	if n > 0 {
		c.bytesOut.Add(uint64(n))
	}
	if n == total {
		return nil
	}
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		c.breakLocked(err)
		return ErrClosed
	}
	if n < len(a) {
		a = a[n:]
	} else {
		b = b[n-len(a):]
		a = nil
	}
	c.wq = c.e.newQueue()
	c.wq.push(&c.e.bufs, a)
	c.wq.push(&c.e.bufs, b)
	c.wantOutLocked()
	if c.mflags&mfBroken != 0 {
		return ErrClosed // EPOLL_CTL_MOD failed: the queue is gone
	}
	if bounded && len(a)+len(b) > c.e.cfg.OutboundQueueBytes {
		// Written partly: the frame must still go out whole, so it is
		// queued, and the caller learns the bound is passed.
		return ErrSlowConsumer
	}
	return nil
}

// wantOutLocked makes EPOLLOUT report when the socket gets room again, now
// that bytes wait in c.wq: one EPOLL_CTL_MOD the first time in the
// connection's life (the registration keeps EPOLLOUT afterwards), or
// nothing yet when the socket is not registered (register adds it then).
// c.mu must be held.
func (c *Conn) wantOutLocked() {
	if c.mflags&mfOut != 0 {
		return
	}
	c.mflags |= mfOut
	if c.mflags&mfPolled == 0 {
		return
	}
	if err := c.e.pollerOf(c).watchOut(int(c.fd), epollTag(c)); err != nil {
		c.breakLocked(err)
	}
}

// register adds the connection's socket to its poller's epoll instance,
// with EPOLLOUT when a write already waits for room.
func (c *Conn) register() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.e.pollerOf(c).add(int(c.fd), epollTag(c), c.mflags&mfOut != 0); err != nil {
		return err
	}
	c.mflags |= mfPolled
	return nil
}

// flushLocked writes the queued bytes with one writev per call (more only
// when the queue has more chunks than one writev takes and the socket took
// them all). A short write means the send buffer is full: EPOLLOUT,
// edge-triggered, brings the connection back, so it does not try again
// into EAGAIN. c.mu must be held.
func (c *Conn) flushLocked() {
	for c.wq != nil && c.mflags&mfBroken == 0 {
		var vb [maxIovecs][]byte
		v := c.wq.iovecs(vb[:0])
		want := 0
		for _, b := range v {
			want += len(b)
		}
		n, err := writev(int(c.fd), v)
		if n > 0 {
			c.bytesOut.Add(uint64(n))
			c.wq.consume(&c.e.bufs, n)
		}
		if c.wq.size == 0 {
			c.e.putQueue(c.wq)
			c.wq = nil
			c.cork &^= corkQueued
			return
		}
		if err != nil {
			if !errors.Is(err, unix.EAGAIN) {
				c.breakLocked(err)
				return
			}
			c.wantOutLocked()
			return
		}
		if n < want {
			c.wantOutLocked()
			return
		}
	}
}

// breakLocked records that the socket failed; the owner finalizes the
// connection on its next pass. c.mu must be held.
func (c *Conn) breakLocked(err error) {
	if c.mflags&mfBroken != 0 {
		return
	}
	c.mflags |= mfBroken
	c.setErrLocked(err)
	if c.wq != nil {
		c.wq.release(&c.e.bufs)
		c.e.putQueue(c.wq)
		c.wq = nil
	}
	c.e.wake(c, evCheck)
}
