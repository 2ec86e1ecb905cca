package main

// The memory budget (contract 1.1 section 4a, sessions.memory_budget_bytes)
// seen from outside: through the daemon, its /metrics and resumes.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"
)

// budgetYAML: a 4 MiB budget over the memory store's logs; each log may
// hold 1 MiB.
const budgetYAML = baseYAML + `
sessions:
  replay_max: 1000
  replay_bytes: 1048576
  memory_budget_bytes: 4194304
limits:
  session_rate: 100000
  session_burst: 100000
`

// TestMemoryBudgetTrimsOldestDetached: eight sessions in turn log twelve
// 60 KB answers each (about 720 KB) and detach; past the 4 MiB budget the
// logs of the oldest detached sessions are trimmed first. /metrics counts
// the eight detached sessions and the bytes held come back under the
// budget; a resume of a trimmed session with last=6 says recovered:false
// with the six it missed, a resume of the newest replays its six.
func TestMemoryBudgetTrimsOldestDetached(t *testing.T) {
	s := startStack(t, budgetYAML)
	const sessions, answers, budget = 8, 12, 4 << 20
	data := `"` + strings.Repeat("b", 60000) + `"`
	gauge := func(name string) float64 {
		v, _ := metricValue(scrape(t, "http://"+s.admin+"/metrics"), name, nil)
		return v
	}
	ids := make([]string, sessions)
	for i := range sessions {
		c := dialRaw(t, s, fmt.Sprintf("budget%d", i), "", 0)
		w, _, closed := c.next(5 * time.Second)
		if closed || w.Type != "welcome" {
			t.Fatalf("session %d: welcome %+v", i, w)
		}
		ids[i] = w.Session
		for k := range answers {
			if err := wsutil.WriteClientText(c.conn, []byte(fmt.Sprintf(`{"type":"echo","id":"b%d","data":%s}`, k, data))); err != nil {
				t.Fatal(err)
			}
			if m, _, closed := c.next(10 * time.Second); closed || m.Type != "result" {
				t.Fatalf("session %d, answer %d: %+v", i, k, m)
			}
		}
		c.conn.Close()
		// Detached in this order: the budget trims the oldest first.
		deadline := time.Now().Add(10 * time.Second)
		for gauge("orchestratord_sessions_detached") < float64(i+1) {
			if time.Now().After(deadline) {
				t.Fatalf("orchestratord_sessions_detached = %v after session %d closed, want %d", gauge("orchestratord_sessions_detached"), i, i+1)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for gauge("orchestratord_session_bytes") > budget {
		if time.Now().After(deadline) {
			t.Fatalf("orchestratord_session_bytes = %v, over the budget %d", gauge("orchestratord_session_bytes"), budget)
		}
		time.Sleep(10 * time.Millisecond)
	}
	held, detached := gauge("orchestratord_session_bytes"), gauge("orchestratord_sessions_detached")
	t.Logf("after %d sessions of %d x 60 KB: orchestratord_session_bytes %.0f (budget %d), orchestratord_sessions_detached %.0f",
		sessions, answers, held, budget, detached)
	if detached != sessions {
		t.Errorf("orchestratord_sessions_detached = %v, want %d (trimmed sessions are still kept for resume)", detached, sessions)
	}
	// Logged bytes of ~8 x 720 KB went over 4 MiB: the sweeper trims to
	// 90 % of the budget, so more than one session cannot be whole.
	resume := func(i int) dmsg {
		c := dialRaw(t, s, fmt.Sprintf("budget%d", i), "session="+ids[i]+"&last=6", 0)
		w, _, closed := c.next(5 * time.Second)
		if closed || w.Type != "welcome" || !w.Resumed || w.Recovered == nil {
			t.Fatalf("resume of session %d: %+v", i, w)
		}
		for range w.Replay {
			if m, code, closed := c.next(10 * time.Second); closed || m.Type != "result" {
				t.Fatalf("replay of session %d: %+v (close %d)", i, m, code)
			}
		}
		return w
	}
	oldest := resume(0)
	if *oldest.Recovered || oldest.Missed != answers-6 || oldest.Replay != 0 {
		t.Errorf("resume of the oldest detached session: recovered %v missed %d replay %d, want recovered:false missed %d replay 0",
			*oldest.Recovered, oldest.Missed, oldest.Replay, answers-6)
	}
	newest := resume(sessions - 1)
	if !*newest.Recovered || newest.Missed != 0 || newest.Replay != answers-6 {
		t.Errorf("resume of the newest session: recovered %v missed %d replay %d, want recovered:true replay %d",
			*newest.Recovered, newest.Missed, newest.Replay, answers-6)
	}
}
