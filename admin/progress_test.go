package admin

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// TestDetachedSessions: the count and the list with what each is owed, on
// the page, in /api/node and /api/detached.
func TestDetachedSessions(t *testing.T) {
	f := newFixture(3)
	s := newServer(t, f, config.Admin{}, "127.0.0.1:0", nil)
	page := do(s, "GET", "/", nil, nil).Body.String()
	if !strings.Contains(page, "No detached sessions.") {
		t.Errorf("page without detached sessions does not say so")
	}

	since := time.Now().Add(-90 * time.Second)
	rows := make([]DetachedRow, 0, 60)
	for i := range 60 {
		rows = append(rows, DetachedRow{ID: fmt.Sprintf("s_det%02d", i), User: "bob", Since: since.Add(-time.Duration(i) * time.Second), Owed: i, OwedBytes: int64(1000 * i)})
	}
	f.detached.set(rows...)
	f.detached.bytes = 5 << 20

	page = do(s, "GET", "/", nil, nil).Body.String()
	for _, want := range []string{`id="stat-detached">60<`, "5.0 MiB held", "60 detached sessions; the first 50:",
		`data-detached="s_det00"`, `data-detached="s_det49"`, "<td class=\"num\">49</td>", "47.9 KiB"} {
		if !strings.Contains(page, want) {
			t.Errorf("page does not contain %q", want)
		}
	}
	if strings.Contains(page, `data-detached="s_det50"`) {
		t.Errorf("page lists more than a page of detached sessions")
	}

	var n NodeView
	if err := json.Unmarshal(do(s, "GET", "/api/node", nil, nil).Body.Bytes(), &n); err != nil {
		t.Fatal(err)
	}
	if n.Detached != 60 || n.SessionBytes != 5<<20 {
		t.Errorf("/api/node detached %d, bytes %d; want 60, %d", n.Detached, n.SessionBytes, 5<<20)
	}
	w := do(s, "GET", "/api/detached?limit=5", nil, nil)
	var d DetachedPage
	if err := json.Unmarshal(w.Body.Bytes(), &d); err != nil || w.Code != 200 {
		t.Fatalf("/api/detached = %d %s: %v", w.Code, w.Body, err)
	}
	if d.Total != 60 || d.Limit != 5 || len(d.Sessions) != 5 || d.Sessions[3].ID != "s_det03" || d.Sessions[3].Owed != 3 || d.Sessions[3].OwedBytes != 3000 {
		t.Errorf("/api/detached = %+v", d)
	}
	if !strings.Contains(w.Body.String(), `"owed_bytes":3000`) || !strings.Contains(w.Body.String(), `"detached_since":`) {
		t.Errorf("/api/detached JSON keys: %s", w.Body)
	}
	if w := do(s, "GET", "/api/detached?limit=0", nil, nil); w.Code != 400 {
		t.Errorf("/api/detached?limit=0 = %d, want 400", w.Code)
	}
}

// TestDrainProgress: while draining, the page and /api/node show the
// connections and requests left and the deadline.
func TestDrainProgress(t *testing.T) {
	f := newFixture(3)
	s := newServer(t, f, config.Admin{}, "127.0.0.1:0", nil)
	if strings.Contains(do(s, "GET", "/", nil, nil).Body.String(), "drain-banner") {
		t.Fatal("drain banner shown while serving")
	}
	f.drainer.Drain("test")
	f.node.set(func(c *Counters) { c.Connections, c.InFlight = 1, 4 })
	_, deadline := f.node.DrainDeadline()

	page := do(s, "GET", "/", nil, nil).Body.String()
	at := deadline.UTC().Format("15:04:05") + " UTC"
	for _, want := range []string{"drain-banner", "1 connection and 4 requests in flight left.", "What is left is cancelled at " + at + " (in 30s)"} {
		if !strings.Contains(page, want) {
			t.Errorf("page does not contain %q", want)
		}
	}
	var n NodeView
	if err := json.Unmarshal(do(s, "GET", "/api/node", nil, nil).Body.Bytes(), &n); err != nil {
		t.Fatal(err)
	}
	if n.Drain == nil || n.Drain.ConnectionsLeft != 1 || n.Drain.RequestsLeft != 4 || !n.Drain.Deadline.Equal(deadline) ||
		n.Drain.SecondsLeft < 29 || n.Drain.SecondsLeft > 30 {
		t.Errorf("/api/node drain = %+v, want 1 connection, 4 requests, deadline %s in ~30s", n.Drain, deadline)
	}

	// Past the deadline.
	f.node.mu.Lock()
	f.node.deadline = time.Now().Add(-time.Second)
	f.node.mu.Unlock()
	if page := do(s, "GET", "/", nil, nil).Body.String(); !strings.Contains(page, "passed: cancelling what is left.") {
		t.Errorf("page past the deadline does not say so")
	}
}

// TestFlashMessagesAreHuman: failed actions answer a sentence (shown by
// the page), besides the stable code.
func TestFlashMessagesAreHuman(t *testing.T) {
	f := newFixture(3)
	s := newServer(t, f, config.Admin{}, "127.0.0.1:0", nil)
	tok, ck := tokenAndCookie(t, s, nil)
	hdr := map[string]string{"X-CSRF-Token": tok, "Cookie": ck}
	tests := []struct {
		target  string
		hdr     map[string]string
		code    int
		errCode string
		message string
	}{
		{"/api/sessions/s_gone/close", hdr, 404, "not_found", "Session s_gone is not connected to this node any more"},
		{"/api/backends/nope/reset", hdr, 404, "not_found", "There is no backend named nope any more"},
		{"/api/drain", map[string]string{"Cookie": ck}, 403, "csrf", "reload the page and try again"},
	}
	for _, tc := range tests {
		w := do(s, "POST", tc.target, tc.hdr, nil)
		var body errorBody
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatalf("POST %s: %s: %v", tc.target, w.Body, err)
		}
		if w.Code != tc.code || body.Error != tc.errCode || !strings.Contains(body.Message, tc.message) {
			t.Errorf("POST %s = %d %+v, want %d %s with %q", tc.target, w.Code, body, tc.code, tc.errCode, tc.message)
		}
	}
}

// TestLastPageLink: the pager jumps to the first and the last page.
func TestLastPageLink(t *testing.T) {
	f := newFixture(120)
	s := newServer(t, f, config.Admin{}, "127.0.0.1:0", nil)
	page := do(s, "GET", "/", nil, nil).Body.String()
	if !strings.Contains(page, `id="page-last" href="/?offset=100" data-offset="100"`) {
		t.Errorf("first page has no link to the last page (offset 100)")
	}
	if strings.Contains(page, `id="page-first"`) {
		t.Errorf("first page links to the first page")
	}
	page = do(s, "GET", "/?offset=100", nil, nil).Body.String()
	if !strings.Contains(page, `id="page-first" href="/" data-offset="0"`) || strings.Contains(page, `id="page-last"`) {
		t.Errorf("last page: want a link to the first page and none to the last")
	}
	page = do(s, "GET", "/?q="+url.QueryEscape("s_000")+"&offset=0", nil, nil).Body.String()
	if !strings.Contains(page, `id="page-last" href="/?offset=50&amp;q=s_000" data-offset="50"`) {
		t.Errorf("a search with two pages (100 matches) has no last-page link keeping the search")
	}
	for _, tc := range []struct{ total, want int }{{0, 0}, {1, 0}, {50, 0}, {51, 50}, {100, 50}, {101, 100}} {
		if got := lastOffset(SessionsPage{Total: tc.total, Limit: 50}); got != tc.want {
			t.Errorf("lastOffset(total %d) = %d, want %d", tc.total, got, tc.want)
		}
	}
}

func TestUptimeFormat(t *testing.T) {
	for _, tc := range []struct {
		sec  int64
		want string
	}{{0, "0s"}, {59, "59s"}, {60, "1m"}, {3599, "59m"}, {3600, "1h 0m"}, {11520, "3h 12m"}, {90000, "1d 1h"}} {
		if got := uptime(tc.sec); got != tc.want {
			t.Errorf("uptime(%d) = %q, want %q", tc.sec, got, tc.want)
		}
	}
}
