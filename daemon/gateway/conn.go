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
	// handshakeTraceparent is the W3C traceparent header of the handshake
	// when a trusted proxy (listen.trusted_proxies) sent it, else "". It is
	// set before OnOpen and never changed: any goroutine may read it.
	// Requests of the connection continue that trace.
	handshakeTraceparent string

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
