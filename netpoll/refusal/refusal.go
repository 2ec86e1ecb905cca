// Package refusal is the one table of handshake refusals of the wire
// contract (section 1): for each refusal code, the HTTP status, the one-line
// JSON body {"error":"<code>"} and any extra response header.
//
// netpoll writes these responses (its own 400, 404, 426, 431 and the
// Gatekeeper's decisions); daemon/auth decides admission and returns rows of
// this table; the gateway passes them through. Nobody else builds a refusal.
//
// It imports only the standard library, so that both netpoll (which must not
// import daemon/) and daemon/auth (which must not import netpoll) can use it.
package refusal

import "net/http"

// Refusal codes: the "error" value of a refused handshake's body.
const (
	// BadRequest: not a valid WebSocket handshake (400); also a PROXY
	// protocol header from a peer that is not a trusted proxy.
	BadRequest = "bad_request"
	// UnsupportedVersion: Sec-WebSocket-Version is not 13 (426, with
	// "Sec-WebSocket-Version: 13").
	UnsupportedVersion = "unsupported_version"
	// HeadersTooLarge: the request head is over the limit (431).
	HeadersTooLarge = "headers_too_large"
	// Unauthorized: token missing, malformed, badly signed, expired, not
	// yet valid, or with the wrong iss/aud (401). The reason is logged,
	// never sent.
	Unauthorized = "unauthorized"
	// Forbidden: resuming someone else's session (403).
	Forbidden = "forbidden"
	// OriginNotAllowed: Origin not in the configured allow-list (403).
	OriginNotAllowed = "origin_not_allowed"
	// NotFound: wrong path (404).
	NotFound = "not_found"
	// BodyNotSupported: a plain request whose body did not arrive with its
	// head, or is chunked (413). Not a WebSocket refusal: plain requests
	// (probes, the demo page) only.
	BodyNotSupported = "body_not_supported"
	// TooManyConnections: the per-IP connection limit is reached (429).
	TooManyConnections = "too_many_connections"
	// RateLimited: the per-IP handshake rate limit is hit (429).
	RateLimited = "rate_limited"
	// Internal: the server failed (500): a Gatekeeper or plain handler bug.
	Internal = "internal"
	// Draining: the node is draining (503).
	Draining = "draining"
	// AtCapacity: the node-wide connection cap is reached (503).
	AtCapacity = "at_capacity"
	// StoreUnavailable: a resume could not be checked because the session
	// store is down (503).
	StoreUnavailable = "store_unavailable"
)

// Refusal is one row of the table. Rows are shared and immutable: do not
// modify the fields or the Body.
type Refusal struct {
	// Status is the HTTP status of the response.
	Status int
	// Code is the "error" value of the body, one of the code constants.
	Code string
	// Header is one extra response header line without CRLF
	// ("Sec-WebSocket-Version: 13" for a 426), or empty.
	Header string
	body   []byte
}

// Body returns the response body: {"error":"<code>"} and a newline. The
// slice is shared: callers must not modify it. It does not allocate.
func (r *Refusal) Body() []byte {
	if r.body == nil { // a Refusal built as a literal outside this package
		return []byte(`{"error":"` + r.Code + `"}` + "\n")
	}
	return r.body
}

// Error returns "handshake refused: <status text> (<code>)".
func (r *Refusal) Error() string {
	return "handshake refused: " + http.StatusText(r.Status) + " (" + r.Code + ")"
}

func row(status int, code, header string) Refusal {
	return Refusal{Status: status, Code: code, Header: header, body: []byte(`{"error":"` + code + `"}` + "\n")}
}

// table is the one table, in status order. It is built once and never
// modified.
var table = [...]Refusal{
	row(http.StatusBadRequest, BadRequest, ""),
	row(http.StatusUnauthorized, Unauthorized, ""),
	row(http.StatusForbidden, Forbidden, ""),
	row(http.StatusForbidden, OriginNotAllowed, ""),
	row(http.StatusNotFound, NotFound, ""),
	row(http.StatusRequestEntityTooLarge, BodyNotSupported, ""),
	row(http.StatusUpgradeRequired, UnsupportedVersion, "Sec-WebSocket-Version: 13"),
	row(http.StatusTooManyRequests, TooManyConnections, ""),
	row(http.StatusTooManyRequests, RateLimited, ""),
	row(http.StatusRequestHeaderFieldsTooLarge, HeadersTooLarge, ""),
	row(http.StatusInternalServerError, Internal, ""),
	row(http.StatusServiceUnavailable, Draining, ""),
	row(http.StatusServiceUnavailable, AtCapacity, ""),
	row(http.StatusServiceUnavailable, StoreUnavailable, ""),
}

// Of returns the table's row for code, or nil when code is not in the
// table.
func Of(code string) *Refusal {
	for i := range table {
		if table[i].Code == code {
			return &table[i]
		}
	}
	return nil
}

// All returns every row of the table, in status order (documentation and
// tests). The rows are shared: do not modify them.
func All() []*Refusal {
	out := make([]*Refusal, len(table))
	for i := range table {
		out[i] = &table[i]
	}
	return out
}
