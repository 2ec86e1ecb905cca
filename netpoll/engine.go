package netpoll

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	enet "github.com/mailru/easygo/netpoll"
	"golang.org/x/sys/unix"
)

type epollEvent = enet.EpollEvent

const (
	epollIn    = enet.EPOLLIN
	epollOut   = enet.EPOLLOUT
	epollRdHup = enet.EPOLLRDHUP
	epollHup   = enet.EPOLLHUP
	epollErr   = enet.EPOLLERR
	epollET    = enet.EPOLLET
	// epollClosed is what easygo passes to every callback when the epoll
	// instance is closed (its unexported _EPOLLCLOSED).
	epollClosed = 0x20
)

// connEvents is the one registration of every connection: edge-triggered,
// reads and writes. With EPOLLET, EPOLLOUT reports only the moment a full
// send buffer gets room again, so it costs nothing while no write is pending
// and no Epoll.Mod is ever needed.
const connEvents = epollIn | epollRdHup | epollOut | epollET

// Handler receives the events of upgraded connections. OnMessage runs on a
// pool worker and must not block; payload is valid only until it returns.
type Handler interface {
	OnOpen(c *Conn)                             // after 101 is written; may Send
	OnMessage(c *Conn, payload []byte)          // one complete text message (UTF-8 validated)
	OnClose(c *Conn, code CloseCode, err error) // exactly once per opened Conn
}

// Engine serves WebSocket connections with one epoll instance, a fixed pool
// of workers, a fixed pool of admit goroutines and one timing wheel: the
// number of goroutines does not depend on the number of connections.
type Engine struct {
	cfg   Config
	h     Handler
	g     Gatekeeper
	plain http.Handler
	log   *slog.Logger

	ep     *enet.Epoll
	wheel  *wheel
	workQ  *runQueue
	admitQ *runQueue
	bufs   bufPool

	readers sync.Pool // *frameReader
	queues  sync.Pool // *outQueue

	beatTicks  uint32
	closeTicks uint32
	hsTicks    uint32

	mu        sync.RWMutex
	conns     []*Conn // indexed by fd; guarded by mu
	netConns  map[int]net.Conn
	listeners []net.Listener
	closing   bool

	open   atomic.Int64
	nextID atomic.Uint64

	probe      *Conn // a pseudo-connection cycled through the workers
	efd        int   // eventfd poked by the wheel, read by the epoll goroutine
	stopfd     int   // eventfd written once by Close; wakes accept loops
	alivePoll  atomic.Int64
	proxyLogAt atomic.Int64 // unix ns of the last "no PROXY header" warning
	aliveWheel atomic.Int64
	aliveWork  atomic.Int64

	connWG    sync.WaitGroup // one per accepted connection until finalize
	acceptWG  sync.WaitGroup
	poolWG    sync.WaitGroup
	wheelDone chan struct{}
	closeOnce sync.Once
}

// worker is a pool goroutine's private state.
type worker struct {
	buf []byte // read scratch; bytes that must outlive a pass are copied
}

// readScratch is each worker's read buffer size.
const readScratch = 64 << 10

// New builds an engine and starts its goroutines. h receives upgraded
// connections, g admits handshakes (nil admits all), plain serves requests
// that are not upgrades on the same port (nil answers 404).
func New(cfg Config, h Handler, g Gatekeeper, plain http.Handler, log *slog.Logger) (*Engine, error) {
	if h == nil {
		return nil, errors.New("netpoll: nil Handler")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	e := &Engine{
		cfg: cfg, h: h, g: g, plain: plain, log: log,
		workQ: newRunQueue(), admitQ: newRunQueue(),
		netConns:  make(map[int]net.Conn),
		wheelDone: make(chan struct{}),
	}
	e.wheel = newWheel(cfg.tick(), 2*cfg.Heartbeat+cfg.tick())
	e.beatTicks = max(e.wheel.ticks(cfg.Heartbeat), 1)
	e.closeTicks = max(e.wheel.ticks(cfg.CloseWait), 1)
	e.hsTicks = max(e.wheel.ticks(cfg.HandshakeTimeout), 1)
	e.readers.New = func() any { return &frameReader{bufs: &e.bufs, maxMsg: cfg.MaxMessageBytes} }
	e.queues.New = func() any { return new(outQueue) }
	now := time.Now().UnixNano()
	e.alivePoll.Store(now)
	e.aliveWheel.Store(now)
	e.aliveWork.Store(now)

	ep, err := enet.EpollCreate(&enet.EpollConfig{OnWaitError: func(err error) {
		log.Error("epoll wait failed", "err", err)
	}})
	if err != nil {
		return nil, fmt.Errorf("netpoll: epoll create: %w", err)
	}
	e.ep = ep
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = ep.Close()
		return nil, fmt.Errorf("netpoll: eventfd: %w", err)
	}
	e.efd = efd
	if e.stopfd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		_ = ep.Close()
		_ = unix.Close(efd)
		return nil, fmt.Errorf("netpoll: eventfd: %w", err)
	}
	e.probe = &Conn{e: e, fd: -1}
	if err := ep.Add(efd, epollIn, e.onProbe); err != nil {
		_ = ep.Close()
		_ = unix.Close(efd)
		return nil, fmt.Errorf("netpoll: epoll add eventfd: %w", err)
	}
	for range cfg.Workers {
		e.poolWG.Add(1)
		go e.workLoop()
	}
	for range cfg.AdmitWorkers {
		e.poolWG.Add(1)
		go e.admitLoop()
	}
	e.poolWG.Add(1)
	go e.wheelLoop()
	return e, nil
}

// onProbe runs on the epoll goroutine when the wheel pokes the eventfd: it
// proves the poller alive and sends the probe through the workers.
func (e *Engine) onProbe(ev epollEvent) {
	if ev&epollClosed != 0 {
		return
	}
	var b [8]byte
	_, _ = unix.Read(e.efd, b[:])
	e.alivePoll.Store(time.Now().UnixNano())
	e.wake(e.probe, evCheck)
}

// wheelLoop advances the timing wheel every tick and pokes the poller about
// four times a second.
func (e *Engine) wheelLoop() {
	defer e.poolWG.Done()
	t := time.NewTicker(e.wheel.tick)
	defer t.Stop()
	pokeEvery := max(int(250*time.Millisecond/e.wheel.tick), 1)
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	for n := 0; ; n++ {
		select {
		case <-e.wheelDone:
			return
		case now := <-t.C:
			e.wheel.advance(now, e.fire)
			e.aliveWheel.Store(time.Now().UnixNano())
			if n%pokeEvery == 0 {
				_, _ = unix.Write(e.efd, one)
			}
		}
	}
}

// fire hands a connection with a due deadline to the workers.
func (e *Engine) fire(c *Conn) { e.wake(c, evTimer) }

// wake records bits as pending work of c and queues c unless it is queued or
// running already. It never blocks.
func (e *Engine) wake(c *Conn, bits uint32) {
	c.pending.Or(bits)
	for {
		switch c.sched.Load() {
		case schedIdle:
			if c.sched.CompareAndSwap(schedIdle, schedQueued) {
				e.workQ.push(c)
				return
			}
		case schedRunning:
			if c.sched.CompareAndSwap(schedRunning, schedDirty) {
				return
			}
		default:
			return
		}
	}
}

// release ends a goroutine's ownership of c, queueing c again if work came
// in meanwhile.
func (e *Engine) release(c *Conn) {
	if c.pending.Load() == 0 && c.sched.CompareAndSwap(schedRunning, schedIdle) {
		return
	}
	c.sched.Store(schedQueued)
	e.workQ.push(c)
}

// workLoop is a pool worker.
func (e *Engine) workLoop() {
	defer e.poolWG.Done()
	w := &worker{buf: make([]byte, readScratch)}
	for c := e.workQ.pop(); c != nil; c = e.workQ.pop() {
		c.sched.Store(schedRunning)
		if c == e.probe {
			c.pending.Store(0)
			e.aliveWork.Store(time.Now().UnixNano())
			e.release(c)
			continue
		}
		if !c.process(w) {
			e.release(c)
		}
	}
}

// admitLoop runs handshakes whose head is complete; it owns each connection
// until it releases it.
func (e *Engine) admitLoop() {
	defer e.poolWG.Done()
	for c := e.admitQ.pop(); c != nil; c = e.admitQ.pop() {
		c.admit()
		c.settle()
		e.release(c)
	}
}

// Serve accepts connections from ln until ln is closed or the engine is
// closed; it returns nil in the latter case. Listeners that expose their
// socket (TCP, Unix) are accepted from with accept4 directly, so that a
// connection costs the engine one fd and no net.Conn; others go through
// ln.Accept.
func (e *Engine) Serve(ln net.Listener) error {
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		return ErrClosed
	}
	e.listeners = append(e.listeners, ln)
	e.acceptWG.Add(1)
	e.mu.Unlock()
	defer e.acceptWG.Done()
	if sc, ok := ln.(interface {
		SyscallConn() (syscallRawConn, error)
	}); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return e.acceptRaw(rc)
		}
	}
	return e.acceptNet(ln)
}

// isClosing reports whether Close has begun.
func (e *Engine) isClosing() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.closing
}

// acceptRaw accepts with accept4 on the listener's own socket. The
// runtime poller cannot be asked to wait for a listener without accepting,
// so this goroutine waits in poll(2) on the listener and the engine's stop
// eventfd; accept4 itself runs inside RawConn.Control, which keeps the fd
// from being closed under it.
func (e *Engine) acceptRaw(rc syscallRawConn) error {
	var lfd int
	if err := rc.Control(func(fd uintptr) { lfd = int(fd) }); err != nil {
		return fmt.Errorf("netpoll: accept: %w", err)
	}
	backoff := 5 * time.Millisecond
	for {
		pfd := [2]unix.PollFd{{Fd: int32(lfd), Events: unix.POLLIN}, {Fd: int32(e.stopfd), Events: unix.POLLIN}}
		// The timeout only bounds how late an external ln.Close is noticed.
		if _, err := unix.Poll(pfd[:], 1000); err != nil && err != unix.EINTR {
			return fmt.Errorf("netpoll: poll listener: %w", err)
		}
		if e.isClosing() {
			return nil
		}
		var aerr error
		err := rc.Control(func(fd uintptr) {
			for {
				nfd, sa, err := unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
				switch {
				case err == nil:
					e.addConn(nfd, sa, nil)
					continue
				case err == unix.EAGAIN:
				case err == unix.EINTR || err == unix.ECONNABORTED:
					continue
				default:
					aerr = err
				}
				return
			}
		})
		if e.isClosing() {
			return nil
		}
		if err != nil {
			return fmt.Errorf("netpoll: accept: %w", err)
		}
		if aerr == nil {
			backoff = 5 * time.Millisecond
			continue
		}
		if !temporaryAccept(aerr) {
			return fmt.Errorf("netpoll: accept: %w", aerr)
		}
		e.log.Warn("accept failed, backing off", "err", aerr, "backoff", backoff)
		select {
		case <-e.wheelDone:
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// temporaryAccept reports whether an accept error may pass (fd or memory
// exhaustion).
func temporaryAccept(err error) bool {
	return err == unix.EMFILE || err == unix.ENFILE || err == unix.ENOBUFS || err == unix.ENOMEM
}

// acceptNet accepts through ln.Accept for listeners without a raw socket;
// each net.Conn is kept until its connection is finalized.
func (e *Engine) acceptNet(ln net.Listener) error {
	for {
		nc, err := ln.Accept()
		if err != nil {
			if e.isClosing() {
				return nil
			}
			return fmt.Errorf("netpoll: accept: %w", err)
		}
		sc, ok := nc.(interface {
			SyscallConn() (syscallRawConn, error)
		})
		if !ok {
			e.log.Warn("listener yields connections without a socket", "remote", nc.RemoteAddr().String())
			_ = nc.Close()
			continue
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			_ = nc.Close()
			continue
		}
		var fd int
		if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
			_ = nc.Close()
			continue
		}
		e.addConn(fd, nil, nc)
	}
}

// addConn registers an accepted socket: table slot, handshake deadline, and
// its single epoll registration.
func (e *Engine) addConn(fd int, sa unix.Sockaddr, nc net.Conn) {
	c := &Conn{e: e, fd: int32(fd), id: e.nextID.Add(1), since: time.Now().UnixNano()}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		c.remote = netipAddrPort4(a)
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	case *unix.SockaddrInet6:
		c.remote = netipAddrPort6(a)
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	if nc != nil {
		c.remote = remoteOf(nc)
	}
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		closeSocket(fd, nc)
		return
	}
	if fd >= len(e.conns) {
		n := max(2*len(e.conns), fd+1, 1024)
		nc := make([]*Conn, n)
		copy(nc, e.conns)
		e.conns = nc
	}
	e.conns[fd] = c
	if nc != nil {
		e.netConns[fd] = nc
	}
	e.connWG.Add(1)
	e.mu.Unlock()
	e.wheel.set(c, tmState, e.wheel.now.Load()+e.hsTicks)
	if err := e.ep.Add(fd, connEvents, c.onEvent); err != nil {
		e.log.Warn("epoll add failed", "err", err)
		e.detach(c, fd)
		c.mu.Lock()
		c.state = stClosed
		c.mu.Unlock()
		e.connWG.Done()
	}
}

// detach undoes addConn and closes the socket. Epoll forgets the fd and the
// table slot is cleared before the fd number can be reused.
func (e *Engine) detach(c *Conn, fd int) {
	_ = e.ep.Del(fd)
	e.mu.Lock()
	if fd < len(e.conns) && e.conns[fd] == c {
		e.conns[fd] = nil
	}
	nc := e.netConns[fd]
	delete(e.netConns, fd)
	e.mu.Unlock()
	e.wheel.remove(c)
	closeSocket(fd, nc)
}

// closeSocket closes fd, through nc when the socket came from ln.Accept.
func closeSocket(fd int, nc net.Conn) {
	if nc != nil {
		_ = nc.Close()
		return
	}
	_ = unix.Close(fd)
}

// Len returns the number of open (upgraded, not yet finalized) connections.
func (e *Engine) Len() int { return int(e.open.Load()) }

// Range calls fn for each open connection until fn returns false. fn runs
// without engine locks held and may call any Conn method.
func (e *Engine) Range(fn func(*Conn) bool) {
	var batch [256]*Conn
	for i := 0; ; {
		n := 0
		e.mu.RLock()
		for ; i < len(e.conns) && n < len(batch); i++ {
			if c := e.conns[i]; c != nil {
				batch[n] = c
				n++
			}
		}
		done := i >= len(e.conns)
		e.mu.RUnlock()
		for j, c := range batch[:n] {
			batch[j] = nil
			c.mu.Lock()
			open := c.opened && c.state != stClosed
			c.mu.Unlock()
			if open && !fn(c) {
				return
			}
		}
		if done {
			return
		}
	}
}

// Alive returns the oldest of the last times the poller, the timing wheel
// and the workers made progress; a stale value means the engine is stuck.
func (e *Engine) Alive() time.Time {
	t := min(e.alivePoll.Load(), e.aliveWheel.Load(), e.aliveWork.Load())
	return time.Unix(0, t)
}

// Close stops accepting, closes every connection (1001, waiting up to
// CloseWait for each peer's close frame), and returns after all the
// engine's goroutines have exited. It is idempotent.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closing = true
		lns := e.listeners
		e.listeners = nil
		e.mu.Unlock()
		_, _ = unix.Write(e.stopfd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		for _, ln := range lns {
			_ = ln.Close()
		}
		e.acceptWG.Wait()
		_ = unix.Close(e.stopfd)
		var all []*Conn
		e.mu.RLock()
		for _, c := range e.conns {
			if c != nil {
				all = append(all, c)
			}
		}
		e.mu.RUnlock()
		for _, c := range all {
			e.wake(c, evAbort)
		}
		e.connWG.Wait()
		close(e.wheelDone)
		_ = e.ep.Close()
		_ = unix.Close(e.efd)
		e.workQ.close()
		e.admitQ.close()
		e.poolWG.Wait()
	})
	return nil
}

// getReader borrows a frame reader.
func (e *Engine) getReader() *frameReader { return e.readers.Get().(*frameReader) }

// putReader resets and gives back a frame reader.
func (e *Engine) putReader(r *frameReader) {
	r.reset()
	e.readers.Put(r)
}

// newQueue borrows an empty outbound queue.
func (e *Engine) newQueue() *outQueue { return e.queues.Get().(*outQueue) }

// putQueue gives back an empty outbound queue.
func (e *Engine) putQueue(q *outQueue) {
	e.queues.Put(q)
}
