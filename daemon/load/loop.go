package load

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// wire is what every loop of a run shares, read-only once the loops start.
type wire struct {
	raw     bool   // raw echo (bare servers) rather than the protocol
	route   string // protocol route
	size    int    // raw payload size
	filler  []byte // raw payload template (size bytes)
	data    []byte // protocol echo data (a JSON string)
	base    time.Time
	slowMsg []byte // the frame a slow peer dribbles
}

func (w *wire) now() int64 { return int64(time.Since(w.base)) }

// conn is one client connection, owned by its loop's goroutine.
type conn struct {
	nc       net.Conn // kept so the runtime does not close the fd
	fd       int
	in       []byte // bytes of an incomplete frame
	out      []byte // bytes the socket did not take yet
	frag     []byte // fragments of a message
	key      [4]byte
	chk      Checker
	nextID   uint64
	workers  int
	welcomed bool
	slow     bool
	slowPos  int
	polling  bool // EPOLLOUT is armed
	closed   bool // dropped: its fd number may already belong to another socket
}

// phase is one measured interval on a loop.
type phase struct {
	kind     string // "echo" or "rate"
	deadline int64
	graceEnd int64
	sending  bool
	interval int64 // rate mode: ns between sends on this loop
	nextSend int64
	rr       int
	targets  []*conn
	sent     uint64
	recv     uint64
	hist     *Hist
	done     chan<- phaseResult
}

// phaseResult is a loop's share of a phase.
type phaseResult struct {
	sent, recv, unanswered uint64
	hist                   *Hist
}

// loop is one epoll instance and the goroutine that runs it.
type loop struct {
	w        *wire
	epfd     int
	efd      int
	tfd      int   // timerfd for scheduled work (µs precision, unlike epoll_wait's ms)
	armed    int64 // when tfd fires next (ns since base), -1 disarmed
	rbuf     []byte
	scratch  []byte // protocol request being built
	filler   []byte // this loop's raw payload buffer
	conns    map[int]*conn
	inflight int
	welcomed int
	closed   int
	errs     map[string]uint64
	ph       *phase
	slow     []*conn
	nextSlow int64
	rng      *rand.Rand
	stopped  bool

	mu   sync.Mutex // guards cmds
	cmds []func()
}

func newLoop(w *wire, seed uint64) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(efd)
		return nil, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err == nil {
		ev = unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(tfd)}
		err = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, tfd, &ev)
	}
	if err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(efd)
		return nil, fmt.Errorf("timerfd: %w", err)
	}
	return &loop{
		w: w, epfd: epfd, efd: efd, tfd: tfd, armed: -1, rbuf: make([]byte, 256<<10),
		scratch: make([]byte, 0, w.size+len(w.data)+128), filler: append([]byte(nil), w.filler...),
		conns: make(map[int]*conn), errs: make(map[string]uint64),
		rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}, nil
}

// do runs fn on the loop goroutine. Safe from any goroutine.
func (l *loop) do(fn func()) {
	l.mu.Lock()
	l.cmds = append(l.cmds, fn)
	l.mu.Unlock()
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = unix.Write(l.efd, one[:])
}

// run is the loop goroutine; it returns after a stop command.
func (l *loop) run() {
	events := make([]unix.EpollEvent, 512)
	for !l.stopped {
		l.arm()
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			l.errs["epoll_wait: "+err.Error()]++
			return
		}
		for i := range max(n, 0) {
			ev := events[i]
			fd := int(ev.Fd)
			if fd == l.efd {
				l.runCmds()
				continue
			}
			if fd == l.tfd {
				var b [8]byte
				_, _ = unix.Read(l.tfd, b[:])
				l.armed = -1
				continue
			}
			c := l.conns[fd]
			if c == nil {
				continue
			}
			if ev.Events&unix.EPOLLOUT != 0 {
				l.flush(c)
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0 {
				l.read(c)
			}
		}
		l.tick(l.w.now())
	}
	for _, c := range l.conns {
		l.drop(c, "")
	}
	_ = unix.Close(l.epfd)
	_ = unix.Close(l.efd)
	_ = unix.Close(l.tfd)
}

func (l *loop) runCmds() {
	var b [8]byte
	_, _ = unix.Read(l.efd, b[:])
	l.mu.Lock()
	cmds := l.cmds
	l.cmds = nil
	l.mu.Unlock()
	for _, fn := range cmds {
		fn()
	}
}

// next returns when scheduled work is due (ns since base), -1 for none.
func (l *loop) next() int64 {
	next := int64(-1)
	if len(l.slow) > 0 {
		next = l.nextSlow
	}
	if p := l.ph; p != nil {
		t := p.deadline
		if !p.sending {
			t = p.graceEnd
		} else if p.interval > 0 && p.nextSend < t {
			t = p.nextSend
		}
		if next < 0 || t < next {
			next = t
		}
	}
	return next
}

// arm sets the timerfd to the next scheduled work.
func (l *loop) arm() {
	next := l.next()
	if next < 0 || next == l.armed {
		return
	}
	d := max(next-l.w.now(), 1000)
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(d)}
	if err := unix.TimerfdSettime(l.tfd, 0, &spec, nil); err != nil {
		l.errs["timerfd_settime: "+err.Error()]++
		return
	}
	l.armed = next
}

// add registers an upgraded connection.
func (l *loop) add(d *dialed, slow bool, workers int) {
	c := &conn{nc: d.nc, fd: d.fd, slow: slow, workers: workers}
	binary.LittleEndian.PutUint32(c.key[:], l.rng.Uint32())
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(d.fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, d.fd, &ev); err != nil {
		l.errs["epoll_ctl add: "+err.Error()]++
		_ = d.nc.Close()
		return
	}
	l.conns[d.fd] = c
	if l.w.raw {
		c.welcomed = true
		l.welcomed++
	}
	if slow {
		l.slow = append(l.slow, c)
		if len(l.slow) == 1 {
			l.nextSlow = l.w.now() + int64(time.Second)
		}
		// Half a frame header at once, then one more byte a second (tick).
		l.sendBytes(c, l.w.slowMsg[:1])
		c.slowPos = 1
	}
	if len(d.head) > 0 {
		l.consume(c, d.head)
	}
}

// drop closes c; reason, when set, is counted as an error.
func (l *loop) drop(c *conn, reason string) {
	if c.closed {
		return
	}
	c.closed = true
	if reason != "" {
		l.errs[reason]++
	}
	if n := c.chk.Len(); n > 0 {
		l.inflight -= n
		if !l.stopped {
			l.errs["connection lost with requests in flight"] += uint64(n)
		}
	}
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	delete(l.conns, c.fd)
	_ = c.nc.Close()
	l.closed++
}

func (l *loop) read(c *conn) {
	n, err := unix.Read(c.fd, l.rbuf)
	switch {
	case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
		return
	case err != nil:
		l.drop(c, "read: "+err.Error())
		return
	case n == 0:
		l.drop(c, "server closed the connection (EOF)")
		return
	}
	l.consume(c, l.rbuf[:n])
}

// consume parses every complete frame of c.in + b.
func (l *loop) consume(c *conn, b []byte) {
	if len(c.in) > 0 {
		c.in = append(c.in, b...)
		b = c.in
	}
	off := 0
	for {
		f, n, err := parseFrame(b[off:])
		if err != nil {
			l.drop(c, "malformed server frame")
			return
		}
		if n == 0 {
			break
		}
		off += n
		if !l.onFrame(c, f) {
			return
		}
	}
	rest := b[off:]
	switch {
	case len(rest) == 0:
		c.in = c.in[:0]
		if cap(c.in) > 64<<10 {
			c.in = nil
		}
	case len(c.in) > 0:
		c.in = c.in[:copy(c.in, rest)]
	default:
		c.in = append(c.in[:0], rest...)
	}
}

// onFrame handles one frame; false when c was closed.
func (l *loop) onFrame(c *conn, f frame) bool {
	switch f.op {
	case opPing:
		l.send(c, opPong, f.payload)
		return true
	case opPong:
		return true
	case opClose:
		code := 1005
		if len(f.payload) >= 2 {
			code = int(binary.BigEndian.Uint16(f.payload))
		}
		l.send(c, opClose, f.payload[:min(len(f.payload), 2)])
		l.drop(c, fmt.Sprintf("server sent close %d", code))
		return false
	case opCont:
		c.frag = append(c.frag, f.payload...)
		if !f.fin {
			return true
		}
		msg := c.frag
		c.frag = c.frag[:0]
		l.onMessage(c, msg)
		return true
	case opText, opBin:
		if !f.fin {
			c.frag = append(c.frag[:0], f.payload...)
			return true
		}
		l.onMessage(c, f.payload)
		return true
	}
	l.drop(c, "unknown opcode")
	return false
}

func (l *loop) onMessage(c *conn, msg []byte) {
	if c.slow {
		if !c.welcomed {
			c.welcomed = true
			l.welcomed++
		}
		return
	}
	var a Answer
	var err error
	if l.w.raw {
		a, err = c.chk.Raw(msg, l.w.size)
	} else {
		a, err = c.chk.Protocol(msg, c.welcomed, l.w.data)
		if a.Welcome {
			c.welcomed = true
			l.welcomed++
		}
	}
	if err != nil {
		l.errs[err.Error()]++
	}
	if !a.Done {
		return
	}
	l.inflight--
	if a.Code != "" {
		l.errs["error "+a.Code]++
	}
	p := l.ph
	if p == nil || a.Req.Sent < 0 {
		return
	}
	p.recv++
	p.hist.Record(time.Duration(l.w.now() - a.Req.Sent))
	if a.Req.Worker && p.sending {
		l.request(c, l.w.now(), true)
	}
}

// request sends one echo request on c, stamped with sent (ns since base).
func (l *loop) request(c *conn, sent int64, worker bool) {
	if c.closed {
		return
	}
	c.nextID++
	id := c.nextID
	var msg []byte
	if l.w.raw {
		msg = l.filler
		rawPayload(msg, id)
	} else {
		l.scratch = protoRequest(l.scratch[:0], l.w.route, id, l.w.data)
		msg = l.scratch
	}
	if l.ph == nil {
		sent = -1
	} else {
		l.ph.sent++
	}
	c.chk.Start(Pending{ID: id, Sent: sent, Worker: worker})
	l.inflight++
	l.send(c, opText, msg)
}

// send queues a frame and tries to write it.
func (l *loop) send(c *conn, op byte, payload []byte) {
	if c.closed {
		return
	}
	c.out = appendFrame(c.out, op, payload, c.key)
	if !c.polling {
		l.flush(c)
	}
}

// sendBytes queues raw bytes (a slow peer's dribble).
func (l *loop) sendBytes(c *conn, b []byte) {
	if c.closed {
		return
	}
	c.out = append(c.out, b...)
	if !c.polling {
		l.flush(c)
	}
}

func (l *loop) flush(c *conn) {
	for len(c.out) > 0 {
		n, err := unix.Write(c.fd, c.out)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			l.drop(c, "write: "+err.Error())
			return
		}
		c.out = c.out[:copy(c.out, c.out[n:])]
	}
	want := len(c.out) > 0
	if want == c.polling {
		return
	}
	c.polling = want
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(c.fd)}
	if want {
		ev.Events |= unix.EPOLLOUT
	}
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev)
}

// tick runs scheduled work: slow-peer bytes, rate sends, phase ends.
func (l *loop) tick(now int64) {
	if len(l.slow) > 0 && now >= l.nextSlow {
		l.nextSlow = now + int64(time.Second)
		for _, c := range l.slow {
			if c.closed {
				continue
			}
			msg := l.w.slowMsg
			l.sendBytes(c, msg[c.slowPos%len(msg):c.slowPos%len(msg)+1])
			c.slowPos++
		}
	}
	p := l.ph
	if p == nil {
		return
	}
	if p.sending && p.interval > 0 {
		for p.nextSend <= now && p.nextSend < p.deadline && len(p.targets) > 0 {
			c := p.targets[p.rr%len(p.targets)]
			p.rr++
			l.request(c, p.nextSend, false)
			p.nextSend += p.interval
		}
	}
	if p.sending && now >= p.deadline {
		p.sending = false
	}
	if !p.sending && (l.inflight == 0 || now >= p.graceEnd) {
		res := phaseResult{sent: p.sent, recv: p.recv, hist: p.hist}
		if l.inflight > 0 {
			res.unanswered = uint64(l.inflight)
		}
		l.ph = nil
		// Answers that come later no longer count toward a phase.
		for _, c := range l.conns {
			for i := range c.chk.inflight {
				c.chk.inflight[i].Sent = -1
			}
		}
		p.done <- res
	}
}

// startPhase begins a measured interval on the loop goroutine.
func (l *loop) startPhase(kind string, d time.Duration, rate float64, done chan<- phaseResult) {
	now := l.w.now()
	p := &phase{
		kind: kind, deadline: now + int64(d), sending: true,
		hist: NewHist(), done: done,
	}
	p.graceEnd = p.deadline + int64(3*time.Second)
	l.ph = p
	switch kind {
	case "echo":
		for _, c := range l.conns {
			for range c.workers {
				l.request(c, now, true)
			}
		}
	case "rate":
		for _, c := range l.conns {
			if !c.slow {
				p.targets = append(p.targets, c)
			}
		}
		if rate > 0 {
			p.interval = max(int64(float64(time.Second)/rate), 1)
			p.nextSend = now
		}
	}
	l.tick(now)
}
