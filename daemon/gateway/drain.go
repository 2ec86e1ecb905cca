package gateway

import (
	"github.com/orchestratord/orchestratord/daemon/events"
	"github.com/orchestratord/orchestratord/netpoll"
)

// StartDrain makes the gateway refuse new handshakes (503) and new
// requests (draining), then sends reconnect and closes 1012 every attached
// connection with no request in flight. Busy ones follow as their last
// request ends.
func (g *Gateway) StartDrain() {
	g.draining.Store(true)
	g.gate.SetDraining(true)
	g.router.SetDraining(true)
	g.conns.Range(func(_, v any) bool {
		st := v.(*conn)
		st.mu.Lock()
		idle := st.attached && !st.closed && st.sess.InFlight() == 0
		st.mu.Unlock()
		if idle {
			g.reconnect(st)
		}
		return true
	})
}

// Draining reports whether a drain started.
func (g *Gateway) Draining() bool { return g.draining.Load() }

// sessionIdle is called by dispatch when a session's last request ended
// during a drain.
func (g *Gateway) sessionIdle(sessionID string) {
	if v, ok := g.conns.Load(sessionID); ok {
		g.reconnect(v.(*conn))
	}
}

func (g *Gateway) reconnect(st *conn) {
	var buf [96]byte
	_ = st.Send(events.AppendReconnect(buf[:0], "draining", g.opts.ReconnectAfter.Milliseconds()))
	st.c.Close(netpoll.CloseServiceRestart, "draining")
}

// DetachAll detaches every connection from its session, so that the
// terminals of requests still running go to the session outboxes. Used at
// the end of a drain, before requests are cancelled.
func (g *Gateway) DetachAll() {
	g.conns.Range(func(k, v any) bool {
		st := v.(*conn)
		st.mu.Lock()
		id := st.sessID
		st.mu.Unlock()
		if id != "" && g.conns.CompareAndDelete(k, st) {
			g.mgr.Detach(id, st, st.c.Acked())
			// The connection closes 1001 with the engine; say so first.
			var buf [96]byte
			_ = st.Send(events.AppendReconnect(buf[:0], "draining", g.opts.ReconnectAfter.Milliseconds()))
		}
		return true
	})
}

// Attached returns the number of connections attached to a session.
func (g *Gateway) Attached() int {
	n := 0
	g.conns.Range(func(_, _ any) bool { n++; return true })
	return n
}
