package netpoll

import "unicode/utf8"

// utf8State validates UTF-8 incrementally, so that a text message split
// across reads or fragments fails as soon as the chunk holding the first
// byte that can no longer start or continue a valid sequence arrives
// (fail-fast, as the Autobahn 6.4 cases require). Code points may be split
// anywhere. Only the bytes of a code point cut by a chunk boundary go
// through the byte-wise state machine; the rest of each chunk is checked
// with utf8.Valid. A text message that arrives whole in one read never
// uses it (the frame reader checks it with utf8.Valid directly).
//
// The zero value is the start state. It is owned by the frame reader.
type utf8State struct {
	need uint8 // continuation bytes still expected
	lo   byte  // allowed range of the next continuation byte
	hi   byte
}

// feed validates p as the continuation of the bytes seen so far. It returns
// false when p holds a byte that makes the stream invalid.
func (s *utf8State) feed(p []byte) bool {
	if s.need > 0 {
		k := min(int(s.need), len(p))
		if !s.feedBytes(p[:k]) {
			return false
		}
		p = p[k:]
	}
	// Cut before a code point that p ends in the middle of.
	cut := len(p)
	for k := 1; k <= 3 && k <= len(p); k++ {
		b := p[len(p)-k]
		if b < 0x80 {
			break
		}
		if b >= 0xC0 {
			if seqLen(b) > k {
				cut = len(p) - k
			}
			break
		}
	}
	if !utf8.Valid(p[:cut]) {
		return false
	}
	return s.feedBytes(p[cut:])
}

// seqLen returns the length of the sequence lead byte b announces (4 for
// bytes that cannot lead one: the state machine rejects them).
func seqLen(b byte) int {
	switch {
	case b < 0xE0:
		return 2
	case b < 0xF0:
		return 3
	}
	return 4
}

// feedBytes is the byte-wise state machine.
func (s *utf8State) feedBytes(p []byte) bool {
	i := 0
	n := len(p)
	for i < n {
		if s.need > 0 {
			b := p[i]
			if b < s.lo || b > s.hi {
				return false
			}
			s.lo, s.hi = 0x80, 0xBF
			s.need--
			i++
			continue
		}
		// ASCII fast path, eight bytes at a time.
		for i+8 <= n {
			w := uint64(p[i]) | uint64(p[i+1])<<8 | uint64(p[i+2])<<16 | uint64(p[i+3])<<24 |
				uint64(p[i+4])<<32 | uint64(p[i+5])<<40 | uint64(p[i+6])<<48 | uint64(p[i+7])<<56
			if w&0x8080808080808080 != 0 {
				break
			}
			i += 8
		}
		if i >= n {
			break
		}
		b := p[i]
		i++
		switch {
		case b < 0x80:
			continue
		case b < 0xC2:
			return false
		case b < 0xE0:
			s.need, s.lo, s.hi = 1, 0x80, 0xBF
		case b == 0xE0:
			s.need, s.lo, s.hi = 2, 0xA0, 0xBF
		case b == 0xED:
			s.need, s.lo, s.hi = 2, 0x80, 0x9F
		case b < 0xF0:
			s.need, s.lo, s.hi = 2, 0x80, 0xBF
		case b == 0xF0:
			s.need, s.lo, s.hi = 3, 0x90, 0xBF
		case b < 0xF4:
			s.need, s.lo, s.hi = 3, 0x80, 0xBF
		case b == 0xF4:
			s.need, s.lo, s.hi = 3, 0x80, 0x8F
		default:
			return false
		}
	}
	return true
}

// complete reports whether the bytes seen so far end on a code point boundary.
func (s *utf8State) complete() bool { return s.need == 0 }

// validUTF8 reports whether p is complete, valid UTF-8.
func validUTF8(p []byte) bool { return utf8.Valid(p) }
