package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/orchestratord/orchestratord/netpoll/refusal"
)

// stallAfter is how long the engine may go without progress before
// /healthz reports it wedged.
const stallAfter = 10 * time.Second

// Alive reports whether the engine's loops made progress recently.
func (g *Gateway) Alive() error {
	if g.alive == nil {
		return nil
	}
	if last := g.alive(); time.Since(last) > stallAfter {
		return errors.New("poller stalled since " + last.UTC().Format(time.RFC3339))
	}
	return nil
}

// Readiness reasons: what /readyz on the client listener says, and all it
// says, when the node is not ready (wire contract section 1).
const (
	ReasonDraining = "draining" // the node is draining
	ReasonStore    = "store"    // the session store is unreachable
	ReasonBackends = "backends" // a backend the readiness policy names has no healthy endpoint
)

// NotReadyError says why the node is not ready: Reason, one of the Reason
// constants, is all a client-listener probe learns; Err is the detail for
// the admin listener and the log.
type NotReadyError struct {
	Reason string
	Err    error
}

// Error returns the detail, e.g. "session store unreachable: dial tcp ...".
func (e *NotReadyError) Error() string {
	if e.Err == nil {
		return e.Reason
	}
	return e.Err.Error()
}

// Unwrap returns the detail.
func (e *NotReadyError) Unwrap() error { return e.Err }

// Ready reports whether the node takes new clients: not draining, the
// session store reachable and, when configured (readiness.backends), the
// named backends healthy. A failure is a *NotReadyError.
func (g *Gateway) Ready(ctx context.Context) error {
	if g.Draining() {
		return &NotReadyError{Reason: ReasonDraining}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := g.mgr.Ready(ctx); err != nil {
		return &NotReadyError{Reason: ReasonStore, Err: fmt.Errorf("session store unreachable: %w", err)}
	}
	if g.opts.Ready != nil {
		if err := g.opts.Ready(); err != nil {
			return &NotReadyError{Reason: ReasonBackends, Err: err}
		}
	}
	return nil
}

// reasonOf returns the reason code of a readiness error: only that goes to
// a client-listener probe, never the error text.
func reasonOf(err error) string {
	var nr *NotReadyError
	if errors.As(err, &nr) && nr.Reason != "" {
		return nr.Reason
	}
	return "unknown"
}

// PlainHandler serves the non-upgrade requests of the client listener:
// /healthz, /readyz, then opts.Plain (the demo page) or 404.
func (g *Gateway) PlainHandler() http.Handler {
	mux := http.NewServeMux()
	// The statuses are those of the admin listener's probes; the bodies say
	// only a reason code (contract section 1): the traffic port is public.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if g.Alive() != nil {
			writeJSON(w, http.StatusServiceUnavailable, probeBody{"unhealthy", "stalled"})
			return
		}
		writeJSON(w, http.StatusOK, probeBody{Status: "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := g.Ready(r.Context()); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, probeBody{"not_ready", reasonOf(err)})
			return
		}
		writeJSON(w, http.StatusOK, probeBody{Status: "ready"})
	})
	if g.opts.Path != "" {
		mux.HandleFunc(g.opts.Path, func(w http.ResponseWriter, r *http.Request) {
			writeRefusal(w, refusal.Of(refusal.BadRequest))
		})
	}
	if g.opts.Plain != nil {
		mux.Handle("/", g.opts.Plain)
	} else {
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			writeRefusal(w, refusal.Of(refusal.NotFound))
		})
	}
	// A path that is not clean ("/../x", "//x") is 404 like any other
	// unknown path, not the mux's redirect.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "" || p[0] != '/' || path.Clean(p) != p && !(strings.HasSuffix(p, "/") && path.Clean(p)+"/" == p) {
			writeRefusal(w, refusal.Of(refusal.NotFound))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// probeBody is a client-listener probe's answer, status first as the
// contract writes it.
type probeBody struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// writeRefusal answers a plain request with a row of the refusal table.
func writeRefusal(w http.ResponseWriter, r *refusal.Refusal) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(r.Status)
	_, _ = w.Write(r.Body())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
