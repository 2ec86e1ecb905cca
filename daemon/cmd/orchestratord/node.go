package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orchestratord/orchestratord/admin"
	"github.com/orchestratord/orchestratord/daemon/auth"
	"github.com/orchestratord/orchestratord/daemon/backends"
	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/dispatch"
	"github.com/orchestratord/orchestratord/daemon/gateway"
	"github.com/orchestratord/orchestratord/daemon/sessions"
	"github.com/orchestratord/orchestratord/daemon/telemetry"
	"github.com/orchestratord/orchestratord/netpoll"
)

// node is the daemon's state as the admin page, metrics, systemd status
// and reload see it.
type node struct {
	cfg     config.Config // as started; listen.* never changes
	current atomic.Pointer[config.Config]
	eng     *netpoll.Engine
	gw      *gateway.Gateway
	router  *dispatch.Router
	mgr     *sessions.Manager
	meter   backends.Meter // where every backend set reports its calls
	gc      *gcTuner       // runtime.gc_percent

	drainAt atomic.Pointer[time.Time] // when the drain started; nil while serving

	mu      sync.Mutex // guards set and retired
	set     *backends.Set
	retired []*backends.Set // replaced by a reload, calls maybe still running
	stop    chan struct{}   // closed at exit: retirers and the heap settler end at once
	wg      sync.WaitGroup  // retirer goroutines and the heap settler
}

// Name implements admin.Node.
func (n *node) Name() string { return n.cfg.Node }

// Draining implements admin.Node.
func (n *node) Draining() bool { return n.gw.Draining() }

// DrainDeadline implements admin.Node: the drain's start and the moment
// what is left is cancelled (start + drain.timeout in force).
func (n *node) DrainDeadline() (started, deadline time.Time) {
	at := n.drainAt.Load()
	if at == nil {
		return time.Time{}, time.Time{}
	}
	return *at, at.Add(n.current.Load().Drain.Timeout.D())
}

// startDrain records the drain's start (lifecycle's Steps.Start).
func (n *node) startDrain(now time.Time) { n.drainAt.CompareAndSwap(nil, &now) }

// Counters implements admin.Node.
func (n *node) Counters() admin.Counters {
	in, out := n.gw.Messages()
	return admin.Counters{
		Connections: n.eng.Len(),
		Sessions:    n.gw.Attached(),
		InFlight:    n.router.InFlight(),
		MsgsIn:      in,
		MsgsOut:     out,
	}
}

func (n *node) gauges() telemetry.Gauges {
	_, detached, bytes := n.mgr.Counts()
	return telemetry.Gauges{
		Connections:  n.eng.Len(),
		Sessions:     n.gw.Attached(),
		Detached:     detached,
		SessionBytes: bytes,
		InFlight:     n.router.InFlight(),
		Draining:     n.gw.Draining(),
	}
}

func (n *node) backends() *backends.Set {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.set
}

// backendGauges is the scrape-time backend state of the set in force.
func (n *node) backendGauges() []telemetry.Backend {
	snap := n.backends().Snapshot()
	out := make([]telemetry.Backend, 0, len(snap))
	for _, b := range snap {
		tb := telemetry.Backend{Name: b.Name, InFlight: b.Inflight, Capacity: b.MaxConcurrent}
		for _, e := range b.Endpoints {
			tb.Endpoints = append(tb.Endpoints, telemetry.Endpoint{URL: e.URL, Breaker: e.Breaker,
				Healthy: e.Health != backends.HealthUnhealthy, InFlight: e.Inflight})
		}
		out = append(out, tb)
	}
	return out
}

// backendsReady checks readiness.backends of the config in force: each
// named backend needs an endpoint passing its health check with its
// breaker not open.
func (n *node) backendsReady() error {
	if n == nil {
		return nil // not serving yet
	}
	names := n.current.Load().Readiness.Backends
	if len(names) == 0 {
		return nil
	}
	set := n.backends()
	var errs []error
	for _, name := range names {
		if err := set.Healthy(name); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("readiness.backends: %w", errors.Join(errs...))
	}
	return nil
}

func (n *node) status() string {
	state := "serving"
	if n.gw.Draining() {
		state = "draining"
	}
	return fmt.Sprintf("%s: %d connections, %d requests in flight", state, n.eng.Len(), n.router.InFlight())
}

// apply carries out a reload: the new config is validated (by the
// loader) and compared with the running one key by key (diffConfig);
// changed restart-only keys keep their running values and are named in
// the log; new pools and routes are built whole, then swapped in. On any
// error the old config stays.
func (n *node) apply(next config.Config, gate *auth.Gate, level *slog.LevelVar, log *slog.Logger) error {
	cur := *n.current.Load()
	changes := diffConfig(cur, next)
	next = keepRestartOnly(cur, next)
	set, err := backends.New(next.Backends, lookupEnv, log, backends.WithMeter(n.meter))
	if err != nil {
		return fmt.Errorf("backends: %w", err)
	}
	table, err := dispatch.NewTable(next, set)
	if err != nil {
		set.Close()
		return err
	}
	n.router.Swap(table)
	n.mu.Lock()
	old := n.set
	n.set = set
	n.mu.Unlock()
	n.retire(old, longestRoute(*n.current.Load()))
	gate.Update(next.Limits, next.WS.AllowedOrigins)
	n.router.SetAccessLog(next.Log.Requests)
	n.gc.apply(next.Runtime, log)
	if err := level.UnmarshalText([]byte(next.Log.Level)); err != nil {
		log.Warn("log level not changed", "err", err)
	}
	n.current.Store(&next)
	logReload(log, changes)
	return nil
}

// retire closes old, replaced by a reload, once none of its calls is in
// flight: requests finish on the backend they started on, and a reload
// does not leave transports and NATS connections behind. A call cannot
// outlive its route's deadline, so maxWait bounds the wait.
func (n *node) retire(old *backends.Set, maxWait time.Duration) {
	n.mu.Lock()
	n.retired = append(n.retired, old)
	n.mu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		deadline := time.Now().Add(maxWait)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for setInFlight(old) > 0 && time.Now().Before(deadline) {
			select {
			case <-n.stop:
				return // closeSets closes it
			case <-tick.C:
			}
		}
		n.mu.Lock()
		n.retired = slices.DeleteFunc(n.retired, func(s *backends.Set) bool { return s == old })
		n.mu.Unlock()
		old.Close()
	}()
}

// settleHeap starts the heap settler (settle.go) until closeSets.
func (n *node) settleHeap(s *heapSettler) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		s.run(n.stop)
	}()
}

// retiredSets returns how many replaced sets are still open.
func (n *node) retiredSets() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.retired)
}

func setInFlight(s *backends.Set) int {
	total := 0
	for _, b := range s.Snapshot() {
		total += b.Inflight
	}
	return total
}

// longestRoute is the longest total deadline of cfg's routes, plus a
// second.
func longestRoute(cfg config.Config) time.Duration {
	longest := time.Duration(0)
	for _, r := range cfg.Routes {
		longest = max(longest, r.Timeout.D())
	}
	return longest + time.Second
}

// closeSets stops the retirers and closes every backend set at exit.
func (n *node) closeSets() {
	close(n.stop)
	n.wg.Wait()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.retired {
		s.Close()
	}
	n.retired = nil
	n.set.Close()
}

// sessionLister adapts the gateway to admin.SessionLister.
type sessionLister struct{ gw *gateway.Gateway }

func (l sessionLister) Sessions(q string, offset, limit int) ([]admin.SessionRow, int) {
	rows, total := l.gw.Sessions(q, offset, limit)
	out := make([]admin.SessionRow, len(rows))
	for i, r := range rows {
		out[i] = admin.SessionRow(r)
	}
	return out, total
}

func (l sessionLister) Kick(_ context.Context, id string) error {
	if err := l.gw.Kick(id); err != nil {
		if errors.Is(err, gateway.ErrNoSuchSession) {
			return fmt.Errorf("%w: %w", admin.ErrNotFound, err)
		}
		return err
	}
	return nil
}

// detachedLister adapts the session manager to admin.DetachedLister.
type detachedLister struct{ mgr *sessions.Manager }

// Detached implements admin.DetachedLister.
func (l detachedLister) Detached(dst []admin.DetachedRow, limit int) []admin.DetachedRow {
	dst = dst[:0]
	for _, d := range l.mgr.Detached(make([]sessions.DetachedInfo, 0, min(limit, 1024)), limit) {
		dst = append(dst, admin.DetachedRow{ID: d.ID, User: d.User, Since: d.Since, Owed: d.Owed, OwedBytes: d.OwedBytes})
	}
	return dst
}

// Counts implements admin.DetachedLister.
func (l detachedLister) Counts() (attached, detached int, bytes int64) { return l.mgr.Counts() }

// backendLister adapts the backend set in force to admin.BackendLister.
type backendLister struct{ n *node }

func (l backendLister) Backends() []admin.BackendRow {
	snap := l.n.backends().Snapshot()
	out := make([]admin.BackendRow, 0, len(snap))
	for _, b := range snap {
		row := admin.BackendRow{Name: b.Name, Kind: b.Kind, InFlight: b.Inflight, MaxConcurrent: b.MaxConcurrent}
		for _, e := range b.Endpoints {
			row.Endpoints = append(row.Endpoints, admin.EndpointRow{URL: e.URL, Breaker: e.Breaker,
				Health: e.Health, HealthDetail: e.HealthDetail, Successes: e.Successes,
				Failures: e.Failures, Rejections: e.Rejections, InFlight: e.Inflight, P50ms: e.LatencyP50, P99ms: e.LatencyP99})
		}
		out = append(out, row)
	}
	return out
}

func (l backendLister) Reset(name string) error {
	if err := l.n.backends().Reset(name); err != nil {
		if errors.Is(err, backends.ErrUnknownBackend) {
			return fmt.Errorf("%w: %w", admin.ErrNotFound, err)
		}
		return err
	}
	return nil
}

// drainer adapts the drain request channel to admin.Drainer.
type drainer chan string

func (d drainer) Drain(reason string) {
	select {
	case d <- reason:
	default: // already asked
	}
}

// readiness adapts the gateway to admin.Readiness.
type readiness struct{ gw *gateway.Gateway }

func (r readiness) Alive() error { return r.gw.Alive() }
func (r readiness) Ready() error { return r.gw.Ready(context.Background()) }
