package backends

import (
	"unicode"
	"unicode/utf8"

	"github.com/segmentio/encoding/json"

	"github.com/orchestratord/orchestratord/daemon/traceparent"
)

// maxMessageBytes bounds a backend message passed on to the client.
const maxMessageBytes = 256

// requestBody is the JSON body of the http and nats kinds (contract 3).
type requestBody struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Session requestSession  `json:"session"`
	Data    json.RawMessage `json:"data"`
}

type requestSession struct {
	ID      string          `json:"id"`
	User    string          `json:"user"`
	Context json.RawMessage `json:"context"`
}

var (
	emptyObject = json.RawMessage(`{}`)
	jsonNull    = json.RawMessage(`null`)
)

// encodeBody appends the request body of req to dst.
func encodeBody(dst []byte, req *Request) ([]byte, error) {
	b := requestBody{
		ID:   req.ID,
		Type: req.Type,
		Session: requestSession{
			ID:      req.SessionID,
			User:    req.UserID,
			Context: req.Context,
		},
		Data: req.Data,
	}
	if len(b.Session.Context) == 0 {
		b.Session.Context = emptyObject
	}
	if len(b.Data) == 0 {
		b.Data = jsonNull
	}
	return json.Append(dst, &b, 0)
}

// traceParent returns req's traceparent, or a new valid W3C one (version
// 00, random trace and span ids, sampled).
func traceParent(req *Request) string {
	if req.TraceParent != "" {
		return req.TraceParent
	}
	tp, _ := traceparent.New("")
	return tp
}

// safeMessage makes backend text fit for a client: valid UTF-8, no control
// characters, trimmed and at most maxMessageBytes long.
func safeMessage(b []byte) string {
	out := make([]byte, 0, min(len(b), maxMessageBytes))
	space := false
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		b = b[n:]
		if r == utf8.RuneError && n <= 1 {
			r = '?'
		}
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			space = len(out) > 0
			continue
		}
		if space {
			if len(out)+1 > maxMessageBytes {
				break
			}
			out = append(out, ' ')
			space = false
		}
		if len(out)+utf8.RuneLen(r) > maxMessageBytes {
			break
		}
		out = utf8.AppendRune(out, r)
	}
	return string(out)
}

// rejectionMessage extracts the backend's message from a 4xx body:
// {"error":{"message":..}}, {"error":".."}, {"message":".."} or the text.
func rejectionMessage(body []byte) string {
	if firstByte(body) == '{' {
		var v struct {
			Error   json.RawMessage `json:"error"`
			Message string          `json:"message"`
		}
		if json.Unmarshal(body, &v) == nil {
			if v.Error != nil && !isNull(v.Error) {
				if m := errorMessage(v.Error); m != "backend error" {
					return m
				}
			}
			if v.Message != "" {
				return safeMessage([]byte(v.Message))
			}
		}
	}
	return safeMessage(body)
}
