package sessions

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/orchestratord/orchestratord/daemon/events"
)

// The survivor's side of node loss (nodeloss.go has the recording side):
// the sweeper finds nodes whose process is gone and settles their runs,
// each with one node_lost terminal or, on a retry_on_node_loss route, a
// rerun on this node.

// sweeper checks the registered nodes every sweep period, and at the
// moment a node's liveness key is due to lapse when that comes sooner
// (see sweepOnce): a crash is seen when its key lapses, not up to a
// sweep period later.
func (n *nodeLoss) sweeper() {
	defer n.wg.Done()
	t := time.NewTimer(n.sweep)
	defer t.Stop()
	for {
		t.Reset(n.sweepOnce(n.ctx))
		select {
		case <-n.ctx.Done():
			n.sweepMu.Lock()
			if len(n.owing) > 0 {
				n.m.log.Error("node_lost terminals not written at close", slog.Int("messages", len(n.owing)))
			}
			n.sweepMu.Unlock()
			return
		case <-t.C:
		}
	}
}

// lapseSlack is how long after a node's key is due to lapse the sweep
// that checks it runs: the key's remaining time is read in milliseconds.
const lapseSlack = 5 * time.Millisecond

// sweepOnce settles the runs of every node whose process is gone: a node
// whose liveness lapsed, or an earlier process of a node that restarted.
// The records of a live process are read once per process (its own runs
// are never orphans) and skipped after. It returns when the next sweep
// is due: the sweep period, or sooner, just after the moment the key of
// another node is due to lapse (a live node refreshes its key long
// before: the sweep then finds it set again).
func (n *nodeLoss) sweepOnce(ctx context.Context) time.Duration {
	n.sweepMu.Lock()
	defer n.sweepMu.Unlock()
	due := time.Now().Add(n.sweep)
	next := func() time.Duration { return max(time.Until(due), 0) }
	n.writeOwed(ctx)
	nodes, err := n.rs.nodeList(ctx)
	if err != nil {
		if ctx.Err() == nil {
			n.m.warn("node-loss sweep: list nodes", slog.Any("err", err))
		}
		return next()
	}
	read := time.Now() // after the answer: never before the lapse
	for name, nl := range nodes {
		if nl.token != "" && name != n.m.node && nl.left >= 0 {
			if at := read.Add(nl.left + lapseSlack); at.Before(due) {
				due = at
			}
		}
	}
	for name, nl := range nodes {
		if ctx.Err() != nil {
			return next()
		}
		live := nl.token
		if live != "" && n.seen[name] == live {
			continue
		}
		if name == n.m.node && live != n.token {
			continue // this node's own key lapsed or was taken: the others judge
		}
		if live == "" {
			delete(n.seen, name)
		}
		if n.sweepNode(ctx, name, live) && live != "" {
			n.seen[name] = live
		}
	}
	for name := range n.seen {
		if _, ok := nodes[name]; !ok {
			delete(n.seen, name)
		}
	}
	return next()
}

// sweepNode settles the orphaned runs of node (live: the token of its live
// process, "" if none). It reports whether every run was settled.
func (n *nodeLoss) sweepNode(ctx context.Context, node, live string) bool {
	recs, err := n.rs.scanRuns(ctx, node)
	if err != nil {
		n.m.warn("node-loss sweep: read runs", slog.String("node", node), slog.Any("err", err))
		return false
	}
	var orphans, settled []runRecord
	for _, r := range recs {
		switch {
		case r.SID == "":
			settled = append(settled, r) // unreadable
		case r.Token != live:
			orphans = append(orphans, r)
		}
	}
	complete := true
	// Runs whose route retries go through the take-then-rerun path; the
	// others are taken and answered with node_lost in one script each.
	var retry, lost []runRecord
	for _, r := range orphans {
		if r.Data != nil && n.rerun.Load() != nil {
			retry = append(retry, r)
		} else {
			lost = append(lost, r)
		}
	}
	won, rerun := 0, 0
	if len(lost) > 0 {
		for i, err := range n.takeLost(ctx, lost) {
			switch {
			case err == nil:
				won++
			case errors.Is(err, errRunNotTaken) || errors.Is(err, ErrNotFound):
			default:
				if complete && ctx.Err() == nil {
					n.m.warn("node-loss sweep: take a run over", slog.String("node", node), slog.Any("err", err))
				}
				complete = false
				continue // its record stays: the next sweep (here or on another survivor) retries
			}
			settled = append(settled, lost[i])
		}
	}
	if len(retry) > 0 {
		w, r, gone, ok := n.handOver(ctx, node, retry)
		won, rerun = won+w, rerun+r
		complete = complete && ok
		settled = append(settled, gone...)
	}
	if len(n.owing) > 0 {
		n.writeOwed(ctx)
	}
	if won > 0 {
		n.m.log.Warn("replica lost: its requests end with node_lost, or run again here where their route says so",
			slog.String("node", node), slog.Int("requests", won), slog.Int("run_again", rerun))
	}
	left := int64(-1)
	if len(settled) > 0 {
		if left, err = n.rs.clearRuns(ctx, node, settled); err != nil {
			n.m.warn("node-loss sweep: clear runs", slog.String("node", node), slog.Any("err", err))
			return false
		}
	} else if len(recs) == 0 {
		left = 0
	}
	if live == "" && left == 0 && complete {
		if err := n.rs.forgetNode(ctx, node); err != nil {
			n.m.warn("node-loss sweep: unregister node", slog.String("node", node), slog.Any("err", err))
		}
	}
	return complete
}

// takeLost takes each orphaned run of runs over and writes its node_lost
// terminal in the same script (luaRunTerm, mode take): the marker leaves
// the store only with its terminal in the log, so a survivor that dies
// mid-sweep loses nothing (what it had not taken is still recorded, and
// the next sweep, here or elsewhere, takes it). Each run goes through its
// session's turn, like any terminal of this node; up to takeBatch run at
// once (rueidis pipelines them). errs[i] is nil when this node won
// runs[i], errRunNotTaken when its node or another survivor settled it,
// ErrNotFound when the session expired (the marker is removed), else the
// store's error (nothing done).
func (n *nodeLoss) takeLost(ctx context.Context, runs []runRecord) []error {
	errs := make([]error, len(runs))
	sem := make(chan struct{}, takeBatch)
	var wg sync.WaitGroup
	for i, r := range runs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			msg := events.AppendError(nil, r.Req, CodeNodeLost, nodeLostMessage)
			l := n.m.holdLocal(r.SID)
			defer n.m.unhold(l)
			_, errs[i] = n.m.terminal(ctx, l, r.Req, msg, nil, &runTerm{token: r.Token, take: true})
		}()
	}
	wg.Wait()
	return errs
}

// Rerun runs again, on this node, a request taken over from a lost replica
// whose route has retry_on_node_loss (dispatch's Router.Rerun): it begins
// the request anew with BeginRoute and sends a restart notice first. It
// reports false when it cannot (route gone or without retry, draining,
// duplicate id); the request then ends with node_lost.
type Rerun func(sessionID, user, requestID, route string, data []byte) bool

// SetRerun installs fn for the node-loss sweeper (Redis store; a no-op on
// the memory store, which has no survivor).
func (m *Manager) SetRerun(fn Rerun) {
	if m.nl != nil {
		m.nl.rerun.Store(&fn)
	}
}

// handOver takes over the orphaned runs of node whose route retries, to
// run them again here, without a moment where a crash of this node would
// leave them unanswered: (1) this node's inflight entries for the reruns
// are written first (one HSET); (2) per run, luaRunSwap makes the marker
// name this node's token instead of the dead one (one script in the
// session's slot); (3) the Rerun hook runs it, and its BeginRoute adopts
// the record written in (1) instead of recording anew. If this node dies
// at any point, the run is recorded either under the dead token (before
// the swap) or under this node's, with this node's entry: the next
// survivor takes it over. A rerun the hook refuses ends with node_lost
// through the normal end's script. It returns the runs won and run
// again, the dead node's entries settled, and whether all were settled.
func (n *nodeLoss) handOver(ctx context.Context, node string, retry []runRecord) (won, rerun int, settled []runRecord, complete bool) {
	complete = true
	fn := n.rerun.Load()
	sw := make([]*swapping, len(retry))
	recs := make([]*runRec, len(retry))
	for i, r := range retry {
		key := r.SID + " " + r.Req
		st := n.swaps[key]
		if st == nil {
			rec := &runRec{seq: n.seq.Add(1), sid: r.SID, req: r.Req, route: r.Route, data: r.Data,
				started: time.Now(), sent: make(chan struct{}), stored: true}
			rec.state.Store(runSent)
			close(rec.sent)
			st = &swapping{rec: rec}
			n.swaps[key] = st
		}
		sw[i], recs[i] = st, st.rec
	}
	if err := n.rs.recordAdopted(ctx, n.m.node, n.token, recs); err != nil {
		if ctx.Err() == nil {
			n.m.warn("node-loss sweep: record reruns", slog.String("node", node), slog.Any("err", err))
		}
		return 0, 0, nil, false
	}
	var lost []runRecord
	for i, r := range retry {
		key, st := r.SID+" "+r.Req, sw[i]
		user, err := n.m.store.Owner(ctx, r.SID)
		if errors.Is(err, ErrNotFound) && !st.maybe {
			// Expired: nothing to run or answer; the take removes the
			// marker, and this node's entry goes.
			delete(n.swaps, key)
			n.endedRun(st.rec)
			lost = append(lost, r)
			continue
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			complete = false
			continue
		}
		ok, err := n.rs.swapRun(ctx, r.SID, r.Req, r.Token, n.token, st.maybe)
		if err != nil {
			if complete && ctx.Err() == nil {
				n.m.warn("node-loss sweep: hand a run over", slog.String("node", node), slog.Any("err", err))
			}
			st.maybe = st.maybe || maybeRan(err)
			complete = false
			continue
		}
		delete(n.swaps, key)
		settled = append(settled, r)
		if !ok {
			n.endedRun(st.rec) // settled by its node or another survivor
			continue
		}
		won++
		n.mu.Lock()
		n.adopt[key] = st.rec
		n.mu.Unlock()
		if fn != nil && user != "" && (*fn)(r.SID, user, r.Req, r.Route, r.Data) {
			rerun++
			n.m.log.Info("request of a lost replica runs again here", slog.String("session", r.SID),
				slog.String("request", r.Req), slog.String("route", r.Route))
			continue
		}
		n.mu.Lock()
		if n.adopt[key] == st.rec {
			delete(n.adopt, key)
		}
		n.mu.Unlock()
		n.owing = append(n.owing, owedEnd{rec: st.rec})
	}
	if len(lost) > 0 {
		for i, err := range n.takeLost(ctx, lost) {
			if err == nil || errors.Is(err, errRunNotTaken) || errors.Is(err, ErrNotFound) {
				settled = append(settled, lost[i])
			} else {
				complete = false
			}
		}
	}
	return won, rerun, settled, complete
}

// adopted returns the record of a rerun this node took over for request
// req of session sid whose data is data (the same slice the Rerun hook was
// given: a request the client sent again is not mistaken for it), and
// forgets it; nil if none.
func (n *nodeLoss) adopted(sid, req string, data []byte) *runRec {
	if len(data) == 0 {
		return nil
	}
	key := sid + " " + req
	n.mu.Lock()
	defer n.mu.Unlock()
	r := n.adopt[key]
	if r == nil || len(r.data) == 0 || &r.data[0] != &data[0] {
		return nil
	}
	delete(n.adopt, key)
	return r
}

// writeOwed ends with node_lost every rerun this node took over and that
// was refused; those the store refuses wait for the next sweep (their
// marker names this node: if it dies meanwhile, a survivor takes them).
func (n *nodeLoss) writeOwed(ctx context.Context) {
	var keep []owedEnd
	for _, o := range n.owing {
		r := o.rec
		msg := events.AppendError(nil, r.req, CodeNodeLost, nodeLostMessage)
		l := n.m.holdLocal(r.sid)
		_, err := n.m.terminal(ctx, l, r.req, msg, nil, &runTerm{token: n.token, maybeDone: o.maybe})
		n.m.unhold(l)
		switch {
		case err == nil, errors.Is(err, ErrNotFound), errors.Is(err, errRunDropped), errors.Is(err, errRunSettled):
			n.endedRun(r)
		default:
			if ctx.Err() == nil {
				n.m.warn("node_lost terminal not written yet, retried", slog.String("session", r.sid),
					slog.String("request", r.req), slog.Any("err", err))
			}
			o.maybe = o.maybe || heldMaybeRan(err)
			keep = append(keep, o)
		}
	}
	n.owing = keep
}
