package load

import (
	"bytes"
	"errors"
	"strconv"

	"github.com/segmentio/encoding/json"
)

// Problems the checker finds in a server's answers. Each is counted under its
// text in Result.Errors; none stops a run.
var (
	ErrUnknownID     = errors.New("answer for an id not in flight (unknown or second terminal)")
	ErrSeqOrder      = errors.New("chunk seq out of order")
	ErrNoWelcome     = errors.New("first message is not a welcome")
	ErrBadMessage    = errors.New("message is not a valid protocol object")
	ErrUnexpected    = errors.New("unexpected message type")
	ErrDataMismatch  = errors.New("echoed data differs from the data sent")
	ErrNothingFlying = errors.New("raw echo with no request in flight")
)

// Pending is one request in flight on a connection.
type Pending struct {
	ID     uint64 // per-connection request number, the protocol id in decimal
	Sent   int64  // send time in Unix nanoseconds (the intended time in rate mode)
	Seq    int    // next chunk seq expected
	Worker bool   // a closed-loop worker sent it and sends the next one on its answer
}

// Checker tracks the requests in flight on one connection and verifies the
// answers: ids that match a request in flight, chunks numbered from 0 without
// gaps, exactly one terminal per request. It is used by one goroutine.
type Checker struct {
	inflight []Pending
}

// Start records a request sent.
func (c *Checker) Start(p Pending) { c.inflight = append(c.inflight, p) }

// Len returns the number of requests in flight.
func (c *Checker) Len() int { return len(c.inflight) }

func (c *Checker) find(id uint64) int {
	for i := range c.inflight {
		if c.inflight[i].ID == id {
			return i
		}
	}
	return -1
}

// Chunk accepts chunk seq of request id.
func (c *Checker) Chunk(id uint64, seq int) error {
	i := c.find(id)
	if i < 0 {
		return ErrUnknownID
	}
	if c.inflight[i].Seq != seq {
		return ErrSeqOrder
	}
	c.inflight[i].Seq++
	return nil
}

// Terminal ends request id and returns it; a second terminal for the same
// id, or one for an id never sent, is ErrUnknownID.
func (c *Checker) Terminal(id uint64) (Pending, error) {
	i := c.find(id)
	if i < 0 {
		return Pending{}, ErrUnknownID
	}
	p := c.inflight[i]
	copy(c.inflight[i:], c.inflight[i+1:])
	c.inflight = c.inflight[:len(c.inflight)-1]
	return p, nil
}

// Oldest ends the oldest request in flight: raw echo answers come back in
// the order sent.
func (c *Checker) Oldest() (Pending, error) {
	if len(c.inflight) == 0 {
		return Pending{}, ErrNothingFlying
	}
	return c.Terminal(c.inflight[0].ID)
}

// Envelope is the part of a server message the checker reads.
type Envelope struct {
	Type string          `json:"type"`
	ID   string          `json:"id"`
	Seq  *int            `json:"seq"`
	Code string          `json:"code"`
	Data json.RawMessage `json:"data"`
}

// Answer is what one server message meant for the run.
type Answer struct {
	Done    bool    // a terminal ended a request
	Req     Pending // the request it ended
	Code    string  // the error code when the terminal is an error
	Welcome bool    // the message was the welcome
}

// Protocol checks one protocol-mode message. welcomed says whether the
// welcome was seen; want is the data every echo request carried (nil: do not
// compare).
func (c *Checker) Protocol(msg []byte, welcomed bool, want []byte) (Answer, error) {
	var e Envelope
	if err := json.Unmarshal(msg, &e); err != nil {
		return Answer{}, ErrBadMessage
	}
	if !welcomed {
		if e.Type != "welcome" {
			return Answer{}, ErrNoWelcome
		}
		return Answer{Welcome: true}, nil
	}
	switch e.Type {
	case "pong", "reconnect":
		return Answer{}, nil
	case "chunk", "result", "error":
	default:
		return Answer{}, ErrUnexpected
	}
	id, err := strconv.ParseUint(e.ID, 10, 64)
	if err != nil {
		return Answer{}, ErrUnknownID
	}
	if e.Type == "chunk" {
		if e.Seq == nil {
			return Answer{}, ErrBadMessage
		}
		return Answer{}, c.Chunk(id, *e.Seq)
	}
	p, err := c.Terminal(id)
	if err != nil {
		return Answer{}, err
	}
	a := Answer{Done: true, Req: p, Code: e.Code}
	if e.Type == "error" {
		if a.Code == "" {
			a.Code = "error_without_code"
		}
		return a, nil
	}
	if want != nil && p.Seq == 0 && !bytes.Equal(e.Data, want) {
		return a, ErrDataMismatch
	}
	return a, nil
}

// Raw checks one raw-mode echo: it must be the oldest request's payload,
// which starts with the request number (rawPayload).
func (c *Checker) Raw(msg []byte, size int) (Answer, error) {
	p, err := c.Oldest()
	if err != nil {
		return Answer{}, err
	}
	a := Answer{Done: true, Req: p}
	if len(msg) != size || !bytes.HasPrefix(msg, idPrefix(p.ID)) {
		return a, ErrDataMismatch
	}
	return a, nil
}

// idPrefix is the 20-digit request number that starts every raw payload.
func idPrefix(id uint64) []byte {
	var b [20]byte
	s := strconv.AppendUint(b[:0], id, 10)
	out := make([]byte, 20)
	for i := range out {
		out[i] = '0'
	}
	copy(out[20-len(s):], s)
	return out
}

// rawPayload writes the raw echo payload of request id into buf (len size,
// at least 20 bytes: the request number, then filler).
func rawPayload(buf []byte, id uint64) {
	var b [20]byte
	s := strconv.AppendUint(b[:0], id, 10)
	for i := 0; i < 20-len(s); i++ {
		buf[i] = '0'
	}
	copy(buf[20-len(s):20], s)
}

// protoRequest appends the protocol request {"type":route,"id":id,"data":data}.
func protoRequest(dst []byte, route string, id uint64, data []byte) []byte {
	dst = append(dst, `{"type":"`...)
	dst = append(dst, route...)
	dst = append(dst, `","id":"`...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, `","data":`...)
	dst = append(dst, data...)
	return append(dst, '}')
}

// echoData returns the JSON string used as echo data so that a whole
// protocol request is about size bytes.
func echoData(size int) []byte {
	n := size - len(`{"type":"echo","id":"12345678","data":""}`)
	n = max(n, 0)
	b := make([]byte, 0, n+2)
	b = append(b, '"')
	for i := range n {
		b = append(b, 'a'+byte(i%26))
	}
	return append(b, '"')
}
