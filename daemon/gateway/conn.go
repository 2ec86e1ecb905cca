package gateway

import (
	"sync"
	"time"

	"github.com/orchestratord/orchestratord/daemon/events"
	"github.com/orchestratord/orchestratord/daemon/sessions"
	"github.com/orchestratord/orchestratord/netpoll"
)

// conn is the gateway's state of one connection, the netpoll Conn's
// value: 48 bytes (a size class below 64, for every idle connection),
// dispatch's Reply and the session manager's Outlet for it, no closure.
// Where the connection is in its life is the dynamic type of one field,
// at, which holds what that stage needs and nothing else: what only the
// handshake and the attach need (the user, ?session=, ?last=, frames
// received meanwhile) until attached, then the session's one record.
type conn struct {
	g *Gateway
	c wsConn

	mu sync.Mutex // guards at
	// at is, by its dynamic type:
	//   - *preAttach: Bind under way, frames wait in its pending;
	//   - Session: attached, the session's record;
	//   - detached: given back at the end of a drain (DetachAll), frames
	//     still reach the record (dispatch answers them "draining");
	//   - nil: closed (before or after attach); frames reach nothing.
	at any
}

// detached is a connection's record after DetachAll. A struct, not the
// interface itself, so that a type switch on conn.at tells it from an
// attached record.
type detached struct{ rec Session }

// preAttach is what a connection needs until its session is attached.
type preAttach struct {
	user    string
	expires time.Time // the token's, zero if none
	resume  string
	from    sessions.Resume // where a resume's replay starts (?last=)
	pending [][]byte        // frames received before the session was attached
	// traceparent is the W3C traceparent header of the handshake when a
	// trusted proxy (listen.trusted_proxies) sent it, else "": requests
	// of the session continue that trace (Record.SetTraceID at attach).
	traceparent string
}

// session returns the connection's record while attached, nil before
// attach and after close.
func (st *conn) session() Session {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.record()
}

// record is session with st.mu held: the record of an attached or
// detached connection, else nil.
func (st *conn) record() Session {
	switch a := st.at.(type) {
	case Session:
		return a
	case detached:
		return a.rec
	}
	return nil
}

// pre returns the pre-attach state with st.mu held, nil once attached or
// closed.
func (st *conn) pre() *preAttach {
	p, _ := st.at.(*preAttach)
	return p
}

// Send queues one message on the connection (sessions.Outlet).
func (st *conn) Send(msg []byte) error {
	if err := st.c.Send(msg); err != nil {
		return err
	}
	st.g.msgsOut.Add(1)
	st.g.metrics.MessageOut()
	st.g.metrics.BytesOut(len(msg))
	return nil
}

// SendTerminal queues a terminal tagged with its position
// (sessions.Outlet): at close, Acked says which ones the peer's TCP took.
func (st *conn) SendTerminal(msg []byte, pos uint64) error {
	if err := st.c.SendTagged(msg, pos); err != nil {
		return err
	}
	st.g.msgsOut.Add(1)
	st.g.metrics.MessageOut()
	return nil
}

// Queued returns the bytes waiting in the connection's queue
// (sessions.Outlet).
func (st *conn) Queued() int { return st.c.Queued() }

// NotifyDrained calls fn once the queue is at or under below
// (sessions.Outlet).
func (st *conn) NotifyDrained(below int, fn func()) { st.c.NotifyDrained(below, fn) }

// Acked returns the newest position the peer's TCP acknowledged
// (sessions.Outlet).
func (st *conn) Acked() uint64 { return st.c.Acked() }

// Cut closes the connection with 4008 (sessions.Outlet).
func (st *conn) Cut() { st.c.Close(netpoll.CloseSlowConsumer, "slow consumer") }

// Kick closes the connection: a newer connection took the session over
// (sessions.Outlet).
func (st *conn) Kick() {
	st.c.Close(netpoll.CloseTakenOver, "session taken over by a newer connection")
}

func (st *conn) welcome(w *events.Welcome) []byte {
	w.Node, w.HeartbeatMS = st.g.opts.Node, st.g.opts.Heartbeat.Milliseconds()
	return events.AppendWelcomeV11(make([]byte, 0, 160), w)
}
