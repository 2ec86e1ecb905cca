package traceparent

import (
	"encoding/hex"
	"math/rand/v2"
	"strings"
)

// ValidTraceID reports whether id is a W3C trace id: 32 lowercase hex digits,
// not all zero.
func ValidTraceID(id string) bool {
	return len(id) == 32 && isLowerHex(id) && strings.Trim(id, "0") != ""
}

// TraceID returns the trace id of a W3C traceparent header
// ("<version>-<trace id>-<parent id>-<flags>"), or "" when tp is not a
// valid one. Versions after 00 may append fields; version ff is invalid.
func TraceID(tp string) string {
	// version 00 is exactly 55 bytes; later versions may append fields.
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' || (len(tp) > 55 && tp[55] != '-') {
		return ""
	}
	version, trace, parent, flags := tp[:2], tp[3:35], tp[36:52], tp[53:55]
	if !isLowerHex(version) || version == "ff" || (version == "00" && len(tp) != 55) ||
		!ValidTraceID(trace) || !isLowerHex(parent) || strings.Trim(parent, "0") == "" || !isLowerHex(flags) {
		return ""
	}
	return trace
}

// Valid00 reports whether tp is a well-formed version-00 traceparent:
// 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, lowercase, ids
// not all zero, nothing appended. It is the only form the gateway keeps
// from a trusted proxy's handshake.
func Valid00(tp string) bool {
	return len(tp) == 55 && tp[:3] == "00-" && TraceID(tp) != ""
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// New returns a version-00 traceparent with traceID (a new random
// one when "") and a new random span id, sampled, and the trace id it
// carries. traceID, when given, must be a valid trace id (ValidTraceID).
func New(traceID string) (traceparent, id string) {
	var raw [24]byte
	for i := 0; i < 24; i += 8 {
		v := rand.Uint64()
		for j := range 8 {
			raw[i+j] = byte(v >> (8 * j))
		}
	}
	raw[0] |= 1  // a trace id is never all zeros
	raw[16] |= 1 // nor a span id
	var out [55]byte
	copy(out[:], "00-")
	if traceID != "" {
		copy(out[3:35], traceID)
	} else {
		hex.Encode(out[3:35], raw[:16])
	}
	out[35] = '-'
	hex.Encode(out[36:52], raw[16:])
	copy(out[52:], "-01")
	tp := string(out[:])
	return tp, tp[3:35]
}
