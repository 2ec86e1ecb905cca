package netpoll

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// epollMask returns the events c's socket is registered for in its
// poller's epoll instance, as the kernel reports them in
// /proc/self/fdinfo, and whether it is registered at all.
func epollMask(t *testing.T, c *Conn) (uint32, bool) {
	t.Helper()
	c.mu.Lock()
	fd, epfd := int(c.fd), c.e.pollerOf(c).epfd
	c.mu.Unlock()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", epfd))
	if err != nil {
		t.Fatalf("fdinfo: %v", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		// tfd: <fd> events: <hex mask> data: ...
		if len(f) < 4 || f[0] != "tfd:" || f[2] != "events:" || f[1] != strconv.Itoa(fd) {
			continue
		}
		m, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil {
			t.Fatalf("fdinfo line %q: %v", line, err)
		}
		return uint32(m), true
	}
	return 0, false
}

// TestEPOLLOUTOnDemand: a connection whose writes all complete is
// registered for reads only (a socket registered writable reports EPOLLOUT
// at once: an event, and a poller pass, for nothing); the first write that
// leaves bytes queued adds EPOLLOUT, and the queue then drains as the peer
// reads, every frame arriving whole and in order.
func TestEPOLLOUTOnDemand(t *testing.T) {
	h := newEchoHandler()
	_, addr := startEngine(t, Config{OutboundQueueBytes: 8 << 20}, h, nil, nil)
	c := dialSmallBuffer(t, addr)
	sc := h.waitOpen(t)

	// An echo round trip: the writes complete at once.
	c.write(text("hello"))
	if _, p, err := c.readFrame(); err != nil || string(p) != "hello" {
		t.Fatalf("echo: %q %v", p, err)
	}
	m, ok := epollMask(t, sc)
	if !ok {
		t.Fatal("connection not registered with its poller")
	}
	if m&unix.EPOLLIN == 0 || m&unix.EPOLLRDHUP == 0 || m&unix.EPOLLET == 0 {
		t.Fatalf("events %#x: want EPOLLIN|EPOLLRDHUP|EPOLLET", m)
	}
	if m&unix.EPOLLOUT != 0 {
		t.Fatalf("events %#x: EPOLLOUT registered before any write waited", m)
	}

	// The peer does not read: the socket fills and frames queue.
	payload := make([]byte, 16<<10)
	sent := 0
	for sc.Queued() < 256<<10 {
		payload[0] = byte(sent)
		if err := sc.Send(payload); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	if m, _ := epollMask(t, sc); m&unix.EPOLLOUT == 0 {
		t.Fatalf("events %#x: bytes queued, EPOLLOUT not registered", m)
	}

	// The peer reads now: only EPOLLOUT brings the rest out.
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range sent {
		hd, p, err := c.readFrame()
		if err != nil {
			t.Fatalf("frame %d of %d: %v", i, sent, err)
		}
		if hd.OpCode != ws.OpText || len(p) != len(payload) || p[0] != byte(i) {
			t.Fatalf("frame %d: op %v, %d bytes, first %d", i, hd.OpCode, len(p), p[0])
		}
	}
	eventually(t, 5*time.Second, "queue drained", func() bool { return sc.Queued() == 0 })
}

// TestNoDelayInherited: the listener's TCP_NODELAY is found on accepted
// sockets, so they need no setsockopt of their own; a listener without it
// gives sockets that get their own.
func TestNoDelayInherited(t *testing.T) {
	accept := func(t *testing.T, set bool) (int, *noDelay) {
		t.Helper()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		rc, err := ln.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var lfd int
		_ = rc.Control(func(fd uintptr) { lfd = int(fd) })
		nd := &noDelay{never: true}
		if set {
			nd = newNoDelay(lfd)
		}
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		var cfd int
		eventually(t, 5*time.Second, "accepted", func() bool {
			var aerr error
			_ = rc.Control(func(fd uintptr) { cfd, _, _, aerr = accept4(int(fd)) })
			return aerr == nil
		})
		t.Cleanup(func() { unix.Close(cfd) })
		return cfd, nd
	}
	noDelayOf := func(t *testing.T, fd int) int {
		t.Helper()
		v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	fd, nd := accept(t, true)
	if noDelayOf(t, fd) == 0 {
		t.Fatal("the listener's TCP_NODELAY did not reach the accepted socket")
	}
	nd.apply(fd)
	if !nd.inherited {
		t.Fatal("apply did not notice the inherited option")
	}

	// A backlog queued before the listener had the option: past the
	// first ndChecks connections, every ndChecks-th is checked again, so
	// the option is found inherited once the backlog is drained.
	fd, _ = accept(t, true)
	late := &noDelay{seen: ndChecks}
	late.apply(fd)
	if late.inherited {
		t.Fatal("connection ndChecks+1 was checked: only every ndChecks-th is after the first ndChecks")
	}
	late.seen = 2*ndChecks - 1
	late.apply(fd)
	if !late.inherited {
		t.Fatal("connection 2*ndChecks was not checked again: a long backlog would cost every later connection its own setsockopt")
	}

	fd, nd = accept(t, false)
	if noDelayOf(t, fd) != 0 {
		t.Fatal("socket of a plain listener has TCP_NODELAY")
	}
	nd.apply(fd)
	if nd.inherited || noDelayOf(t, fd) == 0 {
		t.Fatalf("apply without an inherited option: inherited %v, TCP_NODELAY %d", nd.inherited, noDelayOf(t, fd))
	}
}

// TestPeerFINAfterCloseFrame: a peer that sends its close frame and its FIN
// together gets the close frame answered, and OnClose sees a clean 1000 (the
// end is known from the FIN, without the read that returns 0).
func TestPeerFINAfterCloseFrame(t *testing.T) {
	h := newEchoHandler()
	_, addr := startEngine(t, Config{}, h, nil, nil)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	br := bufio.NewReader(nc)
	if _, err := nc.Write([]byte(upgradeRequest)); err != nil {
		t.Fatal(err)
	}
	c := &wsClient{t: t, nc: nc, br: br}
	h.waitOpen(t)
	if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, "101") {
		t.Fatalf("status line %q: %v", line, err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
	}
	c.write(append(text("last"), closeFrame(1000, "bye")...))
	if err := nc.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, p, err := c.readFrame(); err != nil || string(p) != "last" {
		t.Fatalf("echo before the close: %q %v", p, err)
	}
	if hd, _, err := c.readFrame(); err != nil || hd.OpCode != ws.OpClose {
		t.Fatalf("want the close frame answered: %v %v", hd.OpCode, err)
	}
	ev := h.waitClose(t)
	if ev.code != CloseNormal || ev.err != nil {
		t.Fatalf("OnClose = %d %v, want 1000 and no error", ev.code, ev.err)
	}
	c.expectEOF()
}

// epollData returns the data word of fd's registration in epfd, as
// /proc/self/fdinfo shows it.
func epollData(t *testing.T, epfd, fd int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", epfd))
	if err != nil {
		t.Fatalf("fdinfo: %v", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		// tfd: <fd> events: <hex mask> data: <hex data> ...
		if len(f) < 6 || f[0] != "tfd:" || f[4] != "data:" || f[1] != strconv.Itoa(fd) {
			continue
		}
		d, err := strconv.ParseUint(f[5], 16, 64)
		if err != nil {
			t.Fatalf("fdinfo line %q: %v", line, err)
		}
		return d
	}
	t.Fatalf("fd %d not registered in epoll fd %d", fd, epfd)
	return 0
}

// TestStaleEventDropped: an event of a closed connection, fetched in a
// batch before its fd number went to a new connection, is not taken as the
// new connection's: the registration carries the connection's tag next to
// the fd, and an event with another tag finds no connection. (Taken as the
// new connection's, the old peer's EPOLLRDHUP made readFrames end the new
// connection at its first short read.)
func TestStaleEventDropped(t *testing.T) {
	h := newEchoHandler()
	_, addr := startEngine(t, Config{Pollers: 1}, h, nil, nil)
	a := dialWS(t, addr)
	sa := h.waitOpen(t)
	sa.mu.Lock()
	fdA := int(sa.fd)
	sa.mu.Unlock()
	tagA := epollTag(sa)
	a.nc.Close()
	h.waitClose(t)

	b := dialWS(t, addr)
	defer b.nc.Close()
	sb := h.waitOpen(t)
	sb.mu.Lock()
	fdB := int(sb.fd)
	sb.mu.Unlock()
	tagB := epollTag(sb)
	if tagA == tagB {
		t.Fatalf("two connections with the tag %#x", tagA)
	}
	p := sb.e.pollerOf(sb)
	if d := epollData(t, p.epfd, fdB); d != uint64(tagB)<<32|uint64(fdB) {
		t.Fatalf("registration data %#x, want tag %#x and fd %d", d, tagB, fdB)
	}
	if c := p.connOf(&unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fdB), Pad: int32(tagB)}); c != sb {
		t.Fatalf("the connection's own event found %p, want %p", c, sb)
	}
	if c := p.connOf(&unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fdB), Pad: int32(tagA)}); c != nil {
		t.Fatalf("an event of the connection that had fd %d (now %d) was taken as the new one's", fdA, fdB)
	}
	// The new connection still works.
	b.write(text("still here"))
	if _, p, err := b.readFrame(); err != nil || string(p) != "still here" {
		t.Fatalf("echo: %q %v", p, err)
	}
}

// TestAcceptedNoDelay: every connection the engine accepts has
// TCP_NODELAY, whether it got it from the listener or by its own
// setsockopt (the first connections are the ones checked).
func TestAcceptedNoDelay(t *testing.T) {
	h := newEchoHandler()
	_, addr := startEngine(t, Config{}, h, nil, nil)
	for i := range 3 {
		c := dialWS(t, addr)
		sc := h.waitOpen(t)
		sc.mu.Lock()
		v, err := unix.GetsockoptInt(int(sc.fd), unix.IPPROTO_TCP, unix.TCP_NODELAY)
		sc.mu.Unlock()
		if err != nil || v == 0 {
			t.Fatalf("connection %d: TCP_NODELAY %d, %v", i, v, err)
		}
		c.nc.Close()
	}
}

// blockingHandler is an echoHandler whose OnMessage blocks the poller on
// "block" until release is closed.
type blockingHandler struct {
	*echoHandler
	blocked chan struct{}
	release chan struct{}
}

func (h *blockingHandler) OnMessage(c *Conn, p []byte) {
	if string(p) == "block" {
		close(h.blocked)
		<-h.release
		return
	}
	h.echoHandler.OnMessage(c, p)
}

// TestHangupCarriedOverBudget: a peer that sent more than one pass's read
// budget (maxReadPerPass) and then its FIN (no close frame) is read to its
// end and closed, without waiting for the heartbeat. The FIN raises one
// edge only; the pass that the budget cuts must carry it over to the next,
// which otherwise stops at its short read and never sees the end.
func TestHangupCarriedOverBudget(t *testing.T) {
	h := &blockingHandler{echoHandler: newEchoHandler(), blocked: make(chan struct{}), release: make(chan struct{})}
	// One poller, so that a handler blocked on it holds every connection's
	// events back; a long heartbeat, so that only reading to the end can
	// close the peer within the test.
	e, err := New(Config{Pollers: 1, Heartbeat: time.Minute}, h, nil, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	// The accepted sockets inherit a receive buffer that holds the whole
	// burst while the poller is blocked (the default would stop the
	// sender near 128 KiB, under the budget).
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		_ = rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20) })
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.Serve(ln) }()
	defer func() {
		select {
		case <-h.release:
		default:
			close(h.release)
		}
		_ = e.Close()
		<-served
	}()

	blocker := dialWS(t, ln.Addr().String())
	h.waitOpen(t)
	peer := dialWS(t, ln.Addr().String())
	h.waitOpen(t)
	peer.write(text("hello"))
	if _, p, err := peer.readFrame(); err != nil || string(p) != "hello" {
		t.Fatalf("echo before the burst: %q %v", p, err)
	}

	blocker.write(text("block"))
	select {
	case <-h.blocked:
	case <-time.After(5 * time.Second):
		t.Fatal("the poller did not take the blocking message")
	}
	// Past the budget: 40 frames of 8 KiB (320 KiB), then the FIN.
	msg := strings.Repeat("x", 8<<10)
	var burst []byte
	for range 40 {
		burst = append(burst, text(msg)...)
	}
	if len(burst) <= maxReadPerPass {
		t.Fatalf("burst of %d bytes does not exceed the read budget %d", len(burst), maxReadPerPass)
	}
	peer.write(burst)
	if err := peer.nc.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// Everything, FIN included, is in the server's receive queue before
	// the poller runs again: the client's send queue is empty.
	prc, err := peer.nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the burst and the FIN sent", func() bool {
		outq := -1
		_ = prc.Control(func(fd uintptr) { outq, _ = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
		return outq == 0
	})
	close(h.release)

	ev := h.waitClose(t) // 5 s; the heartbeat would take two minutes
	if ev.err == ErrHeartbeatTimeout {
		t.Fatalf("peer closed by the heartbeat, not by its FIN: %v", ev.err)
	}
}

// TestEpollTagSpread: connections accepted a multiple of 4.096 s apart
// (ids whose low 32 bits agree: accept ms << idSeqBits) get different
// tags, and so do neighbours in one millisecond.
func TestEpollTagSpread(t *testing.T) {
	seen := map[uint32]uint64{}
	base := uint64(time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC).UnixMilli())
	for k := range uint64(2000) {
		for seq := range uint64(4) {
			id := (base+k*(1<<(32-idSeqBits)))<<idSeqBits + seq
			if uint32(id) != uint32(base<<idSeqBits+seq) {
				t.Fatalf("test setup: id %#x does not share its low 32 bits", id)
			}
			tag := epollTag(&Conn{id: id})
			if other, dup := seen[tag]; dup {
				t.Fatalf("ids %#x and %#x share the tag %#x", other, id, tag)
			}
			seen[tag] = id
		}
	}
}
