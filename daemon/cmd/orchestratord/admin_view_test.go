package main

import (
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/admin"
)

func apiNode(t *testing.T, s *stack) admin.NodeView {
	t.Helper()
	return getJSON[admin.NodeView](t, "http://"+s.admin+"/api/node")
}

// TestAdminShowsVersionUptimeAndDrain: the wired daemon's admin API gives
// its version and uptime, and during a drain what is left and the
// deadline (start + drain.timeout).
func TestAdminShowsVersionUptimeAndDrain(t *testing.T) {
	yaml := strings.Replace(baseYAML, "slow: {kind: echo, delay: 300ms}", "slow: {kind: echo, delay: 1500ms}", 1)
	yaml = strings.Replace(yaml, "timeout: 2s", "timeout: 4s", 1)
	s := startStack(t, yaml)
	before := time.Now()
	v := apiNode(t, s)
	if v.Version != version || v.StartedAt.IsZero() || v.StartedAt.After(before) || v.UptimeSeconds < 0 || v.Drain != nil {
		t.Fatalf("/api/node = %+v: want version %q, a start time, no drain", v, version)
	}

	busy := s.dial(t, "bob", "")
	busy.expect(2 * time.Second)
	busy.send(`{"type":"slow","id":"b1","data":1}`)
	waitUntil(t, 2*time.Second, func() bool { return inFlight(t, s) == 1 })
	asked := time.Now()
	s.cancel()
	var d *admin.DrainView
	waitUntil(t, 2*time.Second, func() bool { d = apiNode(t, s).Drain; return d != nil })
	if d.RequestsLeft != 1 || d.ConnectionsLeft != 1 {
		t.Errorf("drain left %d requests, %d connections; want 1 and 1", d.RequestsLeft, d.ConnectionsLeft)
	}
	if got := d.Deadline.Sub(d.StartedAt); got != 4*time.Second {
		t.Errorf("deadline %s after the start, want drain.timeout 4s", got)
	}
	if d.StartedAt.Before(asked.Add(-time.Second)) || d.StartedAt.After(time.Now()) || d.SecondsLeft <= 0 || d.SecondsLeft > 4 {
		t.Errorf("drain started %s (asked %s), %gs left", d.StartedAt, asked, d.SecondsLeft)
	}
	if m := busy.expect(3 * time.Second); m.Type != "result" {
		t.Fatalf("busy got %+v, want its result", m)
	}
	s.stop()
}

// TestAdminShowsDetachedSessions: a session whose client went away while
// its request ran is listed as detached, owed that answer, until it
// resumes.
func TestAdminShowsDetachedSessions(t *testing.T) {
	s := startStack(t, baseYAML)
	detached := func() admin.DetachedPage {
		return getJSON[admin.DetachedPage](t, "http://"+s.admin+"/api/detached")
	}
	if p := detached(); p.Total != 0 || len(p.Sessions) != 0 {
		t.Fatalf("detached at start: %+v", p)
	}
	a := s.dial(t, "carol", "")
	w := a.expect(2 * time.Second)
	a.send(`{"type":"slow","id":"away","data":"x"}`)
	waitUntil(t, 2*time.Second, func() bool { return inFlight(t, s) == 1 })
	a.conn.Close()
	waitUntil(t, 3*time.Second, func() bool { return inFlight(t, s) == 0 })
	var p admin.DetachedPage
	waitUntil(t, 3*time.Second, func() bool { p = detached(); return p.Total == 1 && len(p.Sessions) == 1 && p.Sessions[0].Owed == 1 })
	if d := p.Sessions[0]; d.ID != w.Session || d.User != "carol" || d.OwedBytes <= 0 || d.Since.IsZero() {
		t.Errorf("detached row %+v, want session %s of carol owed one answer", d, w.Session)
	}
	if n := apiNode(t, s); n.Detached != 1 || n.SessionBytes <= 0 {
		t.Errorf("/api/node detached %d, session bytes %d; want 1 and > 0", n.Detached, n.SessionBytes)
	}
	b := s.dial(t, "carol", "session="+w.Session)
	b.expect(2 * time.Second)
	waitUntil(t, 3*time.Second, func() bool { return detached().Total == 0 })
}
