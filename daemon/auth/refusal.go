package auth

import "github.com/orchestratord/orchestratord/netpoll/refusal"

// Handshake refusal codes: the "error" value of the one-line JSON body of a
// refused handshake (wire contract, section 1). They are the codes of the
// one refusal table, netpoll/refusal, which gives each its HTTP status;
// auth decides which one applies.
const (
	// CodeBadRequest: not a valid WebSocket handshake (400); decided by
	// the engine.
	CodeBadRequest = refusal.BadRequest
	// CodeUnsupportedVersion: Sec-WebSocket-Version other than 13 (426);
	// decided by the engine.
	CodeUnsupportedVersion = refusal.UnsupportedVersion
	// CodeHeadersTooLarge: request head over ws.max_header_bytes (431);
	// decided by the engine.
	CodeHeadersTooLarge = refusal.HeadersTooLarge
	// CodeUnauthorized: token missing, malformed, badly signed, expired, not
	// yet valid, or with the wrong iss/aud (401). The reason is logged, never
	// sent.
	CodeUnauthorized = refusal.Unauthorized
	// CodeForbidden: resuming someone else's session (403); the gateway
	// finds out and calls Gate.Reject.
	CodeForbidden = refusal.Forbidden
	// CodeOriginNotAllowed: Origin not in the configured allow-list (403).
	CodeOriginNotAllowed = refusal.OriginNotAllowed
	// CodeNotFound: wrong path (404).
	CodeNotFound = refusal.NotFound
	// CodeTooManyConnections: the per-IP connection limit is reached (429).
	CodeTooManyConnections = refusal.TooManyConnections
	// CodeRateLimited: the per-IP handshake rate limit is hit (429).
	CodeRateLimited = refusal.RateLimited
	// CodeDraining: the node is draining (503).
	CodeDraining = refusal.Draining
	// CodeAtCapacity: the node-wide connection cap is reached (503).
	CodeAtCapacity = refusal.AtCapacity
	// CodeStoreUnavailable: a resume could not be checked because the
	// session store is down (503); the gateway finds out and calls
	// Gate.Reject.
	CodeStoreUnavailable = refusal.StoreUnavailable
)

// Refusal is a handshake refusal: a row of the one refusal table (HTTP
// status, code, body). Rows are shared and immutable.
type Refusal = refusal.Refusal

// RefusalOf returns the table's row for code; an unknown code is a bad
// request.
func RefusalOf(code string) *Refusal {
	if r := refusal.Of(code); r != nil {
		return r
	}
	return refusal.Of(refusal.BadRequest)
}

// Status returns the HTTP status of a handshake refusal code, from the one
// table. An unknown code is a 400.
func Status(code string) int { return RefusalOf(code).Status }

// refusals are the Gate's rows of the table, looked up once.
type refusals struct {
	unauthorized, origin, notFound, tooMany, rateLimited, draining, atCapacity *Refusal
}

func newRefusals() refusals {
	return refusals{
		unauthorized: RefusalOf(CodeUnauthorized),
		origin:       RefusalOf(CodeOriginNotAllowed),
		notFound:     RefusalOf(CodeNotFound),
		tooMany:      RefusalOf(CodeTooManyConnections),
		rateLimited:  RefusalOf(CodeRateLimited),
		draining:     RefusalOf(CodeDraining),
		atCapacity:   RefusalOf(CodeAtCapacity),
	}
}
