package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/a-h/templ"
)

// pageView is everything the page shows.
type pageView struct {
	Node     NodeView
	Sessions SessionsPage
	Detached DetachedPage
	Backends []BackendRow
	CSRF     string
	Now      time.Time
}

// page renders GET /?q=&offset=.
func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	q, offset, _, err := sessionsQuery(r)
	if err != nil {
		q, offset = "", 0
	}
	v := pageView{
		Node:     s.nodeView(),
		Sessions: s.sessionsPage(q, offset, PageSize),
		Detached: s.detachedPage(PageSize),
		Backends: s.backends(),
		CSRF:     s.csrf.token(w, r),
		Now:      time.Now(),
	}
	var buf bytes.Buffer
	if err := page(v).Render(r.Context(), &buf); err != nil {
		s.log.Error("render admin page", "err", err)
		http.Error(w, "render failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

// update is one /events message: the state and the page's changing parts
// as HTML fragments, rendered by the same templ components as the page.
type update struct {
	State    string `json:"state"`
	Node     string `json:"node"`
	Drain    string `json:"drain"`
	Backends string `json:"backends"`
	Sessions string `json:"sessions"`
	Detached string `json:"detached"`
}

// renderUpdate renders one update as the JSON of an SSE data line.
func (s *Server) renderUpdate(r *http.Request, q string, offset int, buf *bytes.Buffer) ([]byte, error) {
	n := s.nodeView()
	u := update{State: n.State}
	parts := []struct {
		dst *string
		c   templ.Component
	}{
		{&u.Node, nodeStats(n)},
		{&u.Drain, drainProgress(n)},
		{&u.Backends, backendsTable(s.backends())},
		{&u.Sessions, sessionsTable(s.sessionsPage(q, offset, PageSize), n.Now)},
		{&u.Detached, detachedTable(s.detachedPage(PageSize), n.Now)},
	}
	for _, p := range parts {
		buf.Reset()
		if err := p.c.Render(r.Context(), buf); err != nil {
			return nil, err
		}
		*p.dst = buf.String()
	}
	return json.Marshal(u)
}

// Formatting helpers used by the templates.

func count(n int) string { return group(strconv.Itoa(n)) }

func countU(n uint64) string { return group(strconv.FormatUint(n, 10)) }

// group inserts thin spaces between thousands: 19 000.
func group(s string) string {
	neg := len(s) > 0 && s[0] == '-'
	if neg {
		s = s[1:]
	}
	if len(s) <= 3 {
		if neg {
			return "-" + s
		}
		return s
	}
	var b []byte
	if neg {
		b = append(b, '-')
	}
	pre := len(s) % 3
	if pre > 0 {
		b = append(b, s[:pre]...)
	}
	for i := pre; i < len(s); i += 3 {
		if len(b) > 0 && !(neg && len(b) == 1) {
			b = append(b, "\u202f"...)
		}
		b = append(b, s[i:i+3]...)
	}
	return string(b)
}

func rate(r float64) string {
	if r < 10 {
		return strconv.FormatFloat(r, 'f', 1, 64)
	}
	return count(int(r + 0.5))
}

func millis(ms float64) string {
	switch {
	case ms <= 0:
		return "–"
	case ms < 10:
		return strconv.FormatFloat(ms, 'f', 1, 64) + " ms"
	case ms < 1000:
		return strconv.FormatFloat(ms, 'f', 0, 64) + " ms"
	}
	return strconv.FormatFloat(ms/1000, 'f', 1, 64) + " s"
}

func bytesU(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + " B"
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// since shows a connection time: the clock time (UTC) today, with the date
// otherwise. It does not change every second, so unchanged rows render the
// same HTML and the page does not repaint them.
func since(t, now time.Time) string {
	if t.IsZero() {
		return "–"
	}
	t, now = t.UTC(), now.UTC()
	if t.YearDay() == now.YearDay() && t.Year() == now.Year() {
		return t.Format("15:04:05") + " UTC"
	}
	return t.Format("Jan 2 15:04") + " UTC"
}

func breakerClass(state string) string {
	switch state {
	case "closed", "open", "half-open":
		return state
	}
	return "unknown"
}

// healthClass is the CSS class of an endpoint's health.
func healthClass(h string) string {
	switch h {
	case "healthy", "unhealthy":
		return h
	}
	return "unchecked"
}

// healthLabel shows an endpoint's health; "" (a row without an endpoint)
// shows as unchecked.
func healthLabel(h string) string {
	if h == "" {
		return "unchecked"
	}
	return h
}

// endpointsOrNone returns b's endpoints, or one empty row for an
// in-process backend, so every backend gets a table row.
func endpointsOrNone(b BackendRow) []EndpointRow {
	if len(b.Endpoints) == 0 {
		return []EndpointRow{{}}
	}
	return b.Endpoints
}

func rowspan(b BackendRow) string { return strconv.Itoa(max(1, len(b.Endpoints))) }

func matching(q string) string {
	if q == "" {
		return ""
	}
	return " matching “" + q + "”"
}

func pageRange(p SessionsPage) string {
	if p.Total == 0 {
		return "0 sessions"
	}
	first := min(p.Offset+1, p.Total)
	last := min(p.Offset+len(p.Sessions), p.Total)
	if last < first {
		return "– of " + count(p.Total)
	}
	return count(first) + "–" + count(last) + " of " + count(p.Total)
}

func pageURL(q string, offset int) templ.SafeURL {
	v := url.Values{}
	if q != "" {
		v.Set("q", q)
	}
	if offset > 0 {
		v.Set("offset", strconv.Itoa(offset))
	}
	if len(v) == 0 {
		return "/"
	}
	return templ.SafeURL("/?" + v.Encode())
}

func bytesI(n int64) string { return bytesU(uint64(max(n, 0))) }

// uptime shows a duration in seconds as "42s", "12m", "3h 12m" or
// "5d 3h": minutes at most, so the page repaints it rarely.
func uptime(sec int64) string {
	switch {
	case sec < 60:
		return strconv.FormatInt(max(sec, 0), 10) + "s"
	case sec < 3600:
		return strconv.FormatInt(sec/60, 10) + "m"
	case sec < 86400:
		return fmt.Sprintf("%dh %dm", sec/3600, sec%3600/60)
	}
	return fmt.Sprintf("%dd %dh", sec/86400, sec%86400/3600)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return count(n) + " " + one
	}
	return count(n) + " " + many
}

// drainLeft says what the drain still waits for.
func drainLeft(d *DrainView) string {
	return plural(d.ConnectionsLeft, "connection", "connections") + " and " +
		plural(d.RequestsLeft, "request", "requests") + " in flight left."
}

// drainDeadline says when what is left will be cancelled.
func drainDeadline(d *DrainView) string {
	at := d.Deadline.UTC().Format("15:04:05") + " UTC"
	if d.SecondsLeft <= 0 {
		return "Deadline " + at + " passed: cancelling what is left."
	}
	return fmt.Sprintf("What is left is cancelled at %s (in %ds).", at, int(d.SecondsLeft+0.999))
}

func detachedSummary(p DetachedPage) string {
	switch {
	case p.Total == 0:
		return "No detached sessions."
	case len(p.Sessions) < p.Total:
		return plural(p.Total, "detached session", "detached sessions") + "; the first " + count(len(p.Sessions)) + ":"
	}
	return plural(p.Total, "detached session", "detached sessions") + ":"
}

// lastOffset is the offset of the sessions table's last page.
func lastOffset(p SessionsPage) int {
	if p.Total == 0 || p.Limit <= 0 {
		return 0
	}
	return (p.Total - 1) / p.Limit * p.Limit
}
