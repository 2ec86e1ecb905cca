package netpoll

import (
	"math/bits"
	"sync"
)

// Buffers are borrowed only while bytes are in flight (a partly read message,
// a request head still arriving, bytes waiting for EPOLLOUT) and given back
// as soon as they are done with, so that an idle connection holds none.
// Sizes are powers of two from 512 bytes to 4 MiB; larger buffers are
// allocated and left to the garbage collector.
const (
	minBufShift = 9  // 512 B
	maxBufShift = 22 // 4 MiB
)

// bufPool is a set of size-classed sync.Pools of *[]byte. Pointers are pooled
// so that Put does not allocate.
type bufPool struct {
	classes [maxBufShift - minBufShift + 1]sync.Pool
}

// class returns the index of the smallest class holding n bytes, or -1.
func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	shift := bits.Len(uint(n - 1))
	if shift > maxBufShift {
		return -1
	}
	return shift - minBufShift
}

// get returns a buffer with len 0 and cap >= n.
func (p *bufPool) get(n int) *[]byte {
	c := bufClass(n)
	if c < 0 {
		b := make([]byte, 0, n)
		return &b
	}
	if v := p.classes[c].Get(); v != nil {
		bp := v.(*[]byte)
		*bp = (*bp)[:0]
		return bp
	}
	b := make([]byte, 0, 1<<(c+minBufShift))
	return &b
}

// put gives a buffer back. Buffers whose capacity is not exactly a class size
// (too large ones) are dropped.
func (p *bufPool) put(bp *[]byte) {
	if bp == nil {
		return
	}
	c := cap(*bp)
	if c < 1<<minBufShift || c > 1<<maxBufShift || c&(c-1) != 0 {
		return
	}
	*bp = (*bp)[:0]
	p.classes[bits.Len(uint(c))-1-minBufShift].Put(bp)
}

// grow returns a buffer holding the bytes of *bp with room for n more,
// moving to a larger class when needed and releasing the old buffer.
func (p *bufPool) grow(bp *[]byte, n int) *[]byte {
	if bp == nil {
		return p.get(n)
	}
	if cap(*bp)-len(*bp) >= n {
		return bp
	}
	need := len(*bp) + n
	if c2 := 2 * cap(*bp); c2 > need {
		need = c2
	}
	nb := p.get(need)
	*nb = append(*nb, *bp...)
	p.put(bp)
	return nb
}
