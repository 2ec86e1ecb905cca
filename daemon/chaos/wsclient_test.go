package chaos

// A small protocol client (gobwas/ws) and the ledger that accounts for
// every accepted request id.

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// msg is a server message, decoded loosely.
type msg struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Seq     int             `json:"seq"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
	Session string          `json:"session"`
	Resumed bool            `json:"resumed"`
	Node    string          `json:"node"`
	Reason  string          `json:"reason"`
}

func (m msg) terminal() bool { return m.Type == "result" || m.Type == "error" }

// outcome is "result" or the error code.
func (m msg) outcome() string {
	if m.Type == "error" {
		return m.Code
	}
	return m.Type
}

// closedErr is returned by read when the server sent a close frame.
type closedErr struct {
	code   int
	reason string
}

func (c closedErr) Error() string { return fmt.Sprintf("closed %d %q", c.code, c.reason) }

// closeCode returns the close code of err (0 when err is no close frame).
func closeCode(err error) int {
	var ce closedErr
	if errors.As(err, &ce) {
		return ce.code
	}
	return 0
}

// wsConn is one client connection. Reads run on one goroutine; writes are
// serialised.
type wsConn struct {
	conn    net.Conn
	r       *bufio.Reader
	w       sync.Mutex
	welcome msg
	user    string
}

// dialOpts are the handshake's extras.
type dialOpts struct {
	token   string // Authorization: Bearer (empty: none)
	query   string // raw query after ?
	header  http.Header
	timeout time.Duration
}

// dial connects to ws://addr/ws and reads the welcome.
func dial(addr string, o dialOpts) (*wsConn, error) {
	if o.timeout == 0 {
		o.timeout = 10 * time.Second
	}
	h := http.Header{}
	for k, v := range o.header {
		h[k] = v
	}
	if o.token != "" {
		h.Set("Authorization", "Bearer "+o.token)
	}
	d := ws.Dialer{Timeout: o.timeout, Header: ws.HandshakeHeaderHTTP(h)}
	u := "ws://" + addr + "/ws"
	if o.query != "" {
		u += "?" + o.query
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	conn, br, _, err := d.Dial(ctx, u)
	if err != nil {
		return nil, err
	}
	c := &wsConn{conn: conn}
	if br != nil {
		c.r = bufio.NewReader(io.MultiReader(br, conn))
	} else {
		c.r = bufio.NewReader(conn)
	}
	m, err := c.read(o.timeout)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("read welcome: %w", err)
	}
	if m.Type != "welcome" || m.Session == "" {
		conn.Close()
		return nil, fmt.Errorf("first message %+v, want a welcome", m)
	}
	c.welcome = m
	return c, nil
}

// dialAs dials with a fresh token for user, optionally resuming session.
func dialAs(t testing.TB, addr, user, session string) (*wsConn, error) {
	q := ""
	if session != "" {
		q = "session=" + session
	}
	c, err := dial(addr, dialOpts{token: mint(t, user), query: q})
	if c != nil {
		c.user = user
	}
	return c, err
}

// handshakeStatus returns the HTTP status of a refused handshake, else 0.
func handshakeStatus(err error) int {
	var se ws.StatusError
	if errors.As(err, &se) {
		return int(se)
	}
	return 0
}

// sendRaw writes one text frame.
func (c *wsConn) sendRaw(b []byte) error {
	c.w.Lock()
	defer c.w.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return wsutil.WriteClientText(c.conn, b)
}

// request sends {"type":typ,"id":id,"data":data}.
func (c *wsConn) request(typ, id string, data any) error {
	b, err := json.Marshal(map[string]any{"type": typ, "id": id, "data": data})
	if err != nil {
		return err
	}
	return c.sendRaw(b)
}

// read returns the next data message, or a closedErr for a close frame.
// Pings are answered. Frames are read by hand: gobwas/ws refuses close
// codes above 1011.
func (c *wsConn) read(timeout time.Duration) (msg, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	var payload []byte
	for {
		h, err := ws.ReadHeader(c.r)
		if err != nil {
			return msg{}, err
		}
		if h.Length > 16<<20 {
			return msg{}, fmt.Errorf("frame of %d bytes", h.Length)
		}
		b := make([]byte, h.Length)
		if _, err := io.ReadFull(c.r, b); err != nil {
			return msg{}, err
		}
		if h.Masked {
			ws.Cipher(b, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			c.w.Lock()
			_ = wsutil.WriteClientMessage(c.conn, ws.OpPong, b)
			c.w.Unlock()
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			code, reason := 1005, ""
			if len(b) >= 2 {
				code, reason = int(binary.BigEndian.Uint16(b)), string(b[2:])
			}
			c.w.Lock()
			_ = wsutil.WriteClientMessage(c.conn, ws.OpClose, b[:min(len(b), 2)])
			c.w.Unlock()
			return msg{}, closedErr{code: code, reason: reason}
		case ws.OpBinary:
			return msg{}, errors.New("binary frame from the server")
		}
		payload = append(payload, b...)
		if h.Fin {
			break
		}
	}
	var m msg
	if err := json.Unmarshal(payload, &m); err != nil {
		// data nested deeper than encoding/json goes (the daemon echoes
		// what it was sent): read the envelope's head only.
		if h, ok := headOf(payload); ok {
			return h, nil
		}
		if len(payload) > 200 {
			payload = append(payload[:200:200], "..."...)
		}
		return msg{}, fmt.Errorf("bad message %q: %w", payload, err)
	}
	return m, nil
}

func (c *wsConn) close() { c.conn.Close() }

// ledger accounts for requests: which ids were accepted, in which
// session, and how many terminals each got.
type ledger struct {
	mu       sync.Mutex
	session  map[string]string // id → session
	user     map[string]string // session → user
	terms    map[string]int    // id → terminals seen
	outcomes map[string]int    // outcome → count
	first    map[string]msg    // id → first terminal
	strays   int               // terminals of ids never sent
	strayIDs []string          // the first few of them
}

func newLedger() *ledger {
	return &ledger{session: map[string]string{}, user: map[string]string{}, terms: map[string]int{},
		outcomes: map[string]int{}, first: map[string]msg{}}
}

// sent records id as accepted in c's session.
func (l *ledger) sent(c *wsConn, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.session[id] = c.welcome.Session
	l.user[c.welcome.Session] = c.user
}

// forget removes an id the daemon provably never read.
func (l *ledger) forget(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.session, id)
}

// see records m when it is a terminal; it reports whether it was one.
func (l *ledger) see(m msg) bool {
	if !m.terminal() {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.session[m.ID]; !ok {
		l.strays++
		if len(l.strayIDs) < 5 {
			l.strayIDs = append(l.strayIDs, m.ID)
		}
		return true
	}
	l.terms[m.ID]++
	if l.terms[m.ID] == 1 {
		l.first[m.ID] = m
		l.outcomes[m.outcome()]++
	}
	return true
}

// done reports whether id has its terminal.
func (l *ledger) done(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.terms[id] > 0
}

// pending returns session → ids without a terminal.
func (l *ledger) pending() map[string][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string][]string{}
	for id, s := range l.session {
		if l.terms[id] == 0 {
			out[s] = append(out[s], id)
		}
	}
	return out
}

// report returns accepted, missing and duplicate counts.
func (l *ledger) report() (accepted, missing, dups int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id := range l.session {
		switch n := l.terms[id]; {
		case n == 0:
			missing++
		case n > 1:
			dups++
		}
	}
	return len(l.session), missing, dups
}

// outcomeSummary returns the outcome counts, sorted.
func (l *ledger) outcomeSummary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]string, 0, len(l.outcomes))
	for k := range l.outcomes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := ""
	for _, k := range keys {
		s += fmt.Sprintf("%s=%d ", k, l.outcomes[k])
	}
	return s
}

// collect resumes every session with ids still pending on addr and reads
// until they have their terminals (outbox or live resume), then a short
// quiet window to catch duplicates.
func (l *ledger) collect(t *testing.T, addr string, timeout time.Duration) {
	t.Helper()
	pend := l.pending()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for s, ids := range pend {
		l.mu.Lock()
		user := l.user[s]
		l.mu.Unlock()
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dialAs(t, addr, user, s)
			if err != nil {
				t.Errorf("resume %s: %v", s, err)
				return
			}
			defer c.close()
			if c.welcome.Session != s {
				t.Errorf("resume %s: got session %s (resumed=%v): its outbox is lost", s, c.welcome.Session, c.welcome.Resumed)
				return
			}
			deadline := time.Now().Add(timeout)
			left := len(ids)
			for left > 0 && time.Now().Before(deadline) {
				m, err := c.read(time.Until(deadline))
				if err != nil {
					break
				}
				if l.see(m) {
					left = 0
					for _, id := range ids {
						if !l.done(id) {
							left++
						}
					}
				}
			}
			// Quiet window: a duplicate would come now.
			for {
				m, err := c.read(300 * time.Millisecond)
				if err != nil {
					return
				}
				l.see(m)
			}
		}()
	}
	wg.Wait()
}

// check fails the test unless every accepted id has exactly one terminal.
func (l *ledger) check(t *testing.T, what string) {
	t.Helper()
	acc, miss, dups := l.report()
	t.Logf("%s: accepted=%d missing=%d duplicates=%d strays=%d outcomes: %s", what, acc, miss, dups, l.strays, l.outcomeSummary())
	if miss != 0 || dups != 0 || l.strays != 0 {
		var ex []string
		for s, ids := range l.pending() {
			ex = append(ex, fmt.Sprintf("%s:%v", s, ids[:min(3, len(ids))]))
			if len(ex) > 3 {
				break
			}
		}
		t.Errorf("%s: %d accepted ids without a terminal, %d with more than one, %d stray terminals (e.g. %q); e.g. %v", what, miss, dups, l.strays, l.strayIDs, ex)
	}
}

// pump reads c until err or close, feeding the ledger; it returns the
// error that ended it.
func (l *ledger) pump(c *wsConn, idle time.Duration, onMsg func(msg)) error {
	for {
		m, err := c.read(idle)
		if err != nil {
			return err
		}
		l.see(m)
		if onMsg != nil {
			onMsg(m)
		}
	}
}

// headRE matches the head of a server message: type, id and, for errors,
// code, before data.
var headRE = regexp.MustCompile(`^\{"type":"([a-z]+)","id":"((?:[^"\\]|\\.)*)"(?:,"code":"([a-z_]+)")?`)

// headOf reads type, id and code from the head of a server message.
func headOf(p []byte) (msg, bool) {
	sm := headRE.FindSubmatch(p)
	if sm == nil {
		return msg{}, false
	}
	return msg{Type: string(sm[1]), ID: string(sm[2]), Code: string(sm[3])}, true
}
