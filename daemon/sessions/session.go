package sessions

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"iter"
	"time"

	"github.com/orchestratord/orchestratord/daemon/events"
)

// Errors returned by the Store and the Manager; test them with errors.Is.
var (
	// ErrNotFound reports an unknown or expired session id.
	ErrNotFound = errors.New("session not found")
	// ErrForbidden reports a resume of a session that belongs to another user.
	ErrForbidden = errors.New("session belongs to another user")
	// ErrInvalidPatch reports a context patch that is not JSON, or that would
	// leave the context something else than a JSON object.
	ErrInvalidPatch = errors.New("invalid context patch")
	// ErrClosed reports a call on a closed Manager or Store.
	ErrClosed = errors.New("session store closed")
)

// Session is a snapshot of a session's state as the Store holds it. The
// caller owns the returned value; changing it changes nothing in the store.
type Session struct {
	ID      string          `json:"id"`
	User    string          `json:"user"`
	Created time.Time       `json:"created"`
	Updated time.Time       `json:"updated"`
	Context json.RawMessage `json:"context"` // always a JSON object, "{}" when empty
	History []events.Turn   `json:"history"` // oldest first, at most history_max_turns
}

// Holder names the connection that last claimed a session: the node it is on,
// its connection number there, and the claim's epoch, which grows by one on
// every claim so that the newest claim wins everywhere.
type Holder struct {
	Node  string
	Conn  uint64
	Epoch uint64
}

// Claim is what Store.Claim returns: the new epoch, the other nodes that held
// the session before (they may still run its requests), and the replay:
// the log entries after the resume point, read atomically with the claim.
type Claim struct {
	Epoch uint64
	Nodes []string
	// Pos is the session's newest position (0: no terminal yet).
	Pos uint64
	// After is the resume point the replay starts after.
	After uint64
	// Log is the replay, in position order; lost entries (LogEntry.Msg
	// empty) are left out and counted in Missed.
	Log []LogEntry
	// Missed counts the terminals after After that the log no longer
	// holds (trimmed by its bounds or the memory budget, or lost).
	Missed uint64
	// Running lists the session's requests recorded as in flight on any
	// replica (Redis store, node-loss markers), read atomically with the
	// claim; nil for the memory store.
	Running []string
}

// Resume says where a claim's replay starts: after Last when the client
// passed ?last= (HasLast), else after the session's delivered cursor
// (raised to Delivered first: a cursor this node has not written yet).
type Resume struct {
	Last      uint64
	HasLast   bool
	Delivered uint64
}

// LogEntry is one terminal of a session's replay log. Msg empty: a
// terminal lost before it could be logged.
type LogEntry struct {
	Pos uint64
	Msg []byte
}

// Appended is what Store.Append returns.
type Appended struct {
	Pos uint64
	// Msg is the terminal with its position, as logged. It is valid until
	// the session's next Append (the memory store writes a later
	// terminal into the buffer of the entry it drops): copy what is kept
	// longer. Entries returned by Claim and ReadLog are never modified.
	Msg    []byte
	Holder Holder
}

// replayOf turns the log entries after `after` (oldest first, contiguous
// positions ending at pos) into a claim's replay and missed count.
func replayOf(entries iter.Seq[LogEntry], after, pos uint64) (replay []LogEntry, missed uint64) {
	first := pos + 1
	for e := range entries {
		first = e.Pos
		break
	}
	if after+1 < first {
		missed = first - after - 1
	}
	for e := range entries {
		if e.Pos <= after {
			continue
		}
		if len(e.Msg) == 0 {
			missed++
			continue
		}
		replay = append(replay, e)
	}
	return replay, missed
}

// idBytes is the number of random bytes of a session id: 144 bits, more than
// the 128 the contract asks for, and a whole number of base64 characters.
const idBytes = 18

// NewID returns a fresh session id: "s_" and 144 random bits from
// crypto/rand in unpadded base64url (24 characters).
func NewID() string {
	var b [idBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return "s_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// ValidID reports whether id has the shape of an id made by NewID, so that a
// client's ?session= value is never used as a key unchecked.
func ValidID(id string) bool {
	if len(id) != 2+base64.RawURLEncoding.EncodedLen(idBytes) || id[:2] != "s_" {
		return false
	}
	for i := 2; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// clone returns a deep copy of s.
func (s *Session) clone() *Session {
	c := *s
	c.Context = append(json.RawMessage(nil), s.Context...)
	c.History = append([]events.Turn(nil), s.History...)
	return &c
}
