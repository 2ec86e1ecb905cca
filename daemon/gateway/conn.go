package gateway

import (
	"sync"

	"github.com/orchestratord/orchestratord/daemon/auth"
	"github.com/orchestratord/orchestratord/daemon/dispatch"
	"github.com/orchestratord/orchestratord/netpoll"
)

// conn is the gateway's state of one connection; it is the session
// manager's Outlet for it.
type conn struct {
	g      *Gateway
	c      *netpoll.Conn
	id     auth.Identity
	resume string
	reply  dispatch.Reply
	cid    string // connection id of the log lines
	trace  string // trusted handshake trace id, or ""

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

// Kick closes the connection: a newer connection took the session over
// (sessions.Outlet).
func (st *conn) Kick() {
	st.c.Close(netpoll.CloseTakenOver, "session taken over by a newer connection")
}

func (st *conn) welcome(id string, resumed bool) []byte {
	return welcomeBytes(id, resumed, st.g.opts.Node, st.g.opts.Heartbeat)
}
