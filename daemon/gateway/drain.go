package gateway

import (
	"github.com/orchestratord/orchestratord/daemon/events"
	"github.com/orchestratord/orchestratord/daemon/sessions"
	"github.com/orchestratord/orchestratord/netpoll"
)

// StartDrain makes the gateway refuse new handshakes (503) and new
// requests (draining), then sends reconnect and closes 1012 every attached
// connection with no request in flight. Busy ones follow as their last
// request ends (dispatch's OnIdle).
func (g *Gateway) StartDrain() {
	g.gate.SetDraining(true)
	g.router.SetDraining(true)
	g.mgr.EachAttached(func(out sessions.Outlet) {
		st, ok := out.(*conn)
		if !ok {
			return
		}
		st.mu.Lock()
		rec, attached := st.at.(Session)
		st.mu.Unlock()
		if attached && rec.InFlight() == 0 {
			g.reconnect(st)
		}
	})
}

// Draining reports whether a drain started (dispatch's flag: the one
// draining flag of the node's request path).
func (g *Gateway) Draining() bool { return g.router.Draining() }

// sessionIdle is called by dispatch when a session's last request ended
// during a drain.
func (g *Gateway) sessionIdle(sessionID string) {
	if st, ok := g.mgr.Outlet(sessionID).(*conn); ok {
		g.reconnect(st)
	}
}

func (g *Gateway) reconnect(st *conn) {
	var buf [96]byte
	_ = st.Send(events.AppendReconnect(buf[:0], "draining", g.opts.ReconnectAfter.Milliseconds()))
	st.c.Close(netpoll.CloseServiceRestart, "draining")
}

// DetachAll detaches every connection from its session, so that the
// terminals of requests still running go to the session's log for the
// next resume. Used at the end of a drain, before requests are cancelled.
func (g *Gateway) DetachAll() {
	g.mgr.EachAttached(func(out sessions.Outlet) {
		st, ok := out.(*conn)
		if !ok {
			return
		}
		st.mu.Lock()
		rec, attached := st.at.(Session)
		if attached {
			st.at = detached{rec}
		}
		st.mu.Unlock()
		if !attached {
			return
		}
		g.mgr.Detach(rec, st, st.c.Acked())
		// The connection closes 1001 with the engine; say so first.
		var buf [96]byte
		_ = st.Send(events.AppendReconnect(buf[:0], "draining", g.opts.ReconnectAfter.Milliseconds()))
	})
}

// Attached returns the number of connections attached to a session.
func (g *Gateway) Attached() int {
	n := 0
	g.mgr.EachAttached(func(sessions.Outlet) { n++ })
	return n
}
