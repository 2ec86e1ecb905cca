package events

import "unsafe"

// plainJSONString reports whether v is a JSON string of printable ASCII
// (0x20-0x7e) without escapes: '"', bytes other than '"' and '\\', '"'.
// Such a v is valid JSON for every parser, so decodeCommon takes it
// without json.Valid; anything else (escapes, UTF-8, any other value)
// goes to json.Valid as before, so what Decode accepts does not change.
//
// It checks 8 bytes per step in plain Go (SWAR), one pass. json.Valid
// makes three AVX2 passes over a string (printable check, backslash
// search, closing-quote search): fewer instructions (callgrind: about 920
// against 2,300 for 1 KiB), but in the daemon the decode of a 1 KiB echo
// request took 550-620 ns with json.Valid against 230-240 ns with this.
// perf put most of those passes' samples just after their load of a CPU
// feature flag (internal/cpu.X86, a line nothing else on the path
// touches): a cold load at each pass's start, not the vector work
// (docs/benchmarks.md, "The envelope's data in one pass" and "Wide
// vectors on the message path").
func plainJSONString(v []byte) bool {
	n := len(v)
	if n < 2 || v[0] != '"' || v[n-1] != '"' {
		return false
	}
	// For each byte b of a word x, bit 7 of
	//	b+0x60           is set iff b >= 0x20
	//	(b^'"')+0x7f     is set iff b != '"'
	//	(b^'\\')+0x7f    is set iff b != '\\'
	//	b+0x01           is set iff b == 0x7f
	// when b < 0x80, and bit 7 of b itself is set iff b >= 0x80. While
	// every byte is under 0x80 no sum carries into the next byte; a byte
	// at or over 0x80 (whose carries can spoil the others) makes the
	// whole word bad anyway. good collects the first three (and), bad
	// the last two (or).
	const (
		lo7  = 0x7f7f7f7f7f7f7f7f
		hi   = 0x8080808080808080
		ones = 0x0101010101010101
	)
	good, bad := uint64(hi), uint64(0)
	word := func(x uint64) {
		good &= (x + 0x60*ones) & ((x ^ '"'*ones) + lo7) & ((x ^ '\\'*ones) + lo7)
		bad |= (x + ones) | x
	}
	p, rest := unsafe.Pointer(&v[1]), n-2
	for rest >= 32 {
		// Unaligned loads: the words are read in the machine's byte
		// order, which does not matter (every byte is checked alike).
		word(*(*uint64)(p))
		word(*(*uint64)(unsafe.Add(p, 8)))
		word(*(*uint64)(unsafe.Add(p, 16)))
		word(*(*uint64)(unsafe.Add(p, 24)))
		p, rest = unsafe.Add(p, 32), rest-32
		if rest&0xe0 == 0 && (good&^bad) != hi {
			return false // stop early every 256 bytes
		}
	}
	for rest >= 8 {
		word(*(*uint64)(p))
		p, rest = unsafe.Add(p, 8), rest-8
	}
	if rest > 0 {
		// The last 1 to 7 bytes, then 'a' (a plain byte).
		x := uint64(0x6161616161616161)
		for i := rest - 1; i >= 0; i-- {
			x = x<<8 | uint64(*(*byte)(unsafe.Add(p, i)))
		}
		word(x)
	}
	return good&^bad == hi
}
