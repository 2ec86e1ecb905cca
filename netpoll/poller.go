package netpoll

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// poller is one epoll instance and the goroutine that serves it. The epoll
// fd is itself pollable, so it is made non-blocking and parked in Go's own
// netpoller (os.NewFile + RawConn.Read): while nothing happens the poller
// goroutine is parked like any goroutine waiting on a socket, and no OS
// thread sits in epoll_wait(-1). When the runtime reports the epoll fd
// readable, the goroutine drains it with epoll_wait(..., 0) until it is
// empty, processing every connection inline: reads, frames, Handler calls,
// flushes. Each connection belongs to one poller for its whole life (by fd).
//
// Other goroutines (the wheel, Send's close paths, the admit pool handing a
// connection back) reach a poller through its inbox, announced by an
// eventfd registered in the same epoll instance.
type poller struct {
	e    *Engine
	epfd int
	efd  int // eventfd: inbox pushes and liveness pokes
	file *os.File
	rc   syscall.RawConn

	mu    sync.Mutex
	inbox []*Conn // connections queued by other goroutines
	spare []*Conn // the inbox slice being processed, reused

	// Owned by the poller goroutine.
	again  []*Conn // connections to process once more before parking
	events []unix.EpollEvent
	buf    []byte // read scratch; bytes that must outlive a pass are copied

	stop  atomic.Bool
	alive atomic.Int64 // unix nanoseconds of the last eventfd wakeup
}

// maxEvents is the epoll_wait batch of a poller.
const maxEvents = 256

// newPoller creates an epoll instance, its eventfd, and wraps the epoll fd
// for the runtime poller.
func newPoller(e *Engine) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("netpoll: epoll create: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("netpoll: epoll nonblock: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("netpoll: eventfd: %w", err)
	}
	// The eventfd is level-triggered: it is reported until read.
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(efd)
		return nil, fmt.Errorf("netpoll: epoll add eventfd: %w", err)
	}
	// os.NewFile sees a non-blocking fd and registers it with the runtime
	// poller (an epoll fd is pollable: readable while events are ready).
	f := os.NewFile(uintptr(epfd), "netpoll-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		_ = unix.Close(efd)
		return nil, fmt.Errorf("netpoll: epoll raw conn: %w", err)
	}
	p := &poller{e: e, epfd: epfd, efd: efd, file: f, rc: rc,
		events: make([]unix.EpollEvent, maxEvents), buf: make([]byte, readScratch)}
	p.alive.Store(time.Now().UnixNano())
	return p, nil
}

// add registers a connection's socket, edge-triggered for reads, and for
// writes too when out is set (bytes already wait for room). tag
// (epollTag) goes into the event's data next to the fd.
func (p *poller) add(fd int, tag uint32, out bool) error {
	ev := uint32(connEvents)
	if out {
		ev = connEventsOut
	}
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: ev, Fd: int32(fd), Pad: int32(tag)})
}

// watchOut adds EPOLLOUT to a registered socket. With EPOLLET the change
// reports EPOLLOUT at once if the socket has room by now, so room that
// came between the short write and this call is not missed.
func (p *poller) watchOut(fd int, tag uint32) error {
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Events: connEventsOut, Fd: int32(fd), Pad: int32(tag)})
}

// epollTag is what a connection's epoll registration carries besides its
// fd: 32 bits of its id, spread by a multiplicative hash. An event fetched
// in a batch for a socket that was closed before the poller got to it, its
// number already taken by a new connection, is recognized by it and
// dropped: its bits (EPOLLRDHUP above all, which readFrames trusts as the
// peer's FIN) belong to the old connection. Not the id's low 32 bits: an
// id is the accept time in ms << idSeqBits plus a count, so its low 32
// bits repeat every 4.096 s, and two connections accepted a multiple of
// that apart (1 in 4,096 pairs on a quiet node) would share them; the
// hash mixes every bit of the id, so two ids agree in their tags about
// once in 2^32 pairs, with no pattern in time.
func epollTag(c *Conn) uint32 { return uint32((c.id * 0x9e3779b97f4a7c15) >> 32) }

// connOf returns the connection a connection's event is for, nil if that
// connection is gone.
func (p *poller) connOf(ev *unix.EpollEvent) *Conn {
	if c := p.e.lookup(int(ev.Fd)); c != nil && epollTag(c) == uint32(ev.Pad) {
		return c
	}
	return nil
}

// run is the poller goroutine: it waits in the runtime netpoller and drains
// the epoll instance each time it becomes readable, until stopped.
func (p *poller) run() {
	defer p.e.pollWG.Done()
	for !p.stop.Load() {
		err := p.rc.Read(func(uintptr) bool { return p.drain() })
		if err != nil {
			p.e.log.Error("epoll wait failed", "err", err)
			return
		}
	}
}

// drain processes ready events until a call returns fewer than a full
// batch and no connection asked for another pass; it returns true only
// when the poller must stop (false parks the goroutine until the epoll fd
// is readable again).
func (p *poller) drain() bool {
	for {
		if p.stop.Load() {
			return true
		}
		n, err := epollPoll(p.epfd, p.events)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			p.e.log.Error("epoll wait failed", "err", err)
			time.Sleep(time.Millisecond)
			continue
		}
		for i := range n {
			ev := &p.events[i]
			if int(ev.Fd) == p.efd {
				p.takeInbox()
				continue
			}
			if c := p.connOf(ev); c != nil {
				p.onEvent(c, ev.Events)
			}
		}
		if len(p.again) > 0 {
			again := p.again
			p.again = nil
			for i, c := range again {
				again[i] = nil
				p.serve(c)
			}
			if p.again == nil {
				p.again = again[:0]
			}
			continue
		}
		if n < len(p.events) {
			// The ready list was emptied by this call: park rather than
			// ask again. An event queued meanwhile made the epoll fd
			// readable, and the runtime (which polls it edge-triggered)
			// wakes the goroutine at once; an empty epoll_wait(..., 0)
			// before each park cost one system call per wakeup.
			return false
		}
	}
}

// onEvent turns epoll bits into pending work and processes the connection
// here and now unless another goroutine owns it.
func (p *poller) onEvent(c *Conn, ev uint32) {
	var bits uint32
	if ev&(epollIn|epollRdHup|epollHup|epollErr) != 0 {
		bits |= evRead
	}
	if ev&(epollRdHup|epollHup|epollErr) != 0 {
		bits |= evHup
	}
	if ev&(epollHup|epollErr) != 0 {
		bits |= evErrHup
	} else if ev&epollRdHup != 0 {
		bits |= evFin
	}
	if ev&epollOut != 0 {
		bits |= evWrite
	}
	c.pending.Or(bits)
	for {
		switch c.sched.Load() {
		case schedIdle:
			if c.sched.CompareAndSwap(schedIdle, schedQueued) {
				p.serve(c)
				return
			}
		case schedRunning:
			// An admit goroutine owns it: it gives it back with the
			// pending bits when done.
			if c.sched.CompareAndSwap(schedRunning, schedDirty) {
				return
			}
		default:
			return // queued already (in the inbox or again)
		}
	}
}

// serve processes a queued connection on the poller goroutine.
func (p *poller) serve(c *Conn) {
	c.sched.Store(schedRunning)
	if c.process(p) {
		return // handed to the admit pool
	}
	if c.pending.Load() == 0 && c.sched.CompareAndSwap(schedRunning, schedIdle) {
		return
	}
	c.sched.Store(schedQueued)
	p.again = append(p.again, c)
}

// push queues c (already marked queued) for this poller from another
// goroutine, poking the eventfd when the inbox was empty.
func (p *poller) push(c *Conn) {
	p.mu.Lock()
	first := len(p.inbox) == 0
	p.inbox = append(p.inbox, c)
	p.mu.Unlock()
	if first {
		p.poke()
	}
}

// poke wakes the poller.
func (p *poller) poke() {
	one := [8]byte{1}
	_, _ = unix.Write(p.efd, one[:])
}

// takeInbox reads the eventfd and serves the connections queued by other
// goroutines.
func (p *poller) takeInbox() {
	var b [8]byte
	_, _ = unix.Read(p.efd, b[:])
	p.alive.Store(time.Now().UnixNano())
	p.mu.Lock()
	in := p.inbox
	p.inbox = p.spare[:0]
	p.mu.Unlock()
	for i, c := range in {
		in[i] = nil
		p.serve(c)
	}
	p.mu.Lock()
	p.spare = in[:0]
	p.mu.Unlock()
}

// close releases the epoll instance and the eventfd; the poller goroutine
// must have exited.
func (p *poller) close() {
	_ = p.file.Close()
	_ = unix.Close(p.efd)
}
