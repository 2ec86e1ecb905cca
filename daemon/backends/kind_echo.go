package backends

import (
	"bytes"
	"context"
	"time"
)

// echoBackend answers the request's data as the result, after an optional
// delay that honours ctx.
type echoBackend struct {
	delay time.Duration
}

// Call returns a copy of req.Data.
func (b echoBackend) Call(ctx context.Context, req *Request, _ Emit) (Result, error) {
	if b.delay > 0 {
		t := time.NewTimer(b.delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return Result{}, ctxErr(ctx)
		}
	} else if ctx.Err() != nil {
		return Result{}, ctxErr(ctx)
	}
	var data []byte
	if len(req.Data) > 0 {
		data = bytes.Clone(req.Data)
	}
	return Result{Data: data}, nil
}
