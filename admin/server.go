package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/web"
)

const (
	// PageSize is the sessions table's page size (page and /api/sessions
	// default).
	PageSize = 50
	// maxLimit bounds /api/sessions?limit=.
	maxLimit = 1000
	// maxStreams bounds concurrent /events streams: each one re-reads the
	// node every interval.
	maxStreams = 32
)

// Server is the admin HTTP server. It is an http.Handler; Serve and
// Shutdown run it on a listener of the caller's.
type Server struct {
	cfg      config.Admin
	auth     bool // credentials required (listen address not loopback)
	userHash [32]byte
	passHash [32]byte
	deps     Deps
	log      *slog.Logger
	csrf     csrf
	handler  http.Handler
	rates    rateMeter
	interval time.Duration // /events push period; tests shorten it
	streams  atomic.Int32
	// Failed logins are logged at most once a second; the lines between
	// are counted and reported with the next one.
	loginWarnAt  atomic.Int64 // unix ns of the last line
	loginDropped atomic.Int64

	stop chan struct{} // closed by Shutdown: ends /events streams

	mu       sync.Mutex // guards hs and shutdown
	hs       *http.Server
	shutdown bool
}

// New builds the admin server for the listen address listenAddr. It refuses
// a non-loopback address without a password (cfg.Password, resolved from
// cfg.PasswordEnv). gatherer serves /metrics (a telemetry.Metrics'
// Registry()); nil leaves /metrics out.
func New(cfg config.Admin, listenAddr string, deps Deps, gatherer prometheus.Gatherer, log *slog.Logger) (*Server, error) {
	if err := deps.check(); err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	if log == nil {
		return nil, errors.New("admin: nil logger")
	}
	s := &Server{
		cfg:      cfg,
		auth:     !config.IsLoopback(listenAddr),
		deps:     deps,
		log:      log,
		interval: time.Second,
		stop:     make(chan struct{}),
	}
	if s.auth {
		if cfg.Password == "" {
			return nil, fmt.Errorf("admin: listen address %q is not loopback and no password is set (set the variable named by admin.password_env, %q)", listenAddr, cfg.PasswordEnv)
		}
		if cfg.User == "" {
			return nil, fmt.Errorf("admin: listen address %q is not loopback and admin.user is empty", listenAddr)
		}
		s.userHash = sha256.Sum256([]byte(cfg.User))
		s.passHash = sha256.Sum256([]byte(cfg.Password))
	}
	if err := s.csrf.init(); err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	if gatherer != nil {
		metrics := promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
			EnableOpenMetrics: true,
		})
		if cfg.MetricsPublic {
			mux.Handle("GET /metrics", metrics)
		} else {
			mux.Handle("GET /metrics", s.private(metrics))
		}
	}
	priv := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, s.private(h)) }
	priv("GET /{$}", s.page)
	priv("GET /events", s.events)
	priv("GET /static/", staticFiles())
	priv("GET /api/node", s.apiNode)
	priv("GET /api/sessions", s.apiSessions)
	priv("GET /api/detached", s.apiDetached)
	priv("GET /api/backends", s.apiBackends)
	priv("GET /api/token", s.apiToken)
	priv("POST /api/drain", s.post(s.apiDrain))
	priv("POST /api/sessions/{id}/close", s.post(s.apiKick))
	priv("POST /api/backends/{name}/reset", s.post(s.apiReset))
	// Profiles for operators and the benchmark report (heap?gc=1 forces a
	// collection first). Behind the same credentials as the page.
	priv("GET /debug/pprof/", pprof.Index)
	priv("GET /debug/pprof/cmdline", pprof.Cmdline)
	priv("GET /debug/pprof/profile", pprof.Profile)
	priv("GET /debug/pprof/symbol", pprof.Symbol)
	priv("GET /debug/pprof/trace", pprof.Trace)
	s.handler = mux
	return s, nil
}

// ServeHTTP serves the admin routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.handler.ServeHTTP(w, r)
}

// Serve serves on ln until Shutdown; it returns nil after Shutdown, or the
// error that ended it.
func (s *Server) Serve(ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return nil
	}
	s.hs = hs
	s.mu.Unlock()
	err := hs.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("admin: serve: %w", err)
}

// Shutdown ends the /events streams, stops accepting and waits for the
// requests being served, until ctx is done. It is idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.shutdown {
		s.shutdown = true
		close(s.stop)
	}
	hs := s.hs
	s.mu.Unlock()
	if hs == nil {
		return nil
	}
	if err := hs.Shutdown(ctx); err != nil {
		return fmt.Errorf("admin: shutdown: %w", err)
	}
	return nil
}

// private requires credentials when the listener is not loopback, and sets
// the security headers of every non-probe response.
func (s *Server) private(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		web.SecurityHeaders(w.Header())
		if s.auth && !s.authorized(r) {
			if u, _, ok := r.BasicAuth(); ok {
				// Credentials were sent and are wrong (a first request
				// without any is the browser asking, not a failure).
				s.loginFailed(r, u)
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="orchestratord admin", charset="UTF-8"`)
			writeJSON(w, http.StatusUnauthorized, errorBody{Error: "unauthorized"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// loginFailed logs a failed admin login at warn, at most once a second
// (a password guesser must not flood the log), with the number of
// failures not logged since the previous line. The password is never
// logged.
func (s *Server) loginFailed(r *http.Request, user string) {
	now := time.Now().UnixNano()
	last := s.loginWarnAt.Load()
	if now-last < int64(time.Second) || !s.loginWarnAt.CompareAndSwap(last, now) {
		s.loginDropped.Add(1)
		return
	}
	s.log.Warn("admin login failed", "remote", r.RemoteAddr, "admin_user", user, "path", r.URL.Path,
		"failures_not_logged", s.loginDropped.Swap(0))
}

// authorized compares the basic-auth credentials in constant time (hashes
// of equal length, both always compared).
func (s *Server) authorized(r *http.Request) bool {
	u, p, ok := r.BasicAuth()
	if !ok {
		return false
	}
	uh, ph := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))
	okU := subtle.ConstantTimeCompare(uh[:], s.userHash[:])
	okP := subtle.ConstantTimeCompare(ph[:], s.passHash[:])
	return okU&okP == 1
}

// staticFiles serves the embedded admin assets, without directory listings.
func staticFiles() http.HandlerFunc {
	files := http.StripPrefix("/static/", http.FileServerFS(web.Admin()))
	return func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	}
}
