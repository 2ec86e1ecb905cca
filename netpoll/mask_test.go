package netpoll

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/gobwas/ws"
)

// xorKey unmasks p in plain Go, 8 bytes a step (four steps a turn): the key repeated into a
// 64-bit word and rotated so that its low byte meets p[0] (pos is the mask
// offset of p[0]). It is the alternative to gobwas/ws Cipher (AVX2 here)
// that BenchmarkVectorPass measures; the frame reader keeps Cipher, which
// costs half as much in the running engine (docs/benchmarks.md, "Wide
// vectors on the message path").
func xorKey(p []byte, key [4]byte, pos int) {
	k := uint64(binary.LittleEndian.Uint32(key[:]))
	k |= k << 32
	k = bits.RotateLeft64(k, -8*(pos&3))
	for len(p) >= 32 {
		binary.LittleEndian.PutUint64(p, binary.LittleEndian.Uint64(p)^k)
		binary.LittleEndian.PutUint64(p[8:], binary.LittleEndian.Uint64(p[8:])^k)
		binary.LittleEndian.PutUint64(p[16:], binary.LittleEndian.Uint64(p[16:])^k)
		binary.LittleEndian.PutUint64(p[24:], binary.LittleEndian.Uint64(p[24:])^k)
		p = p[32:]
	}
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, binary.LittleEndian.Uint64(p)^k)
		p = p[8:]
	}
	for i := range p {
		p[i] ^= byte(k)
		k = bits.RotateLeft64(k, -8)
	}
}

// TestXorKeyMatchesCipher compares xorKey with gobwas/ws Cipher for every
// length up to 300, every mask offset and every start alignment, so that
// the benchmark compares two routines that do the same work.
func TestXorKeyMatchesCipher(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 300+8)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	key := [4]byte{0x12, 0x9a, 0xe3, 0x47}
	for n := 0; n <= 300; n++ {
		for pos := 0; pos < 8; pos++ {
			for align := 0; align < 8; align++ {
				got := append([]byte(nil), buf[align:align+n]...)
				want := append([]byte(nil), got...)
				xorKey(got, key, pos)
				ws.Cipher(want, key, pos)
				if !bytes.Equal(got, want) {
					t.Fatalf("n=%d pos=%d align=%d: xorKey differs from ws.Cipher", n, pos, align)
				}
			}
		}
	}
}
