package netpoll

import (
	"encoding/binary"
	"errors"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

// maxControlPayload is the largest payload a control frame may carry.
const maxControlPayload = 125

// protocolError is a violation by the peer; code is the close code sent back.
type protocolError struct {
	code CloseCode
	msg  string
}

func (e *protocolError) Error() string { return "websocket: " + e.msg }

// Code returns the close code the violation is answered with.
func (e *protocolError) Code() CloseCode { return e.code }

var (
	errReservedBits   = &protocolError{CloseProtocolError, "reserved bits set"}
	errReservedOpcode = &protocolError{CloseProtocolError, "reserved opcode"}
	errUnmasked       = &protocolError{CloseProtocolError, "unmasked client frame"}
	errControlFrag    = &protocolError{CloseProtocolError, "fragmented control frame"}
	errControlLen     = &protocolError{CloseProtocolError, "control frame payload over 125 bytes"}
	errContNoStart    = &protocolError{CloseProtocolError, "continuation without a message"}
	errDataInFragment = &protocolError{CloseProtocolError, "data frame inside a fragmented message"}
	errLength64       = &protocolError{CloseProtocolError, "64-bit length with the high bit set"}
	errCloseLen       = &protocolError{CloseProtocolError, "close payload of one byte"}
	errCloseCode      = &protocolError{CloseProtocolError, "invalid close code"}
	errCloseReason    = &protocolError{CloseProtocolError, "close reason is not UTF-8"}
	errBinary         = &protocolError{CloseUnsupportedData, "binary frames are not accepted"}
	errInvalidUTF8    = &protocolError{CloseInvalidPayload, "text is not UTF-8"}
	errTooBig         = &protocolError{CloseMessageTooBig, "message too big"}

	// errCloseFrame is returned by feed once the peer's close frame was read.
	errCloseFrame = errors.New("websocket: close frame received")
)

// frameSink receives what the frame reader decodes. Payloads are valid only
// during the call.
type frameSink interface {
	onText(p []byte)
	onPing(p []byte)
	onPong(p []byte)
	onClose(code CloseCode, reason []byte) // code is CloseNoStatus for an empty payload
}

// frameReader decodes client frames incrementally: feed it whatever bytes a
// read returned, however they are split, and it keeps just enough state to go
// on. A connection borrows one only while a frame or message is partly read
// (see idle) and gives it back to frameReaderPool afterwards.
//
// Complete single-frame messages that arrive within one feed are delivered
// straight from the input slice (unmasked in place); otherwise the payload is
// gathered in a pooled buffer sized from the frame header.
type frameReader struct {
	msg    *[]byte // gathered payload of the open message, nil if none
	left   int     // payload bytes still to come in the current frame
	flen   int     // payload length of the current frame
	hdr    [14]byte
	hn     uint8 // header bytes gathered in hdr
	kpos   uint8 // mask offset of the next payload byte
	op     byte
	fin    bool
	inPay  bool // inside the payload of a frame
	open   bool // a text message is started and not finished
	done   bool // a close frame or a violation was seen: input is ignored
	cn     uint8
	key    [4]byte
	u8     utf8State
	ctl    [maxControlPayload]byte
	maxMsg int
	bufs   *bufPool
}

// idle reports whether the reader holds no partial state and can be released.
func (r *frameReader) idle() bool {
	return r.hn == 0 && !r.inPay && !r.open && r.msg == nil
}

// reset clears the reader for reuse, releasing its message buffer.
func (r *frameReader) reset() {
	if r.msg != nil {
		r.bufs.put(r.msg)
	}
	bufs, maxMsg := r.bufs, r.maxMsg
	*r = frameReader{bufs: bufs, maxMsg: maxMsg}
}

// headerSize returns the header length announced by the second header byte.
func headerSize(b1 byte) int {
	n := 2 + 4 // masked client frames always carry a key
	switch b1 & 0x7F {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	return n
}

// check validates what the first two header bytes tell.
func (r *frameReader) check(b0, b1 byte) error {
	if b0&0x70 != 0 {
		return errReservedBits
	}
	op := b0 & 0x0F
	fin := b0&0x80 != 0
	switch op {
	case opClose, opPing, opPong:
		if !fin {
			return errControlFrag
		}
		if b1&0x7F > maxControlPayload {
			return errControlLen
		}
	case opCont:
		if !r.open {
			return errContNoStart
		}
	case opText, opBinary:
		if r.open {
			return errDataInFragment
		}
	default:
		return errReservedOpcode
	}
	if b1&0x80 == 0 {
		return errUnmasked
	}
	if op == opBinary {
		return errBinary
	}
	return nil
}

// begin starts a frame from a complete, checked header.
func (r *frameReader) begin(h []byte) error {
	var n uint64
	i := 2
	switch h[1] & 0x7F {
	case 126:
		n = uint64(binary.BigEndian.Uint16(h[2:]))
		i = 4
	case 127:
		n = binary.BigEndian.Uint64(h[2:])
		if n>>63 != 0 {
			return errLength64
		}
		i = 10
	default:
		n = uint64(h[1] & 0x7F)
	}
	r.op = h[0] & 0x0F
	r.fin = h[0]&0x80 != 0
	copy(r.key[:], h[i:i+4])
	r.kpos = 0
	r.cn = 0
	if r.op < opClose {
		have := 0
		if r.msg != nil {
			have = len(*r.msg)
		}
		if n > uint64(r.maxMsg-have) {
			return errTooBig
		}
		r.open = true
	}
	r.flen = int(n)
	r.left = int(n)
	r.inPay = true
	return nil
}

// feed decodes p, which it may modify (payloads are unmasked in place). It
// returns nil when all of p was consumed, errCloseFrame after the peer's
// close frame, or a *protocolError; after either, further input is ignored.
func (r *frameReader) feed(p []byte, s frameSink) error {
	if r.done {
		return errCloseFrame
	}
	for len(p) > 0 {
		if !r.inPay {
			var h []byte
			if r.hn == 0 && len(p) >= 2 {
				if err := r.fail(r.check(p[0], p[1])); err != nil {
					return err
				}
				if need := headerSize(p[1]); len(p) >= need {
					h, p = p[:need], p[need:]
				}
			}
			if h == nil {
				for r.hn < 2 && len(p) > 0 {
					r.hdr[r.hn] = p[0]
					r.hn++
					p = p[1:]
					if r.hn == 2 {
						if err := r.fail(r.check(r.hdr[0], r.hdr[1])); err != nil {
							return err
						}
					}
				}
				if r.hn < 2 {
					return nil
				}
				need := headerSize(r.hdr[1])
				k := copy(r.hdr[r.hn:need], p)
				r.hn += uint8(k)
				p = p[k:]
				if int(r.hn) < need {
					return nil
				}
				h = r.hdr[:need]
				r.hn = 0
			}
			if err := r.fail(r.begin(h)); err != nil {
				return err
			}
			if r.left == 0 {
				if err := r.end(s); err != nil {
					return err
				}
				continue
			}
		}
		take := min(r.left, len(p))
		chunk := p[:take]
		p = p[take:]
		ws.Cipher(chunk, r.key, int(r.kpos))
		r.kpos = uint8((int(r.kpos) + take) & 3)
		r.left -= take
		if r.op >= opClose {
			r.cn += uint8(copy(r.ctl[r.cn:], chunk))
		} else {
			if r.left == 0 && r.fin && take == r.flen && r.msg == nil {
				// The whole message is in this input (no earlier fragment
				// carried a byte, so the incremental state is fresh):
				// check it whole and deliver it in place.
				if !utf8.Valid(chunk) {
					return r.fail(errInvalidUTF8)
				}
				r.inPay, r.open, r.u8 = false, false, utf8State{}
				s.onText(chunk)
				continue
			}
			if !r.u8.feed(chunk) {
				return r.fail(errInvalidUTF8)
			}
			if r.msg == nil {
				r.msg = r.bufs.get(take + r.left)
			} else {
				r.msg = r.bufs.grow(r.msg, take+r.left)
			}
			*r.msg = append(*r.msg, chunk...)
		}
		if r.left == 0 {
			if err := r.end(s); err != nil {
				return err
			}
		}
	}
	return nil
}

// fail marks the reader done when err is not nil.
func (r *frameReader) fail(err error) error {
	if err != nil {
		r.done = true
	}
	return err
}

// end finishes the current frame, whose payload is complete.
func (r *frameReader) end(s frameSink) error {
	r.inPay = false
	switch r.op {
	case opPing:
		s.onPing(r.ctl[:r.cn])
	case opPong:
		s.onPong(r.ctl[:r.cn])
	case opClose:
		r.done = true
		p := r.ctl[:r.cn]
		switch {
		case len(p) == 0:
			s.onClose(CloseNoStatus, nil)
		case len(p) == 1:
			return errCloseLen
		default:
			code := CloseCode(binary.BigEndian.Uint16(p))
			if !code.validOnWire() {
				return errCloseCode
			}
			if !validUTF8(p[2:]) {
				return errCloseReason
			}
			s.onClose(code, p[2:])
		}
		return errCloseFrame
	default:
		if !r.fin {
			return nil
		}
		if !r.u8.complete() {
			return r.fail(errInvalidUTF8)
		}
		var payload []byte
		if r.msg != nil {
			payload = *r.msg
		}
		s.onText(payload)
		if r.msg != nil {
			r.bufs.put(r.msg)
			r.msg = nil
		}
		r.open, r.u8 = false, utf8State{}
	}
	return nil
}

// appendFrameHeader appends an unmasked server frame header.
func appendFrameHeader(b []byte, op byte, n int) []byte {
	b = append(b, 0x80|op)
	switch {
	case n < 126:
		return append(b, byte(n))
	case n <= 0xFFFF:
		return append(b, 126, byte(n>>8), byte(n))
	default:
		return append(b, 127, byte(uint64(n)>>56), byte(uint64(n)>>48), byte(uint64(n)>>40),
			byte(uint64(n)>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}
