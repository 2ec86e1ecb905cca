package gateway

import (
	"sync"

	"github.com/orchestratord/orchestratord/daemon/auth"
	"github.com/orchestratord/orchestratord/daemon/dispatch"
	"github.com/orchestratord/orchestratord/daemon/events"
	"github.com/orchestratord/orchestratord/daemon/sessions"
	"github.com/orchestratord/orchestratord/netpoll"
)

// conn is the gateway's state of one connection; it is the session
// manager's Outlet for it.
type conn struct {
	g      *Gateway
	c      *netpoll.Conn
	id     auth.Identity
	resume string
	from   sessions.Resume // where a resume's replay starts (?last=)
	reply  dispatch.Reply
	// handshakeTraceparent is the W3C traceparent header of the handshake
	// when a trusted proxy (listen.trusted_proxies) sent it, else "". It is
	// set before OnOpen and never changed: any goroutine may read it.
	// Requests of the connection continue that trace.
	handshakeTraceparent string
	cid                  string // connection id of the log lines

	mu       sync.Mutex // guards the fields below
	attached bool
	closed   bool
	pending  [][]byte // frames received before the session was attached
	sessID   string
	sess     *dispatch.Session
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
