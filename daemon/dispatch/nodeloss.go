package dispatch

import (
	"context"
	"math"

	"github.com/orchestratord/orchestratord/daemon/backends"
	"github.com/orchestratord/orchestratord/daemon/events"
	"github.com/orchestratord/orchestratord/daemon/traceparent"
)

// CodeNodeLost is the terminal error of a request whose replica stopped
// without draining; a surviving replica writes it (sessions.CodeNodeLost,
// contract v1.1 section 4a). dispatch never produces it itself.
const CodeNodeLost = "node_lost"

// RouteBeginner is implemented by a Sessions whose store records requests
// in flight for node-loss recovery: it needs the route of each request that
// runs on its own goroutine. Optional: without it, Begin is used.
// retry is the request's data when the route has retry_on_node_loss (a
// survivor runs it again), else nil.
type RouteBeginner interface {
	BeginRoute(sessionID, requestID, route string, retry []byte) Output
}

// RecordWaiter is implemented by an Output whose request is recorded for
// node-loss recovery asynchronously (sessions.Stream): Recorded returns
// once the record is in the store (true) or could not be written.
type RecordWaiter interface {
	Recorded(ctx context.Context) bool
}

// waitRecorded holds a request's backend call until its node-loss record
// is in the store (contract v1.1 section 4a): a replica that dies after
// that leaves a record that a survivor ends with node_lost; one that dies
// before has called nothing, and the request is neither in the resume's
// inflight list nor answered, so the client sends it again. The wait is
// one pipelined round trip shared by the requests begun meanwhile, on the
// request's own goroutine (never a poller, no lock held). A record that
// could not be written (the store unreachable) does not stop the request:
// it runs unrecorded, as its terminal then waits in memory anyway.
func waitRecorded(ctx context.Context, out Output) {
	if w, ok := out.(RecordWaiter); ok {
		w.Recorded(ctx)
	}
}

// beginRun starts the output of a request that runs on its own goroutine
// (never on a poller worker: its End may wait one store round trip). A
// request run again after node loss starts with the restart notice.
func beginRun(store Sessions, rt *route, req *backends.Request, restart bool) Output {
	var out Output
	if rb, ok := store.(RouteBeginner); ok {
		var retry []byte
		if rt.retry {
			retry = req.Data
			if len(retry) == 0 {
				retry = []byte("null")
			}
		}
		out = rb.BeginRoute(req.SessionID, req.ID, rt.name, retry)
	} else {
		out = store.Begin(req.SessionID, req.ID)
	}
	if restart {
		out.Chunk(events.AppendRestart(nil, req.ID))
	}
	return out
}

// Rerun runs again, on this node, request requestID of session sessionID
// (of user), taken over from a replica that was lost while running it:
// its route has retry_on_node_loss. The client gets a restart notice, then
// the chunks from seq 0 and one terminal. It reports false when the
// request cannot run here (route gone or no longer retried, inline, node
// draining, id already in flight): the caller then ends it with node_lost.
// It does not block (sessions.Rerun; called on the node-loss sweeper).
func (r *Router) Rerun(sessionID, user, requestID, route string, data []byte) bool {
	rt, ok := r.table.Load().routes[route]
	if !ok || !rt.retry || rt.inline {
		return false
	}
	r.wg.Add(1)
	if r.draining.Load() {
		r.wg.Done()
		return false
	}
	// Admitted once already, on the lost replica: counted, not refused.
	r.inflight.Add(1)
	ctx, cancel := context.WithCancelCause(context.Background())
	s, release := r.store.Hold(sessionID, user)
	dup, full := s.Register(requestID, cancel, math.MaxInt)
	release() // the request now holds the session's record
	if dup || full {
		r.inflight.Add(-1)
		r.wg.Done()
		cancel(nil)
		return false
	}
	req := &backends.Request{ID: requestID, Type: rt.name, SessionID: sessionID, UserID: user, Data: data}
	var trace string
	req.TraceParent, trace = traceparent.New(s.TraceID())
	go r.run(ctx, cancel, s, rt, req, trace, true)
	return true
}
