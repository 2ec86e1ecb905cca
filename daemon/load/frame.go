package load

import (
	"encoding/binary"
	"errors"
)

// WebSocket opcodes used by the client.
const (
	opCont  byte = 0x0
	opText  byte = 0x1
	opBin   byte = 0x2
	opClose byte = 0x8
	opPing  byte = 0x9
	opPong  byte = 0xA
)

// errFrame reports a server frame the client cannot accept (bad length,
// reserved bits, a fragmented control frame).
var errFrame = errors.New("load: malformed server frame")

// frame is one parsed server frame; payload aliases the input buffer.
type frame struct {
	fin     bool
	op      byte
	payload []byte
}

// parseFrame reads one frame from the front of b. It returns the number of
// bytes consumed, 0 when b holds only part of a frame. Server frames are not
// masked, but a masked one is unmasked in place.
func parseFrame(b []byte) (frame, int, error) {
	if len(b) < 2 {
		return frame{}, 0, nil
	}
	f := frame{fin: b[0]&0x80 != 0, op: b[0] & 0x0f}
	if b[0]&0x70 != 0 {
		return frame{}, 0, errFrame
	}
	masked := b[1]&0x80 != 0
	n := uint64(b[1] & 0x7f)
	hl := 2
	switch n {
	case 126:
		if len(b) < 4 {
			return frame{}, 0, nil
		}
		n = uint64(binary.BigEndian.Uint16(b[2:]))
		hl = 4
	case 127:
		if len(b) < 10 {
			return frame{}, 0, nil
		}
		n = binary.BigEndian.Uint64(b[2:])
		hl = 10
		if n > 1<<31 {
			return frame{}, 0, errFrame
		}
	}
	if f.op >= opClose && (n > 125 || !f.fin) {
		return frame{}, 0, errFrame
	}
	var key []byte
	if masked {
		if len(b) < hl+4 {
			return frame{}, 0, nil
		}
		key = b[hl : hl+4]
		hl += 4
	}
	end := hl + int(n)
	if len(b) < end {
		return frame{}, 0, nil
	}
	f.payload = b[hl:end]
	if masked {
		maskBytes(f.payload, [4]byte(key), 0)
	}
	return f, end, nil
}

// appendFrame appends a client frame (FIN set, masked with key) carrying
// payload to dst.
func appendFrame(dst []byte, op byte, payload []byte, key [4]byte) []byte {
	dst = append(dst, 0x80|op)
	switch n := len(payload); {
	case n <= 125:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	dst = append(dst, key[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	maskBytes(dst[start:], key, 0)
	return dst
}

// maskBytes XORs b with the mask key, starting at key offset pos.
func maskBytes(b []byte, key [4]byte, pos int) {
	k := binary.LittleEndian.Uint32([]byte{key[pos&3], key[(pos+1)&3], key[(pos+2)&3], key[(pos+3)&3]})
	k64 := uint64(k) | uint64(k)<<32
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^k64)
	}
	for ; i < len(b); i++ {
		b[i] ^= key[(pos+i)&3]
	}
}
