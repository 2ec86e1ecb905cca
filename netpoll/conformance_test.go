package netpoll

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// want is one frame the server must send. For close frames, code 0 means an
// empty payload.
type want struct {
	op      ws.OpCode
	payload []byte
	code    uint16
}

func wText(s string) want     { return want{op: ws.OpText, payload: []byte(s)} }
func wPong(p []byte) want     { return want{op: ws.OpPong, payload: p} }
func wClose(code uint16) want { return want{op: ws.OpClose, code: code} }

// confCase is one Autobahn-style case: frames the client sends, frames the
// server must answer with, in order. When split > 0, modes that send frame by
// frame or octet by octet send frames[:split] first and must receive
// want[:early] before sending the rest (answered at once, fail-fast); with
// stop, the rest is never sent.
type confCase struct {
	name   string
	frames [][]byte
	want   []want
	split  int
	early  int
	stop   bool
}

func rep(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// conformanceCases lists the Autobahn groups 1-7 and 10.1.1.
func conformanceCases() []confCase {
	var cs []confCase
	add := func(c confCase) { cs = append(cs, c) }
	// 1: text payloads.
	for _, n := range []int{0, 125, 126, 127, 128, 65535, 65536} {
		p := strings.Repeat("*", n)
		add(confCase{name: fmt.Sprintf("1.1/text-%d", n), frames: [][]byte{text(p)}, want: []want{wText(p)}})
	}
	// 2: ping/pong.
	add(confCase{name: "2.1/ping-empty", frames: [][]byte{frame(true, 0, ws.OpPing, nil)}, want: []want{wPong(nil)}})
	add(confCase{name: "2.2/ping-text", frames: [][]byte{frame(true, 0, ws.OpPing, []byte("Hello, world!"))}, want: []want{wPong([]byte("Hello, world!"))}})
	bin := []byte{0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff}
	add(confCase{name: "2.3/ping-binary", frames: [][]byte{frame(true, 0, ws.OpPing, bin)}, want: []want{wPong(bin)}})
	add(confCase{name: "2.4/ping-125", frames: [][]byte{frame(true, 0, ws.OpPing, rep(0xfe, 125))}, want: []want{wPong(rep(0xfe, 125))}})
	add(confCase{name: "2.5/ping-126", frames: [][]byte{frame(true, 0, ws.OpPing, rep(0xfe, 126))}, want: []want{wClose(1002)}})
	add(confCase{name: "2.7/unsolicited-pong", frames: [][]byte{frame(true, 0, ws.OpPong, nil), closeFrame(1000, "")}, want: []want{wClose(1000)}})
	add(confCase{name: "2.8/unsolicited-pong-payload", frames: [][]byte{frame(true, 0, ws.OpPong, []byte("unsolicited")), closeFrame(1000, "")}, want: []want{wClose(1000)}})
	add(confCase{name: "2.9/pong-then-ping", frames: [][]byte{frame(true, 0, ws.OpPong, []byte("x")), frame(true, 0, ws.OpPing, []byte("ping"))}, want: []want{wPong([]byte("ping"))}})
	var pings [][]byte
	var pongs []want
	for i := range 10 {
		p := []byte(fmt.Sprintf("payload-%d", i))
		pings = append(pings, frame(true, 0, ws.OpPing, p))
		pongs = append(pongs, wPong(p))
	}
	add(confCase{name: "2.10/ten-pings", frames: pings, want: pongs})
	// 3: reserved bits.
	add(confCase{name: "3.1/rsv1-text", frames: [][]byte{frame(true, 4, ws.OpText, []byte("Hello"))}, want: []want{wClose(1002)}})
	add(confCase{name: "3.2/rsv2-after-echo", frames: [][]byte{text("Hello"), frame(true, 2, ws.OpText, []byte("Hello")), frame(true, 0, ws.OpPing, nil)}, want: []want{wText("Hello"), wClose(1002)}})
	add(confCase{name: "3.3/rsv3", frames: [][]byte{text("Hello"), frame(true, 6, ws.OpText, []byte("Hello"))}, want: []want{wText("Hello"), wClose(1002)}})
	add(confCase{name: "3.5/rsv-binary", frames: [][]byte{frame(true, 5, ws.OpBinary, []byte{1, 2})}, want: []want{wClose(1002)}})
	add(confCase{name: "3.6/rsv-ping", frames: [][]byte{frame(true, 3, ws.OpPing, []byte("x"))}, want: []want{wClose(1002)}})
	add(confCase{name: "3.7/rsv-close", frames: [][]byte{frame(true, 7, ws.OpClose, nil)}, want: []want{wClose(1002)}})
	// 4: reserved opcodes.
	for _, op := range []ws.OpCode{3, 4, 5, 6, 7, 11, 12, 13, 14, 15} {
		add(confCase{name: fmt.Sprintf("4/opcode-%d", op), frames: [][]byte{frame(true, 0, op, nil)}, want: []want{wClose(1002)}})
		add(confCase{name: fmt.Sprintf("4/opcode-%d-after-echo", op), frames: [][]byte{text("Hello"), frame(true, 0, op, []byte("reserved")), frame(true, 0, ws.OpPing, nil)}, want: []want{wText("Hello"), wClose(1002)}})
	}
	// 5: fragmentation.
	add(confCase{name: "5.1/ping-fragmented", frames: [][]byte{frame(false, 0, ws.OpPing, []byte("frag1")), frame(true, 0, ws.OpContinuation, []byte("frag2"))}, want: []want{wClose(1002)}})
	add(confCase{name: "5.2/pong-fragmented", frames: [][]byte{frame(false, 0, ws.OpPong, []byte("frag1")), frame(true, 0, ws.OpContinuation, []byte("frag2"))}, want: []want{wClose(1002)}})
	add(confCase{name: "5.3/text-two-fragments", frames: [][]byte{frame(false, 0, ws.OpText, []byte("frag1")), frame(true, 0, ws.OpContinuation, []byte("frag2"))}, want: []want{wText("frag1frag2")}})
	add(confCase{name: "5.6/ping-between-fragments", frames: [][]byte{frame(false, 0, ws.OpText, []byte("frag1")), frame(true, 0, ws.OpPing, []byte("ping")), frame(true, 0, ws.OpContinuation, []byte("frag2"))},
		want: []want{wPong([]byte("ping")), wText("frag1frag2")}, split: 2, early: 1})
	add(confCase{name: "5.9/continuation-without-start", frames: [][]byte{frame(true, 0, ws.OpContinuation, []byte("non-continuation payload")), text("Hello")}, want: []want{wClose(1002)}})
	add(confCase{name: "5.12/continuation-no-fin-without-start", frames: [][]byte{frame(false, 0, ws.OpContinuation, []byte("x"))}, want: []want{wClose(1002)}})
	add(confCase{name: "5.15/continuation-after-message", frames: [][]byte{frame(false, 0, ws.OpText, []byte("fragment1")), frame(true, 0, ws.OpContinuation, []byte("fragment2")), frame(false, 0, ws.OpContinuation, []byte("fragment3")), frame(true, 0, ws.OpContinuation, []byte("fragment4"))},
		want: []want{wText("fragment1fragment2"), wClose(1002)}})
	add(confCase{name: "5.18/new-text-inside-fragmented", frames: [][]byte{frame(false, 0, ws.OpText, []byte("fragment1")), frame(true, 0, ws.OpText, []byte("fragment2"))}, want: []want{wClose(1002)}})
	add(confCase{name: "5.19/pings-between-many-fragments", frames: [][]byte{
		frame(false, 0, ws.OpText, []byte("f1")), frame(false, 0, ws.OpContinuation, []byte("f2")), frame(true, 0, ws.OpPing, []byte("p1")),
		frame(false, 0, ws.OpContinuation, []byte("f3")), frame(true, 0, ws.OpPing, []byte("p2")), frame(true, 0, ws.OpContinuation, []byte("f4")),
	}, want: []want{wPong([]byte("p1")), wPong([]byte("p2")), wText("f1f2f3f4")}, split: 5, early: 2})
	// 6: UTF-8.
	add(confCase{name: "6.1/empty-fragments", frames: [][]byte{frame(false, 0, ws.OpText, nil), frame(false, 0, ws.OpContinuation, nil), frame(true, 0, ws.OpContinuation, nil)}, want: []want{wText("")}})
	valid := "Hello-µ@ßöäüàá-UTF-8!!"
	add(confCase{name: "6.2/valid-utf8", frames: [][]byte{text(valid)}, want: []want{wText(valid)}})
	for i := 1; i < len(valid); i += 3 {
		add(confCase{name: fmt.Sprintf("6.2/valid-split-at-%d", i), frames: [][]byte{frame(false, 0, ws.OpText, []byte(valid[:i])), frame(true, 0, ws.OpContinuation, []byte(valid[i:]))}, want: []want{wText(valid)}})
	}
	for _, s := range []string{"\u007f", "\u0080", "\u07ff", "\u0800", "\uffff", "\U00010000", "\U0010ffff", "κόσμε"} {
		add(confCase{name: fmt.Sprintf("6.2/boundary-%x", s), frames: [][]byte{text(s)}, want: []want{wText(s)}})
		if len(s) > 1 {
			add(confCase{name: fmt.Sprintf("6.2/boundary-split-%x", s), frames: [][]byte{frame(false, 0, ws.OpText, []byte(s[:1])), frame(false, 0, ws.OpContinuation, []byte(s[1:len(s)-1])), frame(true, 0, ws.OpContinuation, []byte(s[len(s)-1:]))}, want: []want{wText(s)}})
		}
	}
	for _, bad := range []string{"\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xed\xa0\x80", "\xed\xbf\xbf", "\xf4\x90\x80\x80", "\xf5", "\xfe", "\xff", "\x80", "\xce\xba\xe1\xbd", "κόσμε\xed\xa0\x80edited"} {
		add(confCase{name: fmt.Sprintf("6.3/invalid-%x", bad), frames: [][]byte{text(bad)}, want: []want{wClose(1007)}})
	}
	// Fail-fast: the invalid second fragment closes 1007 before the third is sent.
	add(confCase{name: "6.4.1/fail-fast-fragment", frames: [][]byte{frame(false, 0, ws.OpText, []byte("κόσμε")), frame(false, 0, ws.OpContinuation, []byte("\xf4\x90\x80\x80")), frame(true, 0, ws.OpContinuation, []byte("edited"))},
		want: []want{wClose(1007)}, split: 2, early: 1, stop: true})
	add(confCase{name: "6.4.2/fail-fast-one-octet", frames: [][]byte{frame(false, 0, ws.OpText, []byte("κόσμε")), frame(false, 0, ws.OpContinuation, []byte("\xf5")), frame(true, 0, ws.OpContinuation, []byte("edited"))},
		want: []want{wClose(1007)}, split: 2, early: 1, stop: true})
	add(confCase{name: "6.4/fail-fast-split-code-point", frames: [][]byte{frame(false, 0, ws.OpText, []byte("ab\xed")), frame(false, 0, ws.OpContinuation, []byte("\xa0")), frame(true, 0, ws.OpContinuation, []byte("\x80"))},
		want: []want{wClose(1007)}, split: 2, early: 1, stop: true})
	add(confCase{name: "6/truncated-at-fin", frames: [][]byte{frame(false, 0, ws.OpText, []byte("ab")), frame(true, 0, ws.OpContinuation, []byte("\xe2\x82"))}, want: []want{wClose(1007)}})
	// 7: close.
	add(confCase{name: "7.1.1/echo-then-close", frames: [][]byte{text("Hello World!"), closeFrame(1000, "")}, want: []want{wText("Hello World!"), wClose(1000)}})
	add(confCase{name: "7.1.2/close-twice", frames: [][]byte{closeFrame(1000, ""), closeFrame(1000, "")}, want: []want{wClose(1000)}})
	add(confCase{name: "7.1.3/ping-after-close", frames: [][]byte{closeFrame(1000, ""), frame(true, 0, ws.OpPing, []byte("Hello"))}, want: []want{wClose(1000)}})
	add(confCase{name: "7.1.4/text-after-close", frames: [][]byte{closeFrame(1000, ""), text("Hello")}, want: []want{wClose(1000)}})
	add(confCase{name: "7.3.1/close-empty", frames: [][]byte{frame(true, 0, ws.OpClose, nil)}, want: []want{wClose(0)}})
	add(confCase{name: "7.3.2/close-one-byte", frames: [][]byte{frame(true, 0, ws.OpClose, []byte{0x03})}, want: []want{wClose(1002)}})
	add(confCase{name: "7.3.4/close-with-reason", frames: [][]byte{closeFrame(1000, "Hello World!")}, want: []want{wClose(1000)}})
	add(confCase{name: "7.3.5/close-reason-123", frames: [][]byte{closeFrame(1000, strings.Repeat("*", 123))}, want: []want{wClose(1000)}})
	add(confCase{name: "7.3.6/close-reason-124", frames: [][]byte{closeFrame(1000, strings.Repeat("*", 124))}, want: []want{wClose(1002)}})
	add(confCase{name: "7.5.1/close-reason-invalid-utf8", frames: [][]byte{closeFrame(1000, "κόσμε\xed\xa0\x80edited")}, want: []want{wClose(1002)}})
	for _, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		add(confCase{name: fmt.Sprintf("7.7/valid-code-%d", code), frames: [][]byte{closeFrame(code, "")}, want: []want{wClose(code)}})
	}
	for _, code := range []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		add(confCase{name: fmt.Sprintf("7.9/invalid-code-%d", code), frames: [][]byte{closeFrame(code, "")}, want: []want{wClose(1002)}})
	}
	// 10.1.1: 65536 bytes in fragments of 1300.
	big := strings.Repeat("x", 65536)
	var frags [][]byte
	for i := 0; i < len(big); i += 1300 {
		j := min(i+1300, len(big))
		op := ws.OpContinuation
		if i == 0 {
			op = ws.OpText
		}
		frags = append(frags, frame(j == len(big), 0, op, []byte(big[i:j])))
	}
	add(confCase{name: "10.1.1/fragmented-65536", frames: frags, want: []want{wText(big)}})
	return cs
}

// sendMode is how a case's bytes are written.
type sendMode int

const (
	whole    sendMode = iota // all frames in one write
	perFrame                 // one write per frame
	perOctet                 // one write per byte
)

func (m sendMode) String() string { return [...]string{"whole", "frame", "octet"}[m] }

func (c *wsClient) send(mode sendMode, frames [][]byte) {
	c.t.Helper()
	switch mode {
	case whole:
		c.write(bytes.Join(frames, nil))
	case perFrame:
		for i, f := range frames {
			if sentClose(frames[:i]) {
				// The server may have closed the socket after answering
				// the close: later writes are allowed to fail.
				_, _ = c.nc.Write(f)
				continue
			}
			c.write(f)
		}
	case perOctet:
		for k, f := range frames {
			if sentClose(frames[:k]) {
				_, _ = c.nc.Write(f)
				continue
			}
			// Long payloads go in 997-byte pieces past their first 2 KiB
			// (Autobahn 1.1.8 does the same); headers and short frames go
			// one octet at a time.
			for i := 0; i < len(f); {
				n := 1
				if i >= 2048 {
					n = min(997, len(f)-i)
				}
				c.write(f[i : i+n])
				i += n
			}
		}
	}
}

// expect reads the wanted frames.
func (c *wsClient) expect(ws_ []want) {
	c.t.Helper()
	for i, w := range ws_ {
		h, p, err := c.readFrame()
		if err != nil {
			c.t.Fatalf("frame %d: want %v: %v", i, w.op, err)
		}
		if !h.Fin || h.Rsv != 0 {
			c.t.Fatalf("frame %d: fin=%v rsv=%d, want a final frame without rsv", i, h.Fin, h.Rsv)
		}
		if h.OpCode != w.op {
			c.t.Fatalf("frame %d: got opcode %v (payload %.40q), want %v", i, h.OpCode, p, w.op)
		}
		if w.op == ws.OpClose {
			var code uint16
			if len(p) >= 2 {
				code = binary.BigEndian.Uint16(p)
			}
			if code != w.code || (w.code == 0 && len(p) != 0) {
				c.t.Fatalf("frame %d: got close %d (payload %q), want %d", i, code, p, w.code)
			}
			continue
		}
		if !bytes.Equal(p, w.payload) {
			c.t.Fatalf("frame %d: got payload %.60q (len %d), want %.60q (len %d)", i, p, len(p), w.payload, len(w.payload))
		}
	}
}

// TestConformance runs the Autobahn-style cases, each sent whole, frame by
// frame and octet by octet.
func TestConformance(t *testing.T) {
	h := newEchoHandler()
	_, addr := startEngine(t, Config{MaxMessageBytes: 1 << 20, CloseWait: time.Second}, h, acceptAll{}, nil)
	for _, tc := range conformanceCases() {
		for _, mode := range []sendMode{whole, perFrame, perOctet} {
			t.Run(tc.name+"/"+mode.String(), func(t *testing.T) {
				c := dialWS(t, addr)
				if tc.split > 0 && mode != whole {
					c.send(mode, tc.frames[:tc.split])
					c.expect(tc.want[:tc.early])
					if !tc.stop {
						c.send(mode, tc.frames[tc.split:])
						c.expect(tc.want[tc.early:])
					}
				} else {
					c.send(mode, tc.frames)
					c.expect(tc.want)
				}
				last := tc.want[len(tc.want)-1]
				if last.op == ws.OpClose {
					// Answer the server's close unless the client started
					// the close handshake; then the server must close the
					// TCP connection.
					if !sentClose(tc.frames) {
						_, _ = c.nc.Write(closeFrame(1000, ""))
					}
					c.expectEOF()
					return
				}
				c.write(closeFrame(1000, ""))
				c.expect([]want{wClose(1000)})
				c.expectEOF()
			})
		}
	}
}

// sentClose reports whether frames contain a close frame.
func sentClose(frames [][]byte) bool {
	for _, f := range frames {
		if f[0]&0x0f == byte(ws.OpClose) {
			return true
		}
	}
	return false
}
