package gateway

import (
	"errors"
	"sort"
	"strings"
	"time"

	"github.com/orchestratord/orchestratord/daemon/sessions"
	"github.com/orchestratord/orchestratord/netpoll"
)

// SessionRow is one attached session as the admin page shows it. Remote is
// the client's address (netpoll.Conn.Client: what a trusted proxy reported,
// else the TCP peer), without port when the proxy gave none.
type SessionRow struct {
	ID, User, Remote  string
	ConnectedSince    time.Time
	InFlight          int
	MsgsIn, MsgsOut   uint64
	BytesIn, BytesOut uint64
}

// ErrNoSuchSession: no connection of that session is attached here.
var ErrNoSuchSession = errors.New("no such session on this node")

// Sessions returns one page of the attached sessions whose id, user or
// remote address contains query, newest first, and the number of matches.
func (g *Gateway) Sessions(query string, offset, limit int) ([]SessionRow, int) {
	type ref struct {
		st    *conn
		rec   Session
		since time.Time
	}
	var refs []ref
	g.mgr.EachAttached(func(out sessions.Outlet) {
		st, ok := out.(*conn)
		if !ok {
			return
		}
		rec := st.session()
		if rec == nil {
			return
		}
		if query != "" && !strings.Contains(rec.ID(), query) && !strings.Contains(rec.User(), query) && !strings.Contains(clientString(st.c.Client()), query) {
			return
		}
		refs = append(refs, ref{st, rec, st.c.Since()})
	})
	sort.Slice(refs, func(i, j int) bool { return refs[i].since.After(refs[j].since) })
	total := len(refs)
	if offset > total {
		offset = total
	}
	end := min(offset+limit, total)
	rows := make([]SessionRow, 0, end-offset)
	for _, r := range refs[offset:end] {
		st := r.st
		s := st.c.Stats()
		row := SessionRow{ID: r.rec.ID(), User: r.rec.User(), Remote: clientString(st.c.Client()), ConnectedSince: r.since,
			InFlight: r.rec.InFlight(), MsgsIn: s.MsgsIn, MsgsOut: s.MsgsOut, BytesIn: s.BytesIn, BytesOut: s.BytesOut}
		rows = append(rows, row)
	}
	return rows, total
}

// Kick closes the live connection of session id on this node (1008,
// closed by an operator). The client may reconnect and resume.
func (g *Gateway) Kick(id string) error {
	st, ok := g.mgr.Outlet(id).(*conn)
	if !ok {
		return ErrNoSuchSession
	}
	st.c.Close(netpoll.ClosePolicyViolation, "closed by an operator")
	return nil
}
