package dispatch

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/orchestratord/orchestratord/daemon/backends"
	"github.com/orchestratord/orchestratord/daemon/config"
)

// Caller is a backend pool as dispatch sees it.
type Caller interface {
	Call(ctx context.Context, req *backends.Request, emit backends.Emit) (backends.Result, error)
}

// route is one compiled route. Immutable once built.
type route struct {
	name       string
	backend    string
	pool       Caller
	fallback   Caller
	timeout    time.Duration
	firstChunk time.Duration
	idle       time.Duration
	// inline: an echo backend without delay answers on the caller's
	// goroutine: no goroutine, no context, no copy.
	inline bool
	// inlineDone records an inline answer in the backend's counters and
	// metrics (Pool.Inline), as a call would.
	inlineDone func(time.Duration)
	// inlineObs is the metrics recorder of this route's inline results,
	// set at the first one (Router.inlineObserver); a Table serves one
	// Router.
	inlineObs atomic.Pointer[func(time.Duration)]
	// needsSession: the backend reads the session (context, history).
	needsSession bool
	// retry: retry_on_node_loss, a survivor runs the request again.
	retry bool
}

// Table is an immutable snapshot of routes and limits. A reload builds a
// new Table and swaps it in; requests in flight keep the one they started
// with.
type Table struct {
	routes map[string]*route
	limits config.Limits
}

// Routes returns the names of the table's routes, sorted (the demo page's
// route picker lists them).
func (t *Table) Routes() []string {
	names := make([]string, 0, len(t.routes))
	for name := range t.routes {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// NewTable compiles the routes of cfg against the pools of set.
func NewTable(cfg config.Config, set *backends.Set) (*Table, error) {
	t := &Table{routes: make(map[string]*route, len(cfg.Routes)), limits: cfg.Limits}
	for name, rc := range cfg.Routes {
		pool, ok := set.Pool(rc.Backend)
		if !ok {
			return nil, fmt.Errorf("routes.%s.backend: unknown backend %q", name, rc.Backend)
		}
		bc := cfg.Backends[rc.Backend]
		r := &route{
			name:         name,
			backend:      rc.Backend,
			pool:         pool,
			timeout:      rc.Timeout.D(),
			firstChunk:   rc.FirstChunkTimeout.D(),
			idle:         rc.IdleTimeout.D(),
			inline:       bc.Kind == config.KindEcho && bc.Delay == 0 && bc.Stream == "",
			retry:        rc.RetryOnNodeLoss,
			needsSession: bc.Kind == config.KindHTTP || bc.Kind == config.KindNATS || bc.Kind == config.KindOpenAI,
		}
		if r.inline {
			r.inlineDone = pool.Inline
		}
		if rc.Fallback != "" {
			fb, ok := set.Pool(rc.Fallback)
			if !ok {
				return nil, fmt.Errorf("routes.%s.fallback: unknown backend %q", name, rc.Fallback)
			}
			r.fallback = fb
			fk := cfg.Backends[rc.Fallback].Kind
			r.needsSession = r.needsSession || fk == config.KindHTTP || fk == config.KindNATS || fk == config.KindOpenAI
		}
		t.routes[name] = r
	}
	return t, nil
}
