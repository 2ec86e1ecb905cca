package events

import (
	"strconv"
	"unicode/utf8"
)

// Server message types.
const (
	TypeWelcome   = "welcome"
	TypePong      = "pong"
	TypeChunk     = "chunk"
	TypeResult    = "result"
	TypeError     = "error"
	TypeReconnect = "reconnect"
	TypeRestart   = "restart"
)

// AppendRestart appends the notice that request id runs again from the
// start on another replica (its chunks restart at seq 0; contract v1.1
// section 4a, retry_on_node_loss).
func AppendRestart(dst []byte, id string) []byte {
	dst = append(dst, `{"type":"restart","id":`...)
	dst = AppendString(dst, id)
	return append(dst, '}')
}

// AppendWelcome appends the welcome message sent on connect.
func AppendWelcome(dst []byte, session string, resumed bool, node string, heartbeatMS int64) []byte {
	dst = append(dst, `{"type":"welcome","session":`...)
	dst = AppendString(dst, session)
	dst = append(dst, `,"resumed":`...)
	dst = strconv.AppendBool(dst, resumed)
	dst = append(dst, `,"node":`...)
	dst = AppendString(dst, node)
	dst = append(dst, `,"heartbeat_ms":`...)
	dst = strconv.AppendInt(dst, heartbeatMS, 10)
	return append(dst, '}')
}

// AppendPong appends the answer to a ping message.
func AppendPong(dst []byte, id string) []byte {
	dst = append(dst, `{"type":"pong","id":`...)
	dst = AppendString(dst, id)
	return append(dst, '}')
}

// AppendChunk appends one chunk of request id. data must be valid JSON; nil
// is written as null.
func AppendChunk(dst []byte, id string, seq int, data []byte) []byte {
	dst = append(dst, `{"type":"chunk","id":`...)
	dst = AppendString(dst, id)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendInt(dst, int64(seq), 10)
	dst = append(dst, `,"data":`...)
	dst = appendRaw(dst, data)
	return append(dst, '}')
}

// AppendResult appends the result of request id. data must be valid JSON;
// nil is written as null.
func AppendResult(dst []byte, id string, data []byte) []byte {
	dst = append(dst, `{"type":"result","id":`...)
	dst = AppendString(dst, id)
	dst = append(dst, `,"data":`...)
	dst = appendRaw(dst, data)
	return append(dst, '}')
}

// AppendError appends the error terminal of request id.
func AppendError(dst []byte, id, code, message string) []byte {
	dst = append(dst, `{"type":"error","id":`...)
	dst = AppendString(dst, id)
	dst = append(dst, `,"code":`...)
	dst = AppendString(dst, code)
	dst = append(dst, `,"message":`...)
	dst = AppendString(dst, message)
	return append(dst, '}')
}

// AppendReconnect appends the message sent before a drain closes a
// connection.
func AppendReconnect(dst []byte, reason string, afterMS int64) []byte {
	dst = append(dst, `{"type":"reconnect","reason":`...)
	dst = AppendString(dst, reason)
	dst = append(dst, `,"after_ms":`...)
	dst = strconv.AppendInt(dst, afterMS, 10)
	return append(dst, '}')
}

func appendRaw(dst, data []byte) []byte {
	if len(data) == 0 {
		return append(dst, "null"...)
	}
	return append(dst, data...)
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\u202`...)
			dst = append(dst, hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// Welcome is what the welcome message says (contract 1.1, section 4a).
type Welcome struct {
	Session     string
	Resumed     bool
	Recovered   bool   // false: Missed terminals had left the replay log
	Missed      uint64 // written when !Recovered
	Node        string
	HeartbeatMS int64
	// Replay and Inflight are written on a resume: the terminals the
	// replay brings, and the ids of the session's requests still running.
	Replay   int
	Inflight []string
}

// AppendWelcomeV11 appends the welcome message with the v1.1 fields.
func AppendWelcomeV11(dst []byte, w *Welcome) []byte {
	dst = append(dst, `{"type":"welcome","session":`...)
	dst = AppendString(dst, w.Session)
	dst = append(dst, `,"resumed":`...)
	dst = strconv.AppendBool(dst, w.Resumed)
	dst = append(dst, `,"recovered":`...)
	dst = strconv.AppendBool(dst, w.Recovered)
	if !w.Recovered {
		dst = append(dst, `,"missed":`...)
		dst = strconv.AppendUint(dst, w.Missed, 10)
	}
	if w.Resumed {
		dst = append(dst, `,"replay":`...)
		dst = strconv.AppendInt(dst, int64(w.Replay), 10)
		dst = append(dst, `,"inflight":[`...)
		for i, id := range w.Inflight {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendString(dst, id)
		}
		dst = append(dst, ']')
	}
	dst = append(dst, `,"node":`...)
	dst = AppendString(dst, w.Node)
	dst = append(dst, `,"heartbeat_ms":`...)
	dst = strconv.AppendInt(dst, w.HeartbeatMS, 10)
	return append(dst, '}')
}
