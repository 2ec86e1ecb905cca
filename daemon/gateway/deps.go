package gateway

import (
	"context"
	"net/netip"
	"time"

	"github.com/orchestratord/orchestratord/daemon/auth"
	"github.com/orchestratord/orchestratord/daemon/dispatch"
	"github.com/orchestratord/orchestratord/daemon/events"
	"github.com/orchestratord/orchestratord/daemon/sessions"
	"github.com/orchestratord/orchestratord/netpoll"
)

// What the gateway needs of the other rooms, as small interfaces, so that
// its own logic (frames before attach, detach with what the peer
// acknowledged, drain) is tested with fakes. cmd wires the real ones:
// ManagerSessions(*sessions.Manager), *dispatch.Router, *auth.Gate.

// Session is a session's one record (sessions.Record) as the gateway
// holds it for a connection: what dispatch works on, plus activity.
type Session interface {
	dispatch.Session
	// Touch records activity (TTL refresh, rate limited); never blocks.
	Touch()
	// SetTraceID sets the trace id of the session's requests ("": a new
	// one per request).
	SetTraceID(id string)
}

// Sessions is the session manager as the gateway uses it.
type Sessions interface {
	// Lookup returns the owner of session id; sessions.ErrNotFound if
	// unknown or expired.
	Lookup(ctx context.Context, id string) (string, error)
	// Bind attaches out to a session of user (sessions.Manager.Bind): the
	// welcome, the replay and live output go through out. The connection
	// holds the returned record until Detach.
	Bind(ctx context.Context, user, resumeID string, from sessions.Resume, out sessions.Outlet, welcome func(*events.Welcome) []byte) (Session, error)
	// Detach gives s back: out closed (or is given up at the end of a
	// drain); acked is the newest position its peer acknowledged.
	// Exactly once per successful Bind; never blocks on the store.
	Detach(s Session, out sessions.Outlet, acked uint64)
	// Outlet returns the live connection of session id on this node.
	Outlet(id string) sessions.Outlet
	// EachAttached calls fn with every live connection on this node.
	EachAttached(fn func(sessions.Outlet))
	// Ready reports whether the store is usable (/readyz).
	Ready(ctx context.Context) error
}

// Dispatcher is dispatch as the gateway uses it (*dispatch.Router).
type Dispatcher interface {
	// Handle processes one frame of session s; it never blocks.
	Handle(s dispatch.Session, payload []byte, reply dispatch.Reply)
	SetDraining(on bool)
	Draining() bool
	// OnIdle registers fn, called when a session's last request ends
	// during a drain.
	OnIdle(fn func(sessionID string))
}

// Gate decides handshakes (*auth.Gate).
type Gate interface {
	Check(h *auth.Handshake) (auth.Identity, *auth.Refusal)
	// Reject refuses an admitted handshake with code (the gateway's own
	// checks: bad last, another user's session, store down) and releases
	// its admission.
	Reject(h *auth.Handshake, code string, err error) *auth.Refusal
	Release(addr netip.Addr)
	SetDraining(on bool)
}

// wsConn is the netpoll connection as the gateway uses it
// (*netpoll.Conn).
type wsConn interface {
	Send(msg []byte) error
	SendTagged(msg []byte, tag uint64) error
	Queued() int
	NotifyDrained(below int, fn func())
	Acked() uint64
	Close(code netpoll.CloseCode, reason string)
	CloseAt(t time.Time, code netpoll.CloseCode, reason string)
	ID() uint64
	Client() netip.AddrPort
	Since() time.Time
	Stats() netpoll.ConnStats
}

// ManagerSessions adapts the session manager to Sessions.
func ManagerSessions(m *sessions.Manager) Sessions { return managerSessions{m} }

type managerSessions struct{ *sessions.Manager }

func (m managerSessions) Bind(ctx context.Context, user, resumeID string, from sessions.Resume, out sessions.Outlet, welcome func(*events.Welcome) []byte) (Session, error) {
	rec, _, err := m.Manager.Bind(ctx, user, resumeID, from, out, welcome)
	if err != nil {
		return nil, err
	}
	return rec, nil
}

func (m managerSessions) Detach(s Session, out sessions.Outlet, acked uint64) {
	m.Manager.Detach(s.ID(), out, acked)
}
