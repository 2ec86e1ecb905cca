package auth

import "net/http"

// Handshake refusal codes: the "error" value of the one-line JSON body of a
// refused handshake (wire contract, section 1). Status maps each to its HTTP
// status.
const (
	// CodeBadRequest: not a valid WebSocket handshake (400).
	CodeBadRequest = "bad_request"
	// CodeUnauthorized: token missing, malformed, badly signed, expired, not
	// yet valid, or with the wrong iss/aud (401). The reason is logged, never
	// sent.
	CodeUnauthorized = "unauthorized"
	// CodeForbidden: resuming someone else's session (403); used by the
	// gateway.
	CodeForbidden = "forbidden"
	// CodeOriginNotAllowed: Origin not in the configured allow-list (403).
	CodeOriginNotAllowed = "origin_not_allowed"
	// CodeNotFound: wrong path (404).
	CodeNotFound = "not_found"
	// CodeTooManyConnections: the per-IP connection limit is reached (429).
	CodeTooManyConnections = "too_many_connections"
	// CodeRateLimited: the per-IP handshake rate limit is hit (429).
	CodeRateLimited = "rate_limited"
	// CodeDraining: the node is draining (503).
	CodeDraining = "draining"
	// CodeAtCapacity: the node-wide connection cap is reached (503).
	CodeAtCapacity = "at_capacity"
	// CodeStoreUnavailable: a resume could not be checked because the
	// session store is down (503); used by the gateway.
	CodeStoreUnavailable = "store_unavailable"
)

// Status returns the HTTP status of a handshake refusal code: the one place
// that maps handshake refusals to statuses. An unknown code is a 400.
func Status(code string) int {
	switch code {
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case CodeForbidden, CodeOriginNotAllowed:
		return http.StatusForbidden
	case CodeNotFound:
		return http.StatusNotFound
	case CodeTooManyConnections, CodeRateLimited:
		return http.StatusTooManyRequests
	case CodeDraining, CodeAtCapacity, CodeStoreUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusBadRequest
}

// Refusal is a handshake refusal: the HTTP status and the code of the
// one-line JSON body {"error":"<code>"}. A Refusal is immutable once built and
// may be shared by any number of goroutines.
type Refusal struct {
	// Status is the HTTP status of the response.
	Status int
	// Code is the "error" value of the body, one of the Code constants.
	Code string
	body []byte
}

// NewRefusal builds the Refusal for code, with its status from Status and its
// body computed once. code must be a plain identifier (letters, digits, '_'),
// as all the Code constants are; it is not JSON-escaped.
func NewRefusal(code string) *Refusal {
	return &Refusal{
		Status: Status(code),
		Code:   code,
		body:   []byte(`{"error":"` + code + `"}` + "\n"),
	}
}

// Error returns "handshake refused: <status> <code>".
func (r *Refusal) Error() string {
	return "handshake refused: " + http.StatusText(r.Status) + " (" + r.Code + ")"
}

// Body returns the response body {"error":"<code>"} followed by a newline.
// The slice is shared: callers must not modify it. It does not allocate.
func (r *Refusal) Body() []byte {
	if r.body == nil { // a Refusal built as a literal
		return []byte(`{"error":"` + r.Code + `"}` + "\n")
	}
	return r.body
}

// refusals are the Gate's prebuilt refusals, shared and never modified.
type refusals struct {
	unauthorized, origin, notFound, tooMany, rateLimited, draining, atCapacity *Refusal
}

func newRefusals() refusals {
	return refusals{
		unauthorized: NewRefusal(CodeUnauthorized),
		origin:       NewRefusal(CodeOriginNotAllowed),
		notFound:     NewRefusal(CodeNotFound),
		tooMany:      NewRefusal(CodeTooManyConnections),
		rateLimited:  NewRefusal(CodeRateLimited),
		draining:     NewRefusal(CodeDraining),
		atCapacity:   NewRefusal(CodeAtCapacity),
	}
}
