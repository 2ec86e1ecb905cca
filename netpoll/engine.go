package netpoll

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	enet "github.com/mailru/easygo/netpoll"
	"golang.org/x/sys/unix"
)

const (
	epollIn    = enet.EPOLLIN
	epollOut   = enet.EPOLLOUT
	epollRdHup = enet.EPOLLRDHUP
	epollHup   = enet.EPOLLHUP
	epollErr   = enet.EPOLLERR
	epollET    = enet.EPOLLET
)

// connEvents is the registration of every connection: edge-triggered reads.
// EPOLLOUT is added (connEventsOut, one EPOLL_CTL_MOD in the connection's
// life, Conn.wantOutLocked) only once a write leaves bytes queued: a socket
// registered writable reports EPOLLOUT at once, so every connection cost
// its poller one event (and often a wakeup) that found nothing to write,
// and every read event carried the bit too. With EPOLLET, EPOLLOUT once
// added reports only the moment a full send buffer gets room again.
const (
	connEvents    = epollIn | epollRdHup | epollET
	connEventsOut = connEvents | epollOut
)

// Handler receives the events of upgraded connections. The engine calls it
// on two kinds of goroutines, and the split is part of the contract:
//
//   - OnMessage runs inline on the connection's poller goroutine, which
//     serves every other connection of that poller too. It must not block:
//     no store or network round trip, no lock that such a call may hold, no
//     channel send that can wait. Work that may wait is handed to another
//     goroutine (the handler's own). payload is valid only until it returns.
//   - OnOpen runs on the goroutine that admitted the handshake: an admit
//     pool goroutine when the engine has a Gatekeeper (Admit may wait, so
//     admission never runs on a poller), else the goroutine that read the
//     complete head: the accept loop (which reads it right after accept)
//     or the poller. It must not wait either (it holds one of the
//     AdmitWorkers, the accept loop or the poller); a store round trip
//     belongs on a goroutine of its own.
//   - OnClose runs on whichever goroutine owns the connection when it ends:
//     almost always its poller, an admit goroutine (or the accept loop)
//     when the connection dies while being admitted. Same rule: it must not
//     block.
//
// Each is called by one goroutine at a time per connection, in order:
// OnOpen, then OnMessage calls, then OnClose exactly once.
type Handler interface {
	OnOpen(c *Conn)                             // after 101 is written; may Send
	OnMessage(c *Conn, payload []byte)          // one complete text message (UTF-8 validated)
	OnClose(c *Conn, code CloseCode, err error) // exactly once per opened Conn
}

// Engine serves WebSocket connections with one poller per P (each an epoll
// instance parked in Go's netpoller), a fixed pool of admit goroutines and
// one timing wheel: the number of goroutines does not depend on the number
// of connections.
type Engine struct {
	cfg   Config
	h     Handler
	g     Gatekeeper
	plain http.Handler
	log   *slog.Logger

	pollers []*poller // a connection belongs to pollers[fd % len]
	// tab maps fd -> Conn: read by the pollers without locks, written
	// (and replaced by a larger copy) under mu. It is the engine's only
	// registry of connections.
	tab    atomic.Pointer[[]atomic.Pointer[Conn]]
	wheel  *wheel
	admitQ *runQueue
	bufs   bufPool

	readers sync.Pool // *frameReader
	queues  sync.Pool // *outQueue

	beatTicks uint32

	mu        sync.RWMutex
	netConns  map[int]net.Conn
	listeners []net.Listener
	lnFiles   []*os.File // dup'ed listener sockets the accept loops wait on
	closing   bool

	open   atomic.Int64
	lastID atomic.Uint64 // the last connection id given (newID)

	probe      *Conn        // a pseudo-connection cycled through the admit pool
	proxyLogAt atomic.Int64 // unix ns of the last "no PROXY header" warning
	aliveWheel atomic.Int64
	aliveWork  atomic.Int64

	connWG    sync.WaitGroup // one per accepted connection until finalize
	acceptWG  sync.WaitGroup
	poolWG    sync.WaitGroup
	pollWG    sync.WaitGroup
	wheelDone chan struct{}
	closeOnce sync.Once
}

// readScratch is each poller's read buffer size.
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
		admitQ:    newRunQueue(),
		netConns:  make(map[int]net.Conn),
		wheelDone: make(chan struct{}),
	}
	e.wheel = newWheel(cfg.tick(), 2*cfg.Heartbeat+cfg.tick())
	e.beatTicks = max(e.wheel.ticks(cfg.Heartbeat), 1)
	e.readers.New = func() any { return &frameReader{bufs: &e.bufs, maxMsg: cfg.MaxMessageBytes} }
	e.queues.New = func() any { return new(outQueue) }
	now := time.Now().UnixNano()
	e.aliveWheel.Store(now)
	e.aliveWork.Store(now)
	e.tab.Store(new([]atomic.Pointer[Conn]))

	for range cfg.Pollers {
		p, err := newPoller(e)
		if err != nil {
			for _, p := range e.pollers {
				p.close()
			}
			return nil, err
		}
		e.pollers = append(e.pollers, p)
	}
	e.probe = &Conn{e: e, fd: -1}
	for _, p := range e.pollers {
		e.pollWG.Add(1)
		go p.run()
	}
	for range cfg.AdmitWorkers {
		e.poolWG.Add(1)
		go e.admitLoop()
	}
	e.poolWG.Add(1)
	go e.wheelLoop()
	return e, nil
}

// wheelLoop advances the timing wheel every tick; about four times a second
// it pokes every poller and sends the probe through the admit pool, so that
// Alive proves each of them makes progress.
func (e *Engine) wheelLoop() {
	defer e.poolWG.Done()
	t := time.NewTicker(e.wheel.tick)
	defer t.Stop()
	pokeEvery := max(int(250*time.Millisecond/e.wheel.tick), 1)
	for n := 0; ; n++ {
		select {
		case <-e.wheelDone:
			return
		case now := <-t.C:
			e.wheel.advance(now, e.fire)
			e.aliveWheel.Store(time.Now().UnixNano())
			if n%pokeEvery == 0 {
				for _, p := range e.pollers {
					p.poke()
				}
				if e.probe.sched.CompareAndSwap(schedIdle, schedQueued) {
					e.admitQ.push(e.probe)
				}
			}
		}
	}
}

// fire hands a connection with a due deadline to its poller.
func (e *Engine) fire(c *Conn) { e.wake(c, evTimer) }

// pollerOf returns the poller a connection belongs to.
func (e *Engine) pollerOf(c *Conn) *poller {
	return e.pollers[int(c.fd)%len(e.pollers)]
}

// lookup returns the connection of fd, without locks (pollers only).
func (e *Engine) lookup(fd int) *Conn {
	t := *e.tab.Load()
	if fd < 0 || fd >= len(t) {
		return nil
	}
	return t[fd].Load()
}

// wake records bits as pending work of c and queues c on its poller unless
// it is queued or owned already (the owner then sees the bits). It never
// blocks and may be called from any goroutine.
func (e *Engine) wake(c *Conn, bits uint32) {
	c.pending.Or(bits)
	for {
		switch c.sched.Load() {
		case schedIdle:
			if c.sched.CompareAndSwap(schedIdle, schedQueued) {
				e.pollerOf(c).push(c)
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

// release ends an admit goroutine's ownership of c, handing c back to its
// poller if work came in meanwhile.
func (e *Engine) release(c *Conn) {
	if c.pending.Load() == 0 && c.sched.CompareAndSwap(schedRunning, schedIdle) {
		return
	}
	c.sched.Store(schedQueued)
	e.pollerOf(c).push(c)
}

// admitLoop runs handshakes whose head is complete and plain requests; it
// owns each connection until it releases it.
func (e *Engine) admitLoop() {
	defer e.poolWG.Done()
	for c := e.admitQ.pop(); c != nil; c = e.admitQ.pop() {
		if c == e.probe {
			e.aliveWork.Store(time.Now().UnixNano())
			c.sched.Store(schedIdle)
			continue
		}
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

// acceptRaw accepts with accept4 on the listener's socket, waiting for it
// in Go's netpoller: net refuses RawConn.Read on a listener, so the socket is
// dup'ed into an os.File whose RawConn.Read waits for read readiness (what
// a listening socket reports when a connection is ready). No thread blocks,
// and each wakeup accepts until EAGAIN. A read deadline of a second lets the
// loop notice that ln was closed by its owner (the dup keeps the socket
// open); Close closes the dup itself.
func (e *Engine) acceptRaw(rc syscallRawConn) error {
	dfd, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		dfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return fmt.Errorf("netpoll: accept: %w", err)
	}
	if derr != nil {
		return fmt.Errorf("netpoll: dup listener: %w", derr)
	}
	if err := unix.SetNonblock(dfd, true); err != nil {
		_ = unix.Close(dfd)
		return fmt.Errorf("netpoll: dup listener: %w", err)
	}
	f := os.NewFile(uintptr(dfd), "netpoll-listener")
	defer f.Close()
	frc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("netpoll: accept: %w", err)
	}
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		return nil
	}
	e.lnFiles = append(e.lnFiles, f)
	e.mu.Unlock()
	// The head of a new connection is usually in its socket by the time
	// it is accepted: it is read here at once (readHead), into this
	// scratch buffer.
	scratch := make([]byte, readScratch)
	nd := newNoDelay(dfd)
	backoff := 5 * time.Millisecond
	for {
		var aerr error
		_ = f.SetReadDeadline(time.Now().Add(time.Second))
		err := frc.Read(func(fd uintptr) bool {
			for {
				nfd, peer, ip, err := accept4(int(fd))
				switch {
				case err == nil:
					if ip {
						nd.apply(nfd)
					}
					e.addConn(nfd, peer, nil, scratch)
					continue
				case err == unix.EAGAIN:
					return false
				case err == unix.EINTR || err == unix.ECONNABORTED:
					continue
				default:
					aerr = err
					return true
				}
			}
		})
		if e.isClosing() {
			return nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Still open? Control fails once ln is closed.
			if cerr := rc.Control(func(uintptr) {}); cerr != nil {
				return fmt.Errorf("netpoll: accept: %w", cerr)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("netpoll: accept: %w", err)
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

// noDelay gives accepted TCP connections TCP_NODELAY. Linux copies the
// option from the listening socket to the connections it accepts, so it is
// set once on the listener (shared with the dup the accept loop waits on;
// it changes nothing else for a listening socket) and connections are
// checked: once one came with it, no connection needs its own setsockopt
// (one system call less per connection). A connection queued before the
// listener had the option (a socket-activation or handover backlog) comes
// without it and gets its own. The first ndChecks connections are checked,
// then every ndChecks-th, so that a backlog longer than ndChecks costs
// each later connection its own call only until the backlog is drained;
// where the option is never inherited (the listener refused it), every
// connection gets its own, as before.
type noDelay struct {
	inherited bool
	never     bool // the listener refused the option: no check is worth it
	seen      int  // connections applied so far
}

// ndChecks is how many connections are checked at first, and after
// those, every how many one is.
const ndChecks = 64

// newNoDelay sets TCP_NODELAY on the listening socket lfd.
func newNoDelay(lfd int) *noDelay {
	if unix.SetsockoptInt(lfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) != nil {
		return &noDelay{never: true}
	}
	return &noDelay{}
}

// apply makes sure the accepted TCP socket fd has TCP_NODELAY.
func (n *noDelay) apply(fd int) {
	if n.inherited {
		return
	}
	n.seen++
	if !n.never && (n.seen <= ndChecks || n.seen%ndChecks == 0) {
		if v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); err == nil && v != 0 {
			n.inherited = true
			return
		}
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
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
		e.addConn(fd, remoteOf(nc), nc, nil)
	}
}

// addConn registers an accepted socket: table slot, handshake deadline, and
// its single epoll registration. With a scratch buffer it first reads the
// request head, owning the connection meanwhile as an admit goroutine does:
// the head is usually there already, and waiting for epoll to report it
// cost a trip through the poller (a wakeup, an epoll_wait, a read) per
// connection. The socket joins epoll after that read, so the bytes it took
// raise no event; bytes that come later raise one (an EPOLL_CTL_ADD of a
// readable socket reports it at once). A half-sent head only leaves its
// bytes behind: nothing here waits.
func (e *Engine) addConn(fd int, peer netip.AddrPort, nc net.Conn, scratch []byte) {
	c := &Conn{e: e, fd: int32(fd), id: e.newID(time.Now())}
	c.setRemote(peer)
	c.sched.Store(schedRunning)
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		closeSocket(fd, nc)
		return
	}
	if old := *e.tab.Load(); fd >= len(old) {
		n := max(2*len(old), fd+1, 1024)
		t := make([]atomic.Pointer[Conn], n)
		for i := range old {
			t[i].Store(old[i].Load())
		}
		e.tab.Store(&t)
	}
	(*e.tab.Load())[fd].Store(c)
	if nc != nil {
		e.netConns[fd] = nc
	}
	e.connWG.Add(1)
	e.mu.Unlock()
	e.wheel.set(c, tmState, e.wheel.after(e.cfg.HandshakeTimeout))
	handoff := false
	if scratch != nil {
		if handoff = c.readHead(scratch, false); !handoff {
			c.settle() // a refusal sent, or the peer gone (finalized)
		}
		c.mu.Lock()
		closed := c.state == stClosed
		c.mu.Unlock()
		if closed {
			return
		}
	}
	if err := c.register(); err != nil {
		e.log.Warn("epoll add failed", "err", err)
		c.finalize(CloseAbnormal, err)
		return
	}
	if handoff {
		e.admitQ.push(c)
		return
	}
	e.release(c)
}

// detach undoes addConn and closes the socket. The table slot is cleared
// before the fd number can be reused. Closing the socket removes it from
// the poller's epoll set (the engine holds its only descriptor), so there
// is no EPOLL_CTL_DEL: one system call less per connection. An event of
// the closed socket already fetched in the same batch finds the slot
// empty, or the connection that reuses the number, whose tag it does not
// carry (epollTag): it is dropped. Taken as the new connection's, its
// EPOLLRDHUP would make readFrames end that connection at its first
// short read.
func (e *Engine) detach(c *Conn, fd int) {
	e.mu.Lock()
	if t := *e.tab.Load(); fd < len(t) && t[fd].Load() == c {
		t[fd].Store(nil)
	}
	nc := e.netConns[fd]
	delete(e.netConns, fd)
	e.mu.Unlock()
	e.wheel.remove(c)
	c.mu.Lock()
	c.settleResetLocked() // delivery.go: the last look before a reset
	c.mu.Unlock()
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
		t := *e.tab.Load()
		for ; i < len(t) && n < len(batch); i++ {
			if c := t[i].Load(); c != nil {
				batch[n] = c
				n++
			}
		}
		done := i >= len(t)
		for j, c := range batch[:n] {
			batch[j] = nil
			c.mu.Lock()
			open := c.mflags&mfOpened != 0 && c.state != stClosed
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

// Alive returns the oldest of the last times a poller, the timing wheel and
// the admit pool made progress; a stale value means the engine is stuck.
func (e *Engine) Alive() time.Time {
	t := min(e.aliveWheel.Load(), e.aliveWork.Load())
	for _, p := range e.pollers {
		t = min(t, p.alive.Load())
	}
	return time.Unix(0, t)
}

// Close stops accepting, closes every connection (1001, waiting up to
// CloseWait for each peer's close frame), and returns after all the
// engine's goroutines have exited. It is idempotent.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closing = true
		lns, files := e.listeners, e.lnFiles
		e.listeners, e.lnFiles = nil, nil
		e.mu.Unlock()
		for _, f := range files {
			_ = f.Close()
		}
		for _, ln := range lns {
			_ = ln.Close()
		}
		e.acceptWG.Wait()
		var all []*Conn
		e.mu.RLock()
		t := *e.tab.Load()
		for i := range t {
			if c := t[i].Load(); c != nil {
				all = append(all, c)
			}
		}
		e.mu.RUnlock()
		for _, c := range all {
			e.wake(c, evAbort)
		}
		e.connWG.Wait()
		close(e.wheelDone)
		for _, p := range e.pollers {
			p.stop.Store(true)
			p.poke()
		}
		e.pollWG.Wait()
		for _, p := range e.pollers {
			p.close()
		}
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
