package netpoll

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// ackHandler records Acked in OnClose.
type ackHandler struct {
	*echoHandler
	acked chan uint64
}

func (h *ackHandler) OnClose(c *Conn, code CloseCode, err error) {
	h.acked <- c.Acked()
	h.echoHandler.OnClose(c, code, err)
}

// waitAcked returns what OnClose found acknowledged.
func (h *ackHandler) waitAcked(t *testing.T) uint64 {
	t.Helper()
	select {
	case acked := <-h.acked:
		return acked
	case <-time.After(10 * time.Second):
		t.Fatal("no OnClose")
		return 0
	}
}

// sendTaggedUntilCut sends frames of size bytes tagged 1, 2, … (the tag
// also in their first 8 bytes) until the queue bound cuts the connection,
// and returns the last tag sent.
func sendTaggedUntilCut(sc *Conn, size int) uint64 {
	payload := make([]byte, size)
	var sent uint64
	for tag := uint64(1); ; tag++ {
		binary.BigEndian.PutUint64(payload, tag)
		if err := sc.SendTagged(payload, tag); err != nil {
			return sent
		}
		sent = tag
	}
}

// dialSmallBuffer connects with a 4 KiB receive buffer (set before the
// handshake, so the window stays small) and upgrades.
func dialSmallBuffer(t *testing.T, addr string) *wsClient {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := io.WriteString(nc, upgradeRequest); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	return &wsClient{t: t, nc: nc, br: br}
}

// TestAckedSlowReader: tagged frames are sent to a peer that does not read
// until the queue bound cuts it (4008). Acked must name exactly frames the
// peer can still read: every frame up to Acked is readable after the
// close, and frames the peer never got are above it.
func TestAckedSlowReader(t *testing.T) {
	h := &ackHandler{echoHandler: newEchoHandler(), acked: make(chan uint64, 1)}
	_, addr := startEngine(t, Config{OutboundQueueBytes: 64 << 10, CloseWait: 300 * time.Millisecond}, h, acceptAll{}, nil)
	c := dialSmallBuffer(t, addr)
	sc := h.waitOpen(t)
	sent := sendTaggedUntilCut(sc, 6000)
	acked := h.waitAcked(t)
	if acked == 0 || acked >= sent {
		t.Fatalf("Acked = %d of %d sent: want some, not all", acked, sent)
	}
	// The peer reads now: everything up to Acked must be there, in order.
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got uint64
	for {
		hd, p, err := c.readFrame()
		if err != nil || hd.OpCode != ws.OpText {
			break
		}
		tag := binary.BigEndian.Uint64(p)
		if tag != got+1 {
			t.Fatalf("frame %d after %d", tag, got)
		}
		got = tag
	}
	if got < acked {
		t.Fatalf("peer read frames up to %d, but Acked said %d", got, acked)
	}
	t.Logf("sent %d, acked %d, read by the peer %d", sent, acked, got)
}

// TestNotifyDrained: the callback runs at once when the queue is already
// under the threshold, and after the peer reads when it is not.
func TestNotifyDrained(t *testing.T) {
	h := newEchoHandler()
	_, addr := startEngine(t, Config{OutboundQueueBytes: 4 << 20}, h, acceptAll{}, nil)
	c := dialSmallBuffer(t, addr)
	sc := h.waitOpen(t)
	now := false
	sc.NotifyDrained(0, func() { now = true })
	if !now {
		t.Fatal("NotifyDrained on an empty queue did not call at once")
	}
	payload := make([]byte, 16<<10)
	for sc.Queued() < 256<<10 {
		if err := sc.Send(payload); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan int, 1)
	sc.NotifyDrained(1000, func() { done <- sc.Queued() })
	select {
	case <-done:
		t.Fatal("called while the queue is full")
	case <-time.After(100 * time.Millisecond):
	}
	go func() {
		for {
			if _, _, err := c.readFrame(); err != nil {
				return
			}
		}
	}()
	select {
	case q := <-done:
		if q > 1000 {
			t.Fatalf("called with %d queued, want <= 1000", q)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("NotifyDrained never called")
	}
}

// TestAckedAfterFullRead: a peer that reads everything acknowledges every
// tagged frame, and an untagged frame does not count.
func TestAckedAfterFullRead(t *testing.T) {
	h := &ackHandler{echoHandler: newEchoHandler(), acked: make(chan uint64, 1)}
	_, addr := startEngine(t, Config{CloseWait: 300 * time.Millisecond}, h, acceptAll{}, nil)
	c := dialWS(t, addr)
	sc := h.waitOpen(t)
	for tag := uint64(1); tag <= 200; tag++ {
		if err := sc.SendTagged([]byte("x"), tag); err != nil {
			t.Fatal(err)
		}
	}
	_ = sc.Send([]byte("untagged"))
	for range 201 {
		if _, _, err := c.readFrame(); err != nil {
			t.Fatal(err)
		}
	}
	c.write(closeFrame(1000, "")) // its segment acknowledges everything read
	select {
	case acked := <-h.acked:
		if acked != 200 {
			t.Fatalf("Acked = %d, want 200", acked)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no OnClose")
	}
}

// TestAckedReadingPeerExact: the peer reads slowly, all the while, so that
// the close (4008 after the close wait) finds frames on their way or
// received but not yet acknowledged. Acked must then be exact in both
// directions: the peer reads every frame up to Acked (none lost) and none
// above it (a v1 resume would replay those: a duplicate).
func TestAckedReadingPeerExact(t *testing.T) {
	for i := range 8 {
		h := &ackHandler{echoHandler: newEchoHandler(), acked: make(chan uint64, 1)}
		_, addr := startEngine(t, Config{OutboundQueueBytes: 64 << 10, CloseWait: 100 * time.Millisecond}, h, acceptAll{}, nil)
		c := dialSmallBuffer(t, addr)
		sc := h.waitOpen(t)
		read := make(chan uint64, 1)
		go func() {
			// Slow, steady reads: a few KiB every millisecond.
			var got uint64
			defer func() { read <- got }()
			_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				hd, p, err := c.readFrame()
				if err != nil || hd.OpCode != ws.OpText {
					return
				}
				got = binary.BigEndian.Uint64(p)
				time.Sleep(time.Millisecond)
			}
		}()
		sent := sendTaggedUntilCut(sc, 3000)
		acked := h.waitAcked(t)
		got := <-read
		t.Logf("run %d: sent %d, acked %d, read by the peer %d", i, sent, acked, got)
		if got != acked {
			t.Errorf("run %d: the peer read frames up to %d, Acked said %d", i, got, acked)
		}
	}
}

// TestBytesAckedMatchesOutq: the periodic prune's one reading
// (tcpi_bytes_acked) is the offset ackState derives from SIOCOUTQ: never
// ahead of it while a slow peer reads (read first, it can only be
// behind), and equal to everything written once the peer has read and
// acknowledged all (no SYN counted: the engine's sockets are accepted).
func TestBytesAckedMatchesOutq(t *testing.T) {
	h := &ackHandler{echoHandler: newEchoHandler(), acked: make(chan uint64, 1)}
	_, addr := startEngine(t, Config{OutboundQueueBytes: 1 << 20, CloseWait: 100 * time.Millisecond}, h, acceptAll{}, nil)
	c := dialSmallBuffer(t, addr)
	sc := h.waitOpen(t)
	const frames = 400
	done := make(chan error, 1)
	go func() {
		for range frames {
			if _, _, err := c.readFrame(); err != nil {
				done <- err
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
		done <- nil
	}()
	payload := make([]byte, 1000)
	for tag := uint64(1); tag <= frames; tag++ {
		if err := sc.SendTagged(payload, tag); err != nil {
			t.Fatal(err)
		}
	}
	check := func() (tcp, outq int64) {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		tcp, ok1 := sc.bytesAcked()
		outq, ok2 := sc.ackedOffset()
		if !ok1 || !ok2 {
			t.Fatal("no TCP_INFO or SIOCOUTQ reading")
		}
		return tcp, outq
	}
	samples := 0
	for waiting := true; waiting; samples++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			waiting = false
		default:
		}
		if tcp, outq := check(); tcp > outq {
			t.Fatalf("tcpi_bytes_acked offset %d ahead of SIOCOUTQ's %d", tcp, outq)
		}
		time.Sleep(200 * time.Microsecond)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		tcp, outq := check()
		written := int64(sc.bytesOut.Load())
		if tcp == written && outq == written {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a full read: tcpi_bytes_acked offset %d, SIOCOUTQ's %d, written %d", tcp, outq, written)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d samples while the peer read", samples)
}

// TestFrameHeaderLen: SendTagged's mark, made before the write, ends
// where the frame appendFrameHeader writes ends.
func TestFrameHeaderLen(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 0xFFFF, 0x10000, 1 << 20} {
		if got, want := frameHeaderLen(n), len(appendFrameHeader(nil, opText, n)); got != want {
			t.Errorf("frameHeaderLen(%d) = %d, want %d", n, got, want)
		}
	}
}

// TestTaggedMarkEnds: each mark ends where its frame ends in the output
// stream, whether the frame went out at once, partly, or was queued
// behind others (the peer does not read; sizes cross the header forms).
func TestTaggedMarkEnds(t *testing.T) {
	h := &ackHandler{echoHandler: newEchoHandler(), acked: make(chan uint64, 1)}
	_, addr := startEngine(t, Config{OutboundQueueBytes: 16 << 20, CloseWait: 100 * time.Millisecond}, h, acceptAll{}, nil)
	_ = dialSmallBuffer(t, addr)
	sc := h.waitOpen(t)
	sc.mu.Lock()
	end := int64(sc.bytesOut.Load())
	if sc.wq != nil {
		end += int64(sc.wq.size)
	}
	sc.mu.Unlock()
	var want []int64
	for i, n := range []int{1, 125, 126, 300, 0xFFFF, 0x10000, 200000, 5, 2 << 20, 9, 3 << 20, 7} {
		if err := sc.SendTagged(make([]byte, n), uint64(i+1)); err != nil {
			t.Fatal(err)
		}
		end += int64(len(appendFrameHeader(nil, opText, n)) + n)
		want = append(want, end)
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.wq == nil {
		t.Fatal("nothing queued: the test wants frames behind a queue")
	}
	if got := int64(sc.bytesOut.Load()) + int64(sc.wq.size); got != end {
		t.Fatalf("stream at %d, want %d", got, end)
	}
	marks := sc.dv.marks
	if len(marks) != len(want) {
		t.Fatalf("%d marks, want %d", len(marks), len(want))
	}
	for i, m := range marks {
		if m.end != want[i] || m.tag != uint64(i+1) {
			t.Errorf("mark %d = %+v, want end %d tag %d", i, m, want[i], i+1)
		}
	}
}
