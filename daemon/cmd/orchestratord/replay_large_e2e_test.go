package main

// A large replay log resumed by a normal reader (issue 13, contract 1.1
// section 4a "Replay is paced by the client's reading").

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"
)

// largeLogYAML: a log that holds 15 MB (16 x the default 1 MiB
// ws.outbound_queue_bytes), memory store.
const largeLogYAML = baseYAML + `
sessions:
  replay_max: 1000
  replay_bytes: 33554432
  memory_budget_bytes: 1073741824
limits:
  session_rate: 100000
  session_burst: 100000
`

// TestResumeLargeLog: a session whose replay log holds 250 answers of
// 60 KB (15 MB) is resumed with ?last=0 by a client that reads normally:
// everything arrives on that one connection, in position order 1..250,
// with recovered:true and no close (no 4008: the replay is paced by the
// socket, never cut for what it is owed).
func TestResumeLargeLog(t *testing.T) {
	s := startStack(t, largeLogYAML)
	const n = 250
	data := `"` + strings.Repeat("z", 60000) + `"`
	c := dialRaw(t, s, "large", "", 0)
	w, _, closed := c.next(5 * time.Second)
	if closed || w.Type != "welcome" {
		t.Fatalf("welcome: %+v", w)
	}
	for i := range n {
		if err := wsutil.WriteClientText(c.conn, []byte(fmt.Sprintf(`{"type":"echo","id":"L%d","data":%s}`, i, data))); err != nil {
			t.Fatal(err)
		}
		m, code, closed := c.next(10 * time.Second)
		if closed || m.Type != "result" || m.Pos != uint64(i+1) {
			t.Fatalf("answer %d: %+v (closed %v, code %d)", i, m, closed, code)
		}
	}
	c.conn.Close()

	t0 := time.Now()
	rc := dialRaw(t, s, "large", "session="+w.Session+"&last=0", 0)
	// It reads, and answers the heartbeat's pings as a client does: with
	// ws.heartbeat 5s a peer silent for 10 s is closed, and under -race
	// on a loaded host this replay was seen to take 9.6 s.
	rc.pong = true
	rw, _, closed := rc.next(10 * time.Second)
	if closed || rw.Type != "welcome" || !rw.Resumed || rw.Recovered == nil || !*rw.Recovered || rw.Replay != n {
		t.Fatalf("resume welcome: %+v, want resumed, recovered:true, replay %d", rw, n)
	}
	bytes := 0
	for p := uint64(1); p <= n; p++ {
		m, code, closed := rc.next(30 * time.Second)
		if closed {
			t.Fatalf("replay cut after %d of %d terminals: close code %d", p-1, n, code)
		}
		if m.Type != "result" || m.Pos != p || m.ID != fmt.Sprintf("L%d", p-1) {
			t.Fatalf("replay: %+v, want the result of L%d at pos %d", m, p-1, p)
		}
		bytes += len(data)
	}
	took := time.Since(t0)
	t.Logf("15 MB resume: %d terminals, %.1f MB of answers, one connection, no 4008, in %s", n, float64(bytes)/1e6, took.Round(time.Millisecond))
	// Nothing more comes: no duplicate, no close.
	if m, code, closed := rc.next(300 * time.Millisecond); !closed || code != 0 {
		t.Fatalf("after the replay: %+v (close code %d), want nothing", m, code)
	}
}
