package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// errorBody is the JSON of a failed request: a stable code for scripts
// and a sentence for people (the page's flash shows it).
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message,omitempty"`
}

type statusBody struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do
}

// healthz: 200 {"status":"ok"} while the loops are alive, else 503
// {"status":"unhealthy","reason":...}.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if err := s.deps.Readiness.Alive(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, statusBody{Status: "unhealthy", Reason: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, statusBody{Status: "ok"})
}

// readyz: 200 {"status":"ready"} when serving and the store is reachable;
// 503 {"status":"not_ready","reason":...} when draining or not ready.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.deps.Node.Draining() {
		writeJSON(w, http.StatusServiceUnavailable, statusBody{Status: "not_ready", Reason: "draining"})
		return
	}
	if err := s.deps.Readiness.Ready(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, statusBody{Status: "not_ready", Reason: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, statusBody{Status: "ready"})
}

// NodeView is the JSON of GET /api/node and the page's header.
type NodeView struct {
	Node          string     `json:"node"`
	State         string     `json:"state"` // serving or draining
	Draining      bool       `json:"draining"`
	Version       string     `json:"version"`
	StartedAt     time.Time  `json:"started_at"`
	UptimeSeconds int64      `json:"uptime_seconds"`
	Connections   int        `json:"connections"`
	Sessions      int        `json:"sessions"`
	Detached      int        `json:"detached_sessions"`
	SessionBytes  int64      `json:"session_bytes"` // held in memory by the sessions, attached or not
	InFlight      int        `json:"in_flight"`
	MsgsInTotal   uint64     `json:"msgs_in_total"`
	MsgsOutTotal  uint64     `json:"msgs_out_total"`
	MsgsInRate    float64    `json:"msgs_in_per_sec"`
	MsgsOutRate   float64    `json:"msgs_out_per_sec"`
	Drain         *DrainView `json:"drain,omitempty"` // while draining
	Now           time.Time  `json:"now"`
}

// DrainView is a drain's progress: what is left, and when what is left
// will be cancelled.
type DrainView struct {
	StartedAt       time.Time `json:"started_at"`
	Deadline        time.Time `json:"deadline"`
	SecondsLeft     float64   `json:"seconds_left"` // until the deadline, 0 once passed
	ConnectionsLeft int       `json:"connections_left"`
	RequestsLeft    int       `json:"requests_left"`
}

func (s *Server) nodeView() NodeView {
	now := time.Now()
	c := s.deps.Node.Counters()
	draining := s.deps.Node.Draining()
	_, detached, bytes := s.deps.Detached.Counts()
	in, out := s.rates.sample(now, c.MsgsIn, c.MsgsOut)
	v := NodeView{
		Node: s.deps.Node.Name(), State: "serving", Draining: draining,
		Version: s.deps.Version, StartedAt: s.deps.Started.UTC(),
		Connections: c.Connections, Sessions: c.Sessions, Detached: detached, SessionBytes: bytes, InFlight: c.InFlight,
		MsgsInTotal: c.MsgsIn, MsgsOutTotal: c.MsgsOut, MsgsInRate: in, MsgsOutRate: out,
		Now: now.UTC(),
	}
	if !s.deps.Started.IsZero() {
		v.UptimeSeconds = int64(now.Sub(s.deps.Started) / time.Second)
	}
	if draining {
		v.State = "draining"
		d := &DrainView{ConnectionsLeft: c.Connections, RequestsLeft: c.InFlight}
		if started, deadline := s.deps.Node.DrainDeadline(); !deadline.IsZero() {
			d.StartedAt, d.Deadline = started.UTC(), deadline.UTC()
			d.SecondsLeft = max(0, deadline.Sub(now).Seconds())
		}
		v.Drain = d
	}
	return v
}

func (s *Server) apiNode(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.nodeView())
}

// SessionsPage is the JSON of GET /api/sessions.
type SessionsPage struct {
	Query    string       `json:"query"`
	Offset   int          `json:"offset"`
	Limit    int          `json:"limit"`
	Total    int          `json:"total"`
	Sessions []SessionRow `json:"sessions"`
}

// sessionsQuery parses q, offset and limit (default PageSize, at most
// maxLimit).
func sessionsQuery(r *http.Request) (q string, offset, limit int, err error) {
	v := r.URL.Query()
	q = strings.TrimSpace(v.Get("q"))
	if len(q) > 200 {
		return "", 0, 0, errors.New("q too long")
	}
	limit = PageSize
	if s := v.Get("offset"); s != "" {
		if offset, err = strconv.Atoi(s); err != nil || offset < 0 {
			return "", 0, 0, errors.New("bad offset")
		}
	}
	if s := v.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > maxLimit {
			return "", 0, 0, errors.New("bad limit")
		}
	}
	return q, offset, limit, nil
}

func (s *Server) sessionsPage(q string, offset, limit int) SessionsPage {
	rows, total := s.deps.Sessions.Sessions(q, offset, limit)
	if rows == nil {
		rows = []SessionRow{}
	}
	return SessionsPage{Query: q, Offset: offset, Limit: limit, Total: total, Sessions: rows}
}

func (s *Server) apiSessions(w http.ResponseWriter, r *http.Request) {
	q, offset, limit, err := sessionsQuery(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, s.sessionsPage(q, offset, limit))
}

// DetachedPage is the JSON of GET /api/detached: the count of detached
// sessions and the first Limit of them (oldest detached first).
type DetachedPage struct {
	Total    int           `json:"total"`
	Limit    int           `json:"limit"`
	Sessions []DetachedRow `json:"sessions"`
}

func (s *Server) detachedPage(limit int) DetachedPage {
	_, total, _ := s.deps.Detached.Counts()
	rows := s.deps.Detached.Detached(make([]DetachedRow, 0, min(limit, max(total, 1))), limit)
	if len(rows) > limit {
		rows = rows[:limit]
	}
	return DetachedPage{Total: max(total, len(rows)), Limit: limit, Sessions: rows}
}

func (s *Server) apiDetached(w http.ResponseWriter, r *http.Request) {
	_, _, limit, err := sessionsQuery(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "bad_request", Message: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, s.detachedPage(limit))
}

func (s *Server) backends() []BackendRow {
	b := s.deps.Backends.Backends()
	if b == nil {
		b = []BackendRow{}
	}
	return b
}

func (s *Server) apiBackends(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Backends []BackendRow `json:"backends"`
	}{s.backends()})
}

// apiToken returns a CSRF token (and sets its cookie) for scripts:
// curl -c jar -b jar .../api/token, then POST with -b jar -H "X-CSRF-Token: …".
func (s *Server) apiToken(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Token string `json:"csrf_token"`
	}{s.csrf.token(w, r)})
}

// who names the caller in the action logs.
func who(r *http.Request) []any {
	u, _, _ := r.BasicAuth()
	return []any{"remote", r.RemoteAddr, "admin_user", u}
}

func (s *Server) apiDrain(w http.ResponseWriter, r *http.Request) {
	reason := "admin"
	if v := r.PostFormValue("reason"); v != "" && len(v) <= 100 {
		reason = v
	}
	s.log.Info("drain requested from admin", append(who(r), "reason", reason)...)
	s.deps.Drainer.Drain(reason)
	writeJSON(w, http.StatusAccepted, statusBody{Status: "draining", Reason: reason})
}

func (s *Server) apiKick(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.log.Info("session close requested from admin", append(who(r), "session", id)...)
	if err := s.deps.Sessions.Kick(r.Context(), id); err != nil {
		s.actionError(w, "close session", err, "Session "+id+" is not connected to this node any more: it has already closed or moved.")
		return
	}
	writeJSON(w, http.StatusOK, statusBody{Status: "closed"})
}

func (s *Server) apiReset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	s.log.Info("breaker reset requested from admin", append(who(r), "backend", name)...)
	if err := s.deps.Backends.Reset(name); err != nil {
		s.actionError(w, "reset backend", err, "There is no backend named "+name+" any more (a reload may have removed it).")
		return
	}
	writeJSON(w, http.StatusOK, statusBody{Status: "reset"})
}

// actionError answers a failed action: 404 with notFound (a sentence for
// the page) when the target does not exist, else 500 with the cause in
// the log only.
func (s *Server) actionError(w http.ResponseWriter, what string, err error, notFound string) {
	if errors.Is(err, ErrNotFound) {
		writeJSON(w, http.StatusNotFound, errorBody{Error: "not_found", Message: notFound})
		return
	}
	s.log.Warn("admin action failed", "action", what, "err", err)
	writeJSON(w, http.StatusInternalServerError, errorBody{Error: "internal",
		Message: "Could not " + what + ": the daemon hit an internal error (see its log)."})
}

// rateMeter derives messages per second from running totals. The rate is
// recomputed when at least a second has passed since the previous sample,
// so that many readers (page renders, streams, API calls) share one window.
type rateMeter struct {
	mu        sync.Mutex // guards the fields below
	at        time.Time
	in, out   uint64
	rIn, rOut float64
}

func (m *rateMeter) sample(now time.Time, in, out uint64) (float64, float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.at.IsZero() {
		m.at, m.in, m.out = now, in, out
		return 0, 0
	}
	if dt := now.Sub(m.at); dt >= 900*time.Millisecond {
		sec := dt.Seconds()
		m.rIn = float64(delta(in, m.in)) / sec
		m.rOut = float64(delta(out, m.out)) / sec
		m.at, m.in, m.out = now, in, out
	}
	return m.rIn, m.rOut
}

// delta is a-b, or 0 when the counter went backwards (a restarted source).
func delta(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}
