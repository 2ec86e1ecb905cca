package dispatch

import (
	"context"
	"errors"
	"fmt"

	"github.com/orchestratord/orchestratord/daemon/backends"
)

// Causes given to a request's context when it is stopped. Code maps them.
var (
	// ErrTimeout: one of the route's deadlines passed. It wraps
	// context.DeadlineExceeded so backends count it as a breaker failure
	// whichever of the three deadlines fired.
	ErrTimeout = fmt.Errorf("route deadline passed: %w", context.DeadlineExceeded)
	// ErrCanceled: the client sent cancel.
	ErrCanceled = errors.New("canceled by the client")
	// ErrDraining: the node stopped the request at the end of a drain.
	ErrDraining = errors.New("node is draining")
	// ErrStore: the session store failed.
	ErrStore = errors.New("session store unavailable")
)

// Protocol error codes (contract section 2).
const (
	CodeBadRequest         = "bad_request"
	CodeUnknownType        = "unknown_type"
	CodeDuplicateID        = "duplicate_id"
	CodeRateLimited        = "rate_limited"
	CodeOverloaded         = "overloaded"
	CodeDraining           = "draining"
	CodeBackendUnavailable = "backend_unavailable"
	CodeBackendRejected    = "backend_rejected"
	CodeBackendError       = "backend_error"
	CodeTimeout            = "timeout"
	CodeCanceled           = "canceled"
)

// Code returns the protocol error code for err. Add cases here only.
func Code(err error) string {
	var be *backends.Error
	switch {
	case errors.Is(err, ErrCanceled):
		return CodeCanceled
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return CodeTimeout
	case errors.Is(err, ErrDraining):
		return CodeDraining
	case errors.Is(err, backends.ErrOverloaded):
		return CodeOverloaded
	case errors.Is(err, backends.ErrUnavailable):
		return CodeBackendUnavailable
	case errors.As(err, &be) && be.Status >= 400 && be.Status < 500:
		return CodeBackendRejected
	}
	return CodeBackendError
}

// message returns the text sent to the client with code: safe, never the
// cause (which goes to the log).
func message(code string, err error) string {
	switch code {
	case CodeCanceled:
		return "request canceled"
	case CodeTimeout:
		return "the route's deadline passed"
	case CodeDraining:
		return "the node is draining; retry on another connection"
	case CodeOverloaded:
		return "too many requests in flight"
	case CodeBackendUnavailable:
		return "backend unavailable"
	case CodeBackendRejected:
		var be *backends.Error
		if errors.As(err, &be) && be.Message != "" {
			return be.Message
		}
		return "backend rejected the request"
	}
	if errors.Is(err, ErrStore) {
		return "session store unavailable"
	}
	return "backend error"
}
