package lifecycle

import (
	"context"
	"log/slog"
	"time"
)

// Steps are the parts of a drain, called in the contract's order by Drain.
// Every field is required.
type Steps struct {
	// Start: /readyz 503 and new handshakes 503 at once; idle connections
	// get reconnect and close 1012; new requests get draining; busy
	// connections follow as their last request ends.
	Start func()
	// StopListening closes the listeners once the load balancer had
	// lb_grace to see the failing probe.
	StopListening func()
	// Wait returns when every request in flight has ended (nil) or ctx is
	// done (ctx's error). Drain stops waiting at the deadline even when
	// Wait does not return.
	Wait func(ctx context.Context) error
	// Abort runs at drain.timeout: detach the connections so terminals go
	// to the session outboxes, then cancel what is left; it returns when
	// the cancelled requests have written their terminals (or after a
	// short bound).
	Abort func()
	// Close closes the remaining connections (1001) and flushes the
	// session store.
	Close func()
}

// Timing is the drain's timing (config drain.*).
type Timing struct {
	// LBGrace is how long the listener stays open after readiness fails.
	LBGrace time.Duration
	// Timeout bounds the whole drain, counted from its start.
	Timeout time.Duration
}

// exitSlack is added to the drain timeout in the EXTEND_TIMEOUT_USEC sent
// to systemd: Abort and Close take a few seconds past the timeout.
const exitSlack = 10 * time.Second

// Drain runs the drain sequence and returns once the process may exit:
//
//  1. STOPPING=1, then Start (readiness fails, idle connections leave);
//  2. after LBGrace, StopListening — also when every request ended
//     earlier, so the load balancer always sees the failing probe before
//     connections are refused;
//  3. Wait for the requests in flight, until Timeout after the start;
//  4. Abort, only when Wait did not finish in time;
//  5. Close.
//
// n may be nil.
func Drain(t Timing, s Steps, n *Notifier, log *slog.Logger) {
	start := time.Now()
	deadline := start.Add(t.Timeout)
	log.Info("drain started", "lb_grace", t.LBGrace.String(), "timeout", t.Timeout.String())
	n.Stopping()
	n.ExtendTimeout(t.Timeout + exitSlack)
	n.Status("draining")
	s.Start()

	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	grace := time.NewTimer(t.LBGrace)
	defer grace.Stop()
	waitDone := make(chan error, 1) // buffered: a late Wait never blocks
	go func() { waitDone <- s.Wait(ctx) }()

	var (
		waitErr error
		waited  bool
	)
	// The listener stays open for lb_grace (handshakes get 503) while
	// requests keep finishing.
	select {
	case <-grace.C:
	case waitErr = <-waitDone:
		waited = true
		select {
		case <-grace.C:
		case <-ctx.Done():
		}
	}
	s.StopListening()
	if !waited {
		select {
		case waitErr = <-waitDone:
		case <-ctx.Done():
			// Prefer Wait's own answer when it is already there.
			select {
			case waitErr = <-waitDone:
			default:
				waitErr = ctx.Err()
			}
		}
	}
	if waitErr != nil {
		log.Warn("drain timeout reached: cancelling what is left; terminals go to session outboxes",
			"after", time.Since(start).String(), "err", waitErr)
		n.Status("drain timeout: cancelling requests in flight")
		s.Abort()
	}
	s.Close()
	log.Info("drain finished", "took", time.Since(start).String(), "aborted", waitErr != nil)
}
