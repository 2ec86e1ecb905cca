package admin

import (
	"context"
	"errors"
	"sort"
	"strings"
	"time"
)

// ErrNotFound is returned (possibly wrapped) by Kick and Reset when the
// session or backend does not exist; the API answers 404 for it.
var ErrNotFound = errors.New("not found")

// Counters are a node's live counts. MsgsIn and MsgsOut are running totals;
// the admin page derives messages per second from their deltas.
type Counters struct {
	Connections int    // open client connections
	Sessions    int    // sessions attached to this node
	InFlight    int    // requests in flight
	MsgsIn      uint64 // messages received from clients since start
	MsgsOut     uint64 // messages sent to clients since start
}

// Node is the node's identity and state.
type Node interface {
	Name() string
	Draining() bool
	Counters() Counters
	// DrainDeadline returns when the drain started and when whatever is
	// left will be cancelled (start + drain.timeout); zero times while the
	// node is not draining.
	DrainDeadline() (started, deadline time.Time)
}

// SessionRow is one line of the sessions table.
type SessionRow struct {
	ID             string    `json:"id"`
	User           string    `json:"user"`
	Remote         string    `json:"remote"`
	ConnectedSince time.Time `json:"connected_since"`
	InFlight       int       `json:"in_flight"`
	MsgsIn         uint64    `json:"msgs_in"`
	MsgsOut        uint64    `json:"msgs_out"`
	BytesIn        uint64    `json:"bytes_in"`
	BytesOut       uint64    `json:"bytes_out"`
}

// SessionLister lists the node's sessions and closes them. Both methods are
// called from HTTP handler goroutines, concurrently.
type SessionLister interface {
	// Sessions returns one page of the rows matching query (a substring of
	// id, user or remote; "" matches all), sorted by ConnectedSince, newest
	// first, and the total number of matches. It must stay fast (a few ms)
	// with tens of thousands of sessions; FilterSessions does this over a
	// snapshot.
	Sessions(query string, offset, limit int) (rows []SessionRow, total int)
	// Kick closes the session's live connection. It returns an error
	// wrapping ErrNotFound when there is no such session.
	Kick(ctx context.Context, id string) error
}

// DetachedRow is one detached session: kept for resume, no connection
// attached, and what it is owed (terminals waiting in its replay log or
// outbox, delivered when it resumes).
type DetachedRow struct {
	ID        string    `json:"id"`
	User      string    `json:"user"`
	Since     time.Time `json:"detached_since"`
	Owed      int       `json:"owed"`       // messages waiting for the client
	OwedBytes int64     `json:"owed_bytes"` // their bytes
}

// DetachedLister lists the node's detached sessions (the session manager's
// Detached and Counts). Both are called from HTTP handler goroutines,
// concurrently, and must stay fast: they read process memory only.
type DetachedLister interface {
	// Detached appends up to limit detached sessions to dst[:0], in the
	// lister's order (the session manager: oldest detached first), and
	// returns it.
	Detached(dst []DetachedRow, limit int) []DetachedRow
	// Counts returns the attached and detached sessions and the bytes the
	// sessions hold in memory.
	Counts() (attached, detached int, bytes int64)
}

// EndpointRow is one backend endpoint as the page shows it.
type EndpointRow struct {
	URL     string `json:"url"`     // redacted (redact.String)
	Breaker string `json:"breaker"` // closed, half-open or open
	// Health is the last active check: healthy, unhealthy or unchecked.
	Health string `json:"health"`
	// HealthDetail says why the last check failed (redacted); "" if it
	// passed.
	HealthDetail string  `json:"health_detail,omitempty"`
	Successes    uint64  `json:"successes"`
	Failures     uint64  `json:"failures"`
	Rejections   uint64  `json:"rejections"`
	InFlight     int     `json:"in_flight"`
	P50ms        float64 `json:"p50_ms"`
	P99ms        float64 `json:"p99_ms"`
}

// BackendRow is one backend pool.
type BackendRow struct {
	Name          string        `json:"name"`
	Kind          string        `json:"kind"`
	InFlight      int           `json:"in_flight"`
	MaxConcurrent int           `json:"max_concurrent"`
	Endpoints     []EndpointRow `json:"endpoints"`
}

// BackendLister lists the backends and resets their breakers.
type BackendLister interface {
	// Backends returns every backend, in a stable order.
	Backends() []BackendRow
	// Reset closes every breaker of the named backend; an error wrapping
	// ErrNotFound when there is no such backend.
	Reset(name string) error
}

// Drainer starts the node's drain.
type Drainer interface {
	// Drain starts the drain and returns at once; calling it again while
	// draining does nothing.
	Drain(reason string)
}

// Readiness answers the probes.
type Readiness interface {
	// Alive returns nil while the process's loops make progress (/healthz).
	Alive() error
	// Ready returns nil when the node serves and its session store is
	// reachable (/readyz); the error text is the reason shown to probes.
	Ready() error
}

// Deps are the parts of the daemon the admin server reads. The interfaces
// are required.
type Deps struct {
	Node      Node
	Sessions  SessionLister
	Detached  DetachedLister
	Backends  BackendLister
	Drainer   Drainer
	Readiness Readiness
	// Version is the daemon's version, shown on the page and in /api/node.
	Version string
	// Started is when the process started; the page shows the uptime.
	Started time.Time
}

func (d Deps) check() error {
	var errs []error
	if d.Node == nil {
		errs = append(errs, errors.New("Deps.Node is nil"))
	}
	if d.Sessions == nil {
		errs = append(errs, errors.New("Deps.Sessions is nil"))
	}
	if d.Detached == nil {
		errs = append(errs, errors.New("Deps.Detached is nil"))
	}
	if d.Backends == nil {
		errs = append(errs, errors.New("Deps.Backends is nil"))
	}
	if d.Drainer == nil {
		errs = append(errs, errors.New("Deps.Drainer is nil"))
	}
	if d.Readiness == nil {
		errs = append(errs, errors.New("Deps.Readiness is nil"))
	}
	return errors.Join(errs...)
}

// FilterSessions implements SessionLister.Sessions over a snapshot: it
// keeps the rows whose ID, User or Remote contains query (case-sensitive;
// "" keeps all), sorts them newest first (ties by ID), and returns the page
// [offset, offset+limit) and the number of matches. It reorders all in
// place and returns a sub-slice of it. Only the page is fully sorted: the
// rest is left partially ordered, so a first page of 19k rows costs one
// pass plus a small heap.
func FilterSessions(all []SessionRow, query string, offset, limit int) ([]SessionRow, int) {
	n := 0
	for i := range all {
		r := &all[i]
		if query == "" || strings.Contains(r.ID, query) || strings.Contains(r.User, query) || strings.Contains(r.Remote, query) {
			all[n], all[i] = all[i], all[n]
			n++
		}
	}
	m := all[:n]
	if offset < 0 {
		offset = 0
	}
	if limit < 0 {
		limit = 0
	}
	if offset >= n || limit == 0 {
		return nil, n
	}
	end := min(offset+limit, n)
	topK(m, end)
	return m[offset:end], n
}

// newer orders rows newest first, ties by ID.
func newer(a, b *SessionRow) bool {
	if !a.ConnectedSince.Equal(b.ConnectedSince) {
		return a.ConnectedSince.After(b.ConnectedSince)
	}
	return a.ID < b.ID
}

// topK moves the k first rows in newer-order to m[:k], sorted.
func topK(m []SessionRow, k int) {
	if k*4 >= len(m) {
		sort.Slice(m, func(i, j int) bool { return newer(&m[i], &m[j]) })
		return
	}
	// m[:k] is a max-heap of the k best so far, keyed so that its root is
	// the worst of them.
	h := m[:k]
	worse := func(i, j int) bool { return newer(&h[j], &h[i]) }
	down := func(i int) {
		for {
			l := 2*i + 1
			if l >= k {
				return
			}
			c := l
			if r := l + 1; r < k && worse(r, l) {
				c = r
			}
			if !worse(c, i) {
				return
			}
			h[i], h[c] = h[c], h[i]
			i = c
		}
	}
	for i := k/2 - 1; i >= 0; i-- {
		down(i)
	}
	for i := k; i < len(m); i++ {
		if newer(&m[i], &h[0]) {
			m[i], h[0] = h[0], m[i]
			down(0)
		}
	}
	sort.Slice(h, func(i, j int) bool { return newer(&h[i], &h[j]) })
}
