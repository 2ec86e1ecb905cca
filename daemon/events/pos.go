package events

import (
	"bytes"
	"strconv"
)

// Terminal messages carry a per-session position (contract 1.1, section
// 4a), written by the session store when it numbers them: the encoders
// above write a terminal without it, PosIndex finds where it goes, and
// AppendPos writes the message with it.

var (
	resultHead = []byte(`{"type":"result","id":`)
	errorHead  = []byte(`{"type":"error","id":`)
	posField   = []byte(`,"pos":`)
)

// PosIndex returns where `,"pos":N` goes in an encoded terminal (as
// AppendResult and AppendError write it): just after its id. For any other
// JSON object it returns 1 (the position then comes first: `{"pos":N,`).
func PosIndex(msg []byte) int {
	var pre []byte
	switch {
	case bytes.HasPrefix(msg, resultHead):
		pre = resultHead
	case bytes.HasPrefix(msg, errorHead):
		pre = errorHead
	}
	if pre != nil {
		if end := stringEnd(msg, len(pre)); end > 0 {
			return end
		}
	}
	return 1
}

// SplitPos returns the parts that AppendPos writes around the position:
// head + decimal position + tail is the terminal with its position (for a
// store that joins them itself, e.g. in a Lua script).
func SplitPos(msg []byte, at int) (head, tail []byte) {
	if at <= 1 {
		if len(msg) < 2 {
			return []byte(`{"pos":`), []byte(`}`)
		}
		if msg[1] == '}' {
			return []byte(`{"pos":`), msg[1:]
		}
		return []byte(`{"pos":`), append([]byte{','}, msg[1:]...)
	}
	head = make([]byte, 0, at+len(posField))
	return append(append(head, msg[:at]...), posField...), msg[at:]
}

// AppendPos appends msg with `"pos":pos` inserted at at (from PosIndex).
func AppendPos(dst, msg []byte, at int, pos uint64) []byte {
	if at <= 1 || at > len(msg) {
		dst = append(dst, `{"pos":`...)
		dst = strconv.AppendUint(dst, pos, 10)
		if len(msg) < 2 {
			return append(dst, '}')
		}
		if msg[1] != '}' {
			dst = append(dst, ',')
		}
		return append(dst, msg[1:]...)
	}
	dst = append(dst, msg[:at]...)
	dst = append(dst, posField...)
	dst = strconv.AppendUint(dst, pos, 10)
	return append(dst, msg[at:]...)
}

// PosLen returns the length of AppendPos(nil, msg, at, pos), without
// writing it: a store sizes the buffer it logs the terminal in.
func PosLen(msg []byte, at int, pos uint64) int {
	n := digits(pos)
	if at <= 1 || at > len(msg) {
		n += len(`{"pos":`)
		switch {
		case len(msg) < 2:
			return n + 1
		case msg[1] != '}':
			n++
		}
		return n + len(msg) - 1
	}
	return n + len(msg) + len(posField)
}

// digits returns the number of decimal digits of v.
func digits(v uint64) int {
	n := 1
	for v >= 10 {
		v /= 10
		n++
	}
	return n
}

// stringEnd returns the index just past the JSON string starting at
// msg[i], or -1.
func stringEnd(msg []byte, i int) int {
	if i >= len(msg) || msg[i] != '"' {
		return -1
	}
	for j := i + 1; j < len(msg); j++ {
		switch msg[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// TerminalPos returns the position carried by an encoded terminal written
// by AppendPos, or 0.
func TerminalPos(msg []byte) uint64 {
	var rest []byte
	if i := bytes.Index(msg, posField); i >= 0 {
		rest = msg[i+len(posField):]
	} else if p := []byte(`{"pos":`); bytes.HasPrefix(msg, p) {
		rest = msg[len(p):]
	}
	var n uint64
	for _, c := range rest {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + uint64(c-'0')
	}
	return n
}
