package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path"
	"strings"
	"time"
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

// Ready reports whether the node takes new clients: not draining and the
// session store reachable.
func (g *Gateway) Ready(ctx context.Context) error {
	if g.Draining() {
		return errors.New("draining")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := g.mgr.Ready(ctx); err != nil {
		return errors.New("session store unreachable: " + err.Error())
	}
	return nil
}

// PlainHandler serves the non-upgrade requests of the client listener:
// /healthz, /readyz, then opts.Plain (the demo page) or 404.
func (g *Gateway) PlainHandler() http.Handler {
	mux := http.NewServeMux()
	// The bodies are those of the admin listener's probes.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		probe(w, g.Alive(), "ok", "unhealthy")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		probe(w, g.Ready(r.Context()), "ready", "not_ready")
	})
	if g.opts.Path != "" {
		mux.HandleFunc(g.opts.Path, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad_request"})
		})
	}
	if g.opts.Plain != nil {
		mux.Handle("/", g.opts.Plain)
	} else {
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found"})
		})
	}
	// A path that is not clean ("/../x", "//x") is 404 like any other
	// unknown path, not the mux's redirect.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "" || p[0] != '/' || path.Clean(p) != p && !(strings.HasSuffix(p, "/") && path.Clean(p)+"/" == p) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found"})
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func probe(w http.ResponseWriter, err error, good, bad string) {
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": bad, "reason": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": good})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
