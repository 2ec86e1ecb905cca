package backends

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/orchestratord/orchestratord/daemon/redact"
)

// Health states of an endpoint.
const (
	healthUnknown int32 = iota // not checked yet, or not checked at all (echo)
	healthUp
	healthDown
)

// Health names of EndpointState.
const (
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
	// HealthUnchecked: no check has answered yet, or the kind has none
	// (echo). An unchecked endpoint stays in rotation.
	HealthUnchecked = "unchecked"
)

// health is an endpoint's last health check result. The balancer reads it
// on every call (one atomic load); the checker goroutine writes it.
type health struct {
	state   atomic.Int32
	detail  atomic.Pointer[string] // why the last check failed, redacted
	checked atomic.Int64           // unix ns of the last check; 0: never
}

// down reports whether the endpoint failed its last health check.
func (h *health) down() bool { return h.state.Load() == healthDown }

func (h *health) name() string {
	switch h.state.Load() {
	case healthUp:
		return HealthHealthy
	case healthDown:
		return HealthUnhealthy
	}
	return HealthUnchecked
}

// checkFunc runs one health check; nil means healthy.
type checkFunc func(ctx context.Context) error

// healthOpts are a backend's check settings (config.Health with its
// defaults).
type healthOpts struct {
	interval, timeout time.Duration
	path              string
}

// setHealth records a check's result and logs a change: warn when the
// endpoint goes unhealthy, info when it is back.
func (p *Pool) setHealth(e *endpoint, err error) {
	e.health.checked.Store(time.Now().UnixNano())
	if err != nil {
		detail := redact.String(err.Error())
		e.health.detail.Store(&detail)
		if prev := e.health.state.Swap(healthDown); prev != healthDown {
			p.log.LogAttrs(context.Background(), slog.LevelWarn, "backend endpoint unhealthy",
				slog.String("endpoint", e.url), slog.String("err", detail))
		}
		return
	}
	e.health.detail.Store(nil)
	switch e.health.state.Swap(healthUp) {
	case healthDown:
		p.log.LogAttrs(context.Background(), slog.LevelInfo, "backend endpoint healthy again", slog.String("endpoint", e.url))
	case healthUnknown:
		p.log.LogAttrs(context.Background(), slog.LevelDebug, "backend endpoint healthy", slog.String("endpoint", e.url))
	}
}

// runCheck checks e once with the pool's timeout.
func (p *Pool) runCheck(ctx context.Context, e *endpoint) {
	cctx, cancel := context.WithTimeout(ctx, p.health.timeout)
	err := e.check(cctx)
	cancel()
	if ctx.Err() != nil {
		return // the set is closing: the result means nothing
	}
	p.setHealth(e, err)
}

// checkLoop checks e at once, then every interval, until ctx is done.
func (p *Pool) checkLoop(ctx context.Context, e *endpoint) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.runCheck(ctx, e)
		t.Reset(p.health.interval)
	}
}

// httpGetCheck returns a check that GETs target with the backend's static
// headers; ok decides which statuses are healthy.
func httpGetCheck(client *http.Client, target string, headers http.Header, ok func(status int) bool) checkFunc {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return fmt.Errorf("health check: %w", err)
		}
		for k, v := range headers {
			req.Header[k] = v
		}
		resp, err := client.Do(req)
		if err != nil {
			if isDialError(err) {
				return fmt.Errorf("health check: %w: %w", ErrConnect, err)
			}
			return fmt.Errorf("health check: %w", err)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // reuse the connection
		resp.Body.Close()
		if !ok(resp.StatusCode) {
			return fmt.Errorf("health check: GET %s answered %d", target, resp.StatusCode)
		}
		return nil
	}
}

// tcpCheck returns a check that opens (and closes) a TCP connection to the
// host of u: the http kind's check when no health path is configured.
func tcpCheck(u *url.URL) checkFunc {
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("health check: %w: %w", ErrConnect, err)
		}
		return c.Close()
	}
}

// healthURL resolves the configured health path against an http
// endpoint's URL: "/healthz" replaces the path, "healthz" is relative to
// it. The endpoint's query is not carried over.
func healthURL(endpoint *url.URL, path string) string {
	ref, err := url.Parse(path)
	if err != nil {
		return endpoint.String()
	}
	base := *endpoint
	base.RawQuery, base.Fragment = "", ""
	return base.ResolveReference(ref).String()
}

// openaiModelsURL is <base>/models of an openai endpoint.
func openaiModelsURL(base string) string { return strings.TrimSuffix(base, "/") + "/models" }

// natsCheck reports the NATS connection's state: healthy only while
// connected.
func natsCheck(nc *nats.Conn) checkFunc {
	return func(context.Context) error {
		if !nc.IsConnected() {
			return fmt.Errorf("health check: %w: nats connection %s", ErrConnect, nc.Status())
		}
		return nil
	}
}
