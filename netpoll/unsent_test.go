package netpoll

import (
	"time"

	"bytes"
	"fmt"
	"github.com/gobwas/ws"
	"testing"
)

// TestQueueMarksUnsent drives the outbound queue directly: frames pushed
// whole, a frame whose head was written before it was queued, and writes
// that cut frames in two. Unsent returns exactly the payloads of the text
// frames not written completely.
func TestQueueMarksUnsent(t *testing.T) {
	var bufs bufPool
	q := &outQueue{}
	var payloads [][]byte
	push := func(p []byte, alreadySent int) {
		h := appendFrameHeader(nil, opText, len(p))
		frame := append(h, p...)
		rest := frame[alreadySent:]
		q.push(&bufs, rest)
		m := textMark{start: q.pushed - int64(len(p)), end: q.pushed}
		if m.start < q.sent {
			m.copy = append([]byte(nil), p...)
		}
		q.marks = append(q.marks, m)
		payloads = append(payloads, p)
	}
	// First frame: its header and 3 payload bytes went out before queueing.
	push([]byte("first-payload"), 5)
	for i := 0; i < 5; i++ {
		push(bytes.Repeat([]byte{byte('a' + i)}, 3000+i), 0)
	}
	total := q.size
	for _, step := range []int{7, 1, 2990, 4000, 3} {
		if step > q.size {
			break
		}
		q.consume(&bufs, step)
		// Which frames are still not completely written?
		var want [][]byte
		pos := int64(-5) // queue position of the first frame's first byte
		for _, p := range payloads {
			end := pos + int64(len(appendFrameHeader(nil, opText, len(p)))+len(p))
			if end > q.sent {
				want = append(want, p)
			}
			pos = end
		}
		got := q.unsent()
		if len(got) != len(want) {
			t.Fatalf("after consuming to %d of %d: %d unsent, want %d", q.sent, total, len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("after consuming to %d: unsent[%d] = %s, want %s", q.sent, i, short(got[i]), short(want[i]))
			}
		}
	}
	q.release(&bufs)
}

func short(b []byte) string {
	if len(b) > 20 {
		return fmt.Sprintf("%q...(%d bytes)", b[:20], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// unsentHandler records what Unsent returns in OnClose.
type unsentHandler struct {
	*echoHandler
	unsent chan [][]byte
}

func (h *unsentHandler) OnClose(c *Conn, code CloseCode, err error) {
	h.unsent <- c.Unsent()
	h.echoHandler.OnClose(c, code, err)
}

// TestUnsentAfterSlowReaderCut: a peer that never reads fills the socket
// and the queue (4008); when the close wait expires the connection is cut.
// Every message Send accepted is either read by the peer afterwards or
// returned by Unsent in OnClose: none lost, none in both.
func TestUnsentAfterSlowReaderCut(t *testing.T) {
	h := &unsentHandler{echoHandler: newEchoHandler(), unsent: make(chan [][]byte, 1)}
	cfg := Config{OutboundQueueBytes: 64 << 10, CloseWait: 300 * time.Millisecond, Heartbeat: time.Minute}
	_, addr := startEngine(t, cfg, h, acceptAll{}, nil)
	cl := dialWS(t, addr)
	c := h.waitOpen(t)
	var accepted []string
	for i := 0; ; i++ {
		msg := fmt.Sprintf(`{"type":"result","id":"%d","data":"%s"}`, i, bytes.Repeat([]byte("x"), 4000))
		if err := c.Send([]byte(msg)); err != nil {
			break
		}
		accepted = append(accepted, msg)
		if i > 100000 {
			t.Fatal("Send never hit the bound")
		}
	}
	var unsent [][]byte
	select {
	case unsent = <-h.unsent:
	case <-time.After(10 * time.Second):
		t.Fatal("no OnClose after the close wait")
	}
	// The peer now reads what reached it: whole frames, then the end.
	_ = cl.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var read []string
	for {
		hd, p, err := cl.readFrame()
		if err != nil || hd.OpCode != ws.OpText {
			break
		}
		read = append(read, string(p))
	}
	got := append([]string(nil), read...)
	for _, u := range unsent {
		got = append(got, string(u))
	}
	if len(unsent) == 0 {
		t.Fatalf("nothing unsent: the test did not cut a connection with frames queued (read %d of %d)", len(read), len(accepted))
	}
	if len(got) != len(accepted) {
		t.Fatalf("read %d + unsent %d = %d, want the %d accepted", len(read), len(unsent), len(got), len(accepted))
	}
	for i := range accepted {
		if got[i] != accepted[i] {
			t.Fatalf("message %d: got %s, want %s (order: read then unsent)", i, short([]byte(got[i])), short([]byte(accepted[i])))
		}
	}
	t.Logf("accepted %d, read by the peer %d, handed back unsent %d", len(accepted), len(read), len(unsent))
}
