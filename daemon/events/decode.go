package events

import (
	"unsafe"

	"github.com/segmentio/encoding/json"
)

// MaxIDLen is the longest request id the contract allows.
const MaxIDLen = 64

// Envelope is a decoded client message. After Decode, Type, ID and Data
// alias the decoded bytes: they are valid only as long as those bytes are.
type Envelope struct {
	Type string          `json:"type"`
	ID   string          `json:"id"`
	Data json.RawMessage `json:"data"`
	// Pos is the position of an ack (contract 1.1, section 4a), raw: the
	// ack handler checks it (AckPos).
	Pos json.RawMessage `json:"pos"`
}

// TypeAck is the client's acknowledgement of terminals up to a position:
// the one message without an id.
const TypeAck = "ack"

// DecodeError is a frame that is not a valid envelope. ID is the request id
// when it could be read and is valid, else "".
type DecodeError struct {
	ID     string
	Reason string
}

func (e *DecodeError) Error() string { return "bad request: " + e.Reason }

// Decode parses one client frame into e without copying: e's fields alias b.
// It accepts exactly one JSON object with a valid type and id; data may be
// any JSON value (absent means null).
func Decode(b []byte, e *Envelope) error {
	*e = Envelope{}
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return &DecodeError{Reason: "message must be a JSON object"}
	}
	if !decodeCommon(b, i, e) {
		// The general case, by reflection; the envelope is decoded into
		// a copy so that e itself does not escape (Decode's callers keep
		// it on their stack).
		var g Envelope
		rest, err := json.Parse(b, &g, json.ZeroCopy)
		if err != nil {
			// A wrong type for one field still lets us report a valid id.
			return &DecodeError{ID: salvageID(b), Reason: "invalid JSON envelope"}
		}
		if skipSpace(rest, 0) != len(rest) {
			return &DecodeError{Reason: "trailing data after the JSON object"}
		}
		*e = g
	}
	if e.Type == TypeAck && e.ID == "" {
		return nil
	}
	if !ValidID(e.ID) {
		return &DecodeError{Reason: "id must be 1 to 64 printable ASCII characters"}
	}
	if !validType(e.Type) {
		return &DecodeError{ID: e.ID, Reason: "type must be 1 to 64 printable ASCII characters"}
	}
	return nil
}

// salvageID returns the id of a frame whose envelope failed to decode, when
// the id alone is a valid string; else "".
func salvageID(b []byte) string {
	var probe struct {
		ID string `json:"id"`
	}
	if _, err := json.Parse(b, &probe, 0); err != nil {
		return ""
	}
	if !ValidID(probe.ID) {
		return ""
	}
	return probe.ID
}

// ValidID reports whether id is 1 to 64 printable ASCII characters.
func ValidID(id string) bool {
	return validPrintable(id)
}

func validType(t string) bool { return validPrintable(t) }

func validPrintable(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// AckPos returns the position of an ack: a JSON integer from 0 to 2^53-1
// (exactly representable in every client's numbers); ok false otherwise.
func AckPos(raw []byte) (pos uint64, ok bool) {
	if len(raw) == 0 || len(raw) > 16 {
		return 0, false
	}
	if raw[0] == '0' && len(raw) > 1 {
		return 0, false
	}
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
		pos = pos*10 + uint64(c-'0')
	}
	if pos > 1<<53-1 {
		return 0, false
	}
	return pos, true
}

// decodeCommon decodes the envelope every client sends, without
// reflection: {"type":"<t>","id":"<i>","data":<value>} (type and id in
// either order, each optional, data optional and last, any whitespace
// between tokens), where the strings are printable ASCII without escapes.
// It gives e exactly what json.Parse with json.ZeroCopy gives (the fields
// alias b; FuzzDecodeCommon compares the two) and returns false, e
// untouched, for anything else: other or repeated keys, escapes, a data
// that is not last or not valid JSON, trailing bytes. Then Decode takes
// the general path, which also words the errors. b[open] is the '{'.
func decodeCommon(b []byte, open int, e *Envelope) bool {
	var typ, id string
	var data []byte
	seen := 0
	i := open + 1
	for {
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != '"' {
			return false
		}
		key, next, ok := envelopeKey(b, i)
		if !ok {
			return false
		}
		i = skipSpace(b, next)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		switch key {
		case "type", "id":
			bit := 1
			if key == "id" {
				bit = 2
			}
			if seen&bit != 0 || i >= len(b) || b[i] != '"' {
				return false
			}
			seen |= bit
			v, next, ok := plainString(b, i)
			if !ok {
				return false
			}
			if bit == 1 {
				typ = v
			} else {
				id = v
			}
			i = skipSpace(b, next)
			if i >= len(b) {
				return false
			}
			switch b[i] {
			case ',':
				i++
				continue
			case '}':
				if skipSpace(b, i+1) != len(b) {
					return false
				}
			default:
				return false
			}
		case "data":
			// The last key: its value runs to the object's closing brace.
			end := len(b) - 1
			for end > i && isSpace(b[end]) {
				end--
			}
			if end <= i || b[end] != '}' {
				return false
			}
			v := b[i:end]
			for len(v) > 0 && isSpace(v[len(v)-1]) {
				v = v[:len(v)-1]
			}
			if len(v) == 0 || !(plainJSONString(v) || json.Valid(v)) {
				return false
			}
			data = v
		default:
			return false
		}
		break
	}
	*e = Envelope{Type: typ, ID: id, Data: data}
	return true
}

// envelopeKey is plainString for a key: the envelope's three keys are
// matched whole, without the byte loop.
func envelopeKey(b []byte, i int) (key string, next int, ok bool) {
	r := b[i:]
	switch {
	case len(r) >= 6 && string(r[:6]) == `"type"`:
		return "type", i + 6, true
	case len(r) >= 4 && string(r[:4]) == `"id"`:
		return "id", i + 4, true
	case len(r) >= 6 && string(r[:6]) == `"data"`:
		return "data", i + 6, true
	}
	return plainString(b, i)
}

// plainString returns the JSON string starting at b[i] (a '"') when it
// is printable ASCII without escapes, aliasing b, and the index past its
// closing quote.
func plainString(b []byte, i int) (s string, next int, ok bool) {
	j := i + 1
	for j < len(b) && b[j] >= 0x20 && b[j] <= 0x7e && b[j] != '"' && b[j] != '\\' {
		j++
	}
	if j >= len(b) || b[j] != '"' {
		return "", 0, false
	}
	if j == i+1 {
		return "", j + 1, true
	}
	return unsafe.String(&b[i+1], j-i-1), j + 1, true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
