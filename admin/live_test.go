package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// readUpdates parses an SSE body and sends each update event on ch.
func readUpdates(body *bufio.Reader, ch chan<- update) {
	defer close(ch)
	var event, data string
	for {
		line, err := body.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			event = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			data = line[len("data: "):]
		case line == "":
			if event == "update" {
				var u update
				if json.Unmarshal([]byte(data), &u) == nil {
					ch <- u
				}
			}
			event, data = "", ""
		}
	}
}

func TestEventsStream(t *testing.T) {
	f := newFixture(3)
	s := newServer(t, f, config.Admin{}, "127.0.0.1:0", nil)
	s.interval = 20 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+ln.Addr().String()+"/events?q=live", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type = %q", ct)
	}
	ch := make(chan update, 16)
	go readUpdates(bufio.NewReader(resp.Body), ch)
	next := func(what string, cond func(update) bool) update {
		t.Helper()
		for {
			select {
			case u, ok := <-ch:
				if !ok {
					t.Fatalf("stream ended waiting for %s", what)
				}
				if cond(u) {
					return u
				}
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	u := next("first update", func(update) bool { return true })
	if u.State != "serving" || !strings.Contains(u.Node, "stat-connections") || !strings.Contains(u.Backends, `data-name="sql"`) {
		t.Errorf("first update = %+v", u)
	}
	if !strings.Contains(u.Sessions, "No sessions matching") {
		t.Errorf("sessions fragment for q=live before any match: %q", u.Sessions)
	}
	f.sessions.add(SessionRow{ID: "s_live1", User: "alice", Remote: "127.0.0.1:4000", ConnectedSince: time.Now()})
	next("the new session row", func(u update) bool { return strings.Contains(u.Sessions, `data-session="s_live1"`) })
	f.drainer.Drain("test")
	next("draining state", func(u update) bool { return u.State == "draining" })

	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := s.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown with a live stream: %v", err)
	}
	for range ch { // the stream must end
	}
	if err := <-served; err != nil {
		t.Errorf("Serve returned %v, want nil after Shutdown", err)
	}
	if err := s.Shutdown(sctx); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func TestEventsStreamLimit(t *testing.T) {
	s := newServer(t, newFixture(0), config.Admin{}, "127.0.0.1:0", nil)
	s.streams.Store(maxStreams)
	if w := do(s, "GET", "/events", nil, nil); w.Code != http.StatusServiceUnavailable {
		t.Errorf("GET /events over the limit = %d, want 503", w.Code)
	}
	if w := do(s, "GET", "/events?offset=-3", nil, nil); w.Code != http.StatusBadRequest {
		t.Errorf("GET /events?offset=-3 = %d, want 400", w.Code)
	}
}

func TestRateMeter(t *testing.T) {
	var m rateMeter
	at := time.Unix(1000, 0)
	for _, tc := range []struct {
		after           time.Duration
		in, out         uint64
		wantIn, wantOut float64
	}{
		{0, 100, 10, 0, 0},
		{500 * time.Millisecond, 150, 20, 0, 0},      // under a second: previous rate
		{2 * time.Second, 300, 50, 100, 20},          // 200 in, 40 out over 2s
		{2500 * time.Millisecond, 999, 999, 100, 20}, // window not over
		{4 * time.Second, 500, 70, 100, 10},          // 200, 20 over 2s
		{5 * time.Second, 10, 5, 0, 0},               // counters restarted
	} {
		in, out := m.sample(at.Add(tc.after), tc.in, tc.out)
		if in != tc.wantIn || out != tc.wantOut {
			t.Errorf("at +%v: rates %v, %v; want %v, %v", tc.after, in, out, tc.wantIn, tc.wantOut)
		}
	}
}

func TestGroup(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"0", "0"}, {"999", "999"}, {"1000", "1\u202f000"}, {"19000", "19\u202f000"},
		{"1234567", "1\u202f234\u202f567"}, {"-1234", "-1\u202f234"}, {"-12", "-12"},
	} {
		if got := group(tc.in); got != tc.want {
			t.Errorf("group(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := bytesU(1536); got != "1.5 KiB" {
		t.Errorf("bytesU(1536) = %q", got)
	}
	for ms, want := range map[float64]string{0: "–", 2.25: "2.2 ms", 80: "80 ms", 2300: "2.3 s"} {
		if got := millis(ms); got != want {
			t.Errorf("millis(%v) = %q, want %q", ms, got, want)
		}
	}
}

// naiveFilter is the obvious implementation FilterSessions must match.
func naiveFilter(all []SessionRow, q string, offset, limit int) ([]SessionRow, int) {
	var m []SessionRow
	for _, r := range all {
		if q == "" || strings.Contains(r.ID, q) || strings.Contains(r.User, q) || strings.Contains(r.Remote, q) {
			m = append(m, r)
		}
	}
	slices.SortStableFunc(m, func(a, b SessionRow) int {
		if c := b.ConnectedSince.Compare(a.ConnectedSince); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	if offset >= len(m) {
		return nil, len(m)
	}
	return m[offset:min(offset+limit, len(m))], len(m)
}

func TestFilterSessions(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := make([]SessionRow, 5000)
	for i := range base {
		base[i] = row(i)
		base[i].ConnectedSince = t0.Add(time.Duration(rng.IntN(2000)) * time.Second) // many ties
	}
	rng.Shuffle(len(base), func(i, j int) { base[i], base[j] = base[j], base[i] })
	for _, tc := range []struct {
		q             string
		offset, limit int
	}{
		{"", 0, 50}, {"", 50, 50}, {"", 4990, 50}, {"", 6000, 50}, {"", 0, 5000}, {"", 0, 2000},
		{"user4", 0, 50}, {"user4", 100, 50}, {"10.0.3.", 0, 50}, {"s_0499", 0, 50}, {"zzz", 0, 50}, {"", 0, 0},
	} {
		t.Run(fmt.Sprintf("%s/%d/%d", tc.q, tc.offset, tc.limit), func(t *testing.T) {
			want, wantN := naiveFilter(base, tc.q, tc.offset, tc.limit)
			got, gotN := FilterSessions(slices.Clone(base), tc.q, tc.offset, tc.limit)
			if gotN != wantN || len(got) != len(want) {
				t.Fatalf("total %d rows %d; want %d, %d", gotN, len(got), wantN, len(want))
			}
			for i := range want {
				if got[i].ID != want[i].ID {
					t.Fatalf("row %d = %s, want %s", i, got[i].ID, want[i].ID)
				}
			}
		})
	}
}

func snapshot19k() []SessionRow {
	rows := make([]SessionRow, 19000)
	for i := range rows {
		rows[i] = row(i)
	}
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
	return rows
}

func BenchmarkFilterSessions19k(b *testing.B) {
	snap := snapshot19k()
	buf := make([]SessionRow, len(snap))
	for _, q := range []string{"", "user4"} {
		b.Run("q="+q, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				copy(buf, snap) // a lister copies its snapshot too
				FilterSessions(buf, q, 0, PageSize)
			}
		})
	}
}

func BenchmarkAPISessions19k(b *testing.B) {
	s := newServer(b, newFixture(19000), config.Admin{}, "127.0.0.1:0", nil)
	for _, target := range []string{"/api/sessions", "/api/sessions?q=user4&offset=100", "/"} {
		b.Run(target, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest("GET", target, nil)
				w := httptest.NewRecorder()
				s.ServeHTTP(w, r)
				if w.Code != 200 {
					b.Fatalf("code %d", w.Code)
				}
			}
		})
	}
}

func BenchmarkRenderUpdate19k(b *testing.B) {
	s := newServer(b, newFixture(19000), config.Admin{}, "127.0.0.1:0", nil)
	r := httptest.NewRequest("GET", "/events", nil)
	var frag bytes.Buffer
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.renderUpdate(r, "", 0, &frag); err != nil {
			b.Fatal(err)
		}
	}
}
