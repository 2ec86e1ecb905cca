package main

// Delivery end to end (contract 1.1 section 4a, issue 13): slow consumers
// cut with 4008 and resumed without ?last=, crashing clients resumed with
// ?last=, a large log replayed to a normal reader in one connection.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"golang.org/x/sys/unix"
)

// deliveryYAML: logs big enough to hold every answer of the test.
const deliveryYAML = baseYAML + `
sessions:
  replay_max: 1000
  replay_bytes: 67108864
  memory_budget_bytes: 4294967296
`

// dmsg is a server message with the v1.1 fields.
type dmsg struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	Pos       uint64 `json:"pos"`
	Session   string `json:"session"`
	Resumed   bool   `json:"resumed"`
	Recovered *bool  `json:"recovered"`
	Missed    uint64 `json:"missed"`
	Replay    int    `json:"replay"`
}

// rawClient is a client with a chosen receive buffer that reads only when
// told to.
type rawClient struct {
	conn net.Conn
	br   *bufio.Reader
}

func dialRaw(t *testing.T, s *stack, user, query string, rcvbuf int) *rawClient {
	t.Helper()
	nd := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		if rcvbuf == 0 {
			return nil
		}
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf) }); err != nil {
			return err
		}
		return serr
	}}
	d := ws.Dialer{Timeout: 5 * time.Second, NetDial: nd.DialContext,
		Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + token(t, user, time.Hour)}})}
	u := "ws://" + s.addr + "/ws"
	if query != "" {
		u += "?" + query
	}
	conn, br, _, err := d.Dial(context.Background(), u)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if br == nil {
		br = bufio.NewReader(conn)
	} else {
		br = bufio.NewReader(io.MultiReader(br, conn))
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{conn: conn, br: br}
}

// next returns the next text message; closed (with the code) at a close
// frame, EOF or a reset.
func (c *rawClient) next(timeout time.Duration) (m dmsg, code int, closed bool) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			return dmsg{}, 0, true
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c.br, p); err != nil {
			return dmsg{}, 0, true
		}
		switch h.OpCode {
		case ws.OpText:
			if err := json.Unmarshal(p, &m); err != nil {
				return dmsg{}, 0, true
			}
			return m, 0, false
		case ws.OpClose:
			cc, _ := ws.ParseCloseFrameData(p)
			return dmsg{}, int(cc), true
		}
	}
}

// answered reads the daemon's count of echo requests answered with a
// result.
func answered(t *testing.T, s *stack) int {
	t.Helper()
	resp, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`orchestratord_request_duration_seconds_count\{outcome="result",route="echo"\} (\d+)`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestSlowConsumersResume is issue 13's slow-consumer test: clients with a
// 4 KiB receive buffer ask for many 60 KB answers and do not read, are cut
// with 4008, then read what reached their socket and resume without
// ?last=: the daemon's answered count equals received + replayed, each id
// exactly once, and the resume is never cut. CHAOS_LONG=1: 50 clients x
// 400 answers; else 4 x 60. The "pings" form keeps sending pings while not
// reading.
func TestSlowConsumersResume(t *testing.T) {
	clients, answers := 4, 60
	if os.Getenv("CHAOS_LONG") == "1" {
		clients, answers = 50, 400
	}
	for _, pings := range []bool{false, true} {
		t.Run(fmt.Sprintf("pings=%v", pings), func(t *testing.T) {
			s := startStack(t, deliveryYAML)
			before := answered(t, s)
			mem := watchMemory(t)
			defer mem.report(t)
			data := `"` + strings.Repeat("x", 60000) + `"`
			var wg sync.WaitGroup
			type result struct {
				received, replayed map[string]int
				recovered          bool
				resumeCut          int
			}
			results := make([]result, clients)
			for i := range clients {
				wg.Go(func() {
					c := dialRaw(t, s, fmt.Sprintf("slow%d", i), "", 4096)
					w, _, closed := c.next(5 * time.Second)
					if closed || w.Type != "welcome" {
						t.Errorf("client %d: no welcome", i)
						return
					}
					_ = c.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
					for n := range answers {
						req := fmt.Sprintf(`{"type":"echo","id":"%d-%d","data":%s}`, i, n, data)
						if err := wsutil.WriteClientText(c.conn, []byte(req)); err != nil {
							break // cut: the rest is never sent
						}
						if pings && n%5 == 0 {
							_ = wsutil.WriteClientText(c.conn, []byte(fmt.Sprintf(`{"type":"ping","id":"p%d"}`, n)))
						}
					}
					// Now read what reached the socket, until the close.
					r := result{received: map[string]int{}, replayed: map[string]int{}}
					for {
						m, _, closed := c.next(20 * time.Second)
						if closed {
							break
						}
						if m.Type == "result" {
							r.received[m.ID]++
						}
					}
					c.conn.Close()
					// Resume without last, as a normal reader.
					var rc *rawClient
					for attempt := 0; ; attempt++ {
						rc = dialRaw(t, s, fmt.Sprintf("slow%d", i), "session="+w.Session, 0)
						rw, _, closed := rc.next(10 * time.Second)
						if closed || rw.Type != "welcome" || !rw.Resumed {
							t.Errorf("client %d: resume welcome %+v", i, rw)
							return
						}
						r.recovered = rw.Recovered != nil && *rw.Recovered
						for range rw.Replay {
							m, code, closed := rc.next(20 * time.Second)
							if closed {
								r.resumeCut = code
								break
							}
							r.replayed[m.ID]++
						}
						break
					}
					results[i] = r
				})
			}
			wg.Wait()
			total := answered(t, s) - before
			got, dups := 0, 0
			for i, r := range results {
				if r.resumeCut != 0 {
					t.Errorf("client %d: resume cut with %d", i, r.resumeCut)
				}
				if !r.recovered {
					t.Errorf("client %d: resume says recovered:false", i)
				}
				for id, n := range r.received {
					if n+r.replayed[id] != 1 {
						dups++
						t.Errorf("client %d: id %s received %d, replayed %d", i, id, n, r.replayed[id])
					}
				}
				got += len(r.received)
				for id := range r.replayed {
					if r.received[id] == 0 {
						got++
					}
				}
			}
			t.Logf("answered %d, received+replayed %d, duplicates %d", total, got, dups)
			if got != total {
				t.Fatalf("daemon answered %d, clients got %d (lost %d)", total, got, total-got)
			}
		})
	}
}

// TestCrashingClientsResumeWithLast: clients whose socket is reset
// (SO_LINGER 0) with answers unread resume with ?last= again and again
// until they have everything: positions 1..N each exactly once,
// recovered:true every time.
func TestCrashingClientsResumeWithLast(t *testing.T) {
	s := startStack(t, deliveryYAML)
	const n = 40
	data := `"` + strings.Repeat("y", 20000) + `"`
	c := dialRaw(t, s, "crash", "", 4096)
	w, _, _ := c.next(5 * time.Second)
	for i := range n {
		if err := wsutil.WriteClientText(c.conn, []byte(fmt.Sprintf(`{"type":"echo","id":"c%d","data":%s}`, i, data))); err != nil {
			t.Fatal(err)
		}
	}
	// The crash comes once the daemon has read and answered every request:
	// a request still unread in its socket when the client resets is
	// rightly never answered (the client never learnt it was accepted).
	before := time.Now()
	for answered(t, s) < n {
		if time.Since(before) > 30*time.Second {
			t.Fatalf("the daemon answered %d of %d requests in 30 s", answered(t, s), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	seen := map[uint64]int{}
	var last uint64
	reset := func(c *rawClient) {
		if tc, ok := c.conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.conn.Close()
	}
	// Read a little of what is there, then crash.
	for range 3 {
		m, _, closed := c.next(5 * time.Second)
		if closed {
			break
		}
		if m.Pos != 0 {
			seen[m.Pos]++
			last = max(last, m.Pos)
		}
	}
	reset(c)
	for round := 0; len(seen) < n && round < 50; round++ {
		rc := dialRaw(t, s, "crash", fmt.Sprintf("session=%s&last=%d", w.Session, last), 4096)
		rw, _, closed := rc.next(5 * time.Second)
		if closed || rw.Recovered == nil || !*rw.Recovered {
			t.Fatalf("round %d: welcome %+v", round, rw)
		}
		for range min(rw.Replay, 5) {
			m, _, closed := rc.next(5 * time.Second)
			if closed {
				break
			}
			if m.Pos != last+1 {
				t.Fatalf("round %d: pos %d after %d", round, m.Pos, last)
			}
			seen[m.Pos]++
			last = m.Pos
		}
		reset(rc)
	}
	for p := uint64(1); p <= n; p++ {
		if seen[p] != 1 {
			t.Errorf("position %d seen %d times", p, seen[p])
		}
	}
}

// TestResumeBadLast: ?last= must be a non-negative integer (400 otherwise).
func TestResumeBadLast(t *testing.T) {
	s := startStack(t, deliveryYAML)
	for _, q := range []string{"last=-1", "last=abc", "last=1.5", "last=", "last=9007199254740992"} {
		if _, err := s.tryDial("bad", q); err == nil || !strings.Contains(err.Error(), "400") {
			t.Errorf("?%s: %v, want a 400 refusal", q, err)
		}
	}
	c := dialRaw(t, s, "fresh", "last=5", 0)
	m, _, _ := c.next(5 * time.Second)
	if m.Type != "welcome" || m.Recovered == nil || !*m.Recovered || m.Resumed {
		t.Fatalf("fresh session with last: %+v, want resumed:false recovered:true", m)
	}
}
