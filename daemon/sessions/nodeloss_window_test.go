package sessions

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/events"
)

// logTerminals reads session id's whole replay log from the store and
// returns request id -> codes ("result" for a result), each terminal
// once per entry of the log.
func logTerminals(t *testing.T, m *Manager, id string) map[string][]string {
	t.Helper()
	entries, err := m.store.ReadLog(t.Context(), id, 0)
	if err != nil {
		t.Fatalf("read the log of %s: %v", id, err)
	}
	msgs := make([]string, 0, len(entries))
	for _, e := range entries {
		if len(e.Msg) > 0 {
			msgs = append(msgs, string(e.Msg))
		}
	}
	return terminals(t, msgs)
}

// TestNodeLossAcceptedThenKilled: a request is accepted once Recorded
// returns (dispatch calls the backend only then). A replica killed right
// after accepting requests, before any round trip of its own could follow,
// leaves every one of them recorded: a survivor ends each with exactly
// one node_lost, none missing. Requests begun in the same instant but not
// yet accepted are either recorded (and get exactly one node_lost) or not
// (no terminal, not in Running: the client sends them again), never
// recorded without a terminal.
func TestNodeLossAcceptedThenKilled(t *testing.T) {
	for _, b := range nodeLossBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			a := b.openManager(t, "A", nodeLossLimits)
			bb := b.openManager(t, "B", nodeLossLimits)
			raw := rawRedis(t, b)
			const sessionsN, perSession = 20, 4
			ids := make([]string, sessionsN)
			outs := make([]*fakeOutlet, sessionsN)
			for i := range ids {
				outs[i] = &fakeOutlet{}
				ids[i], _ = attach(t, bb, "alice", "", outs[i])
			}
			// Accepted: begun and waited for, concurrently, as dispatch's
			// request goroutines do (the recorder batches them).
			var wg sync.WaitGroup
			var mu sync.Mutex
			notRecorded := 0
			for _, id := range ids {
				for j := range perSession {
					wg.Add(1)
					go func() {
						defer wg.Done()
						s := a.BeginRoute(id, fmt.Sprintf("acc%d", j), "stream", nil)
						if !s.Recorded(t.Context()) {
							mu.Lock()
							notRecorded++
							mu.Unlock()
						}
					}()
				}
			}
			wg.Wait()
			if notRecorded > 0 {
				t.Fatalf("%d requests not recorded with the store up", notRecorded)
			}
			// Begun, not waited for: the kill comes at once.
			for _, id := range ids {
				a.BeginRoute(id, "late", "stream", nil)
			}
			crash(a)
			running := map[string][]string{}
			for _, id := range ids {
				r, err := bb.Running(t.Context(), id)
				if err != nil {
					t.Fatal(err)
				}
				running[id] = r
				for j := range perSession {
					if req := fmt.Sprintf("acc%d", j); !slices.Contains(r, req) {
						t.Fatalf("session %s: accepted request %s not recorded after the kill (running %v)", id, req, r)
					}
				}
			}
			lapse(t, raw, b, "A")
			bb.SweepForTest(t.Context())
			lateLost := 0
			for i, id := range ids {
				o := outs[i]
				want := len(running[id])
				eventually(t, 5*time.Second, fmt.Sprintf("session %d: %d node_lost delivered", i, want), func() bool {
					return countPrefix(o.got(), `{"type":"error"`) >= want
				})
				got, logged := terminals(t, o.got()), logTerminals(t, bb, id)
				for j := range perSession {
					req := fmt.Sprintf("acc%d", j)
					if c := got[req]; len(c) != 1 || c[0] != CodeNodeLost {
						t.Fatalf("session %d: accepted %s got %v, want exactly one node_lost", i, req, c)
					}
					if c := logged[req]; len(c) != 1 {
						t.Fatalf("session %d: accepted %s logged %v, want once", i, req, c)
					}
				}
				if slices.Contains(running[id], "late") {
					lateLost++
					if c := got["late"]; len(c) != 1 || c[0] != CodeNodeLost {
						t.Fatalf("session %d: recorded late request got %v, want exactly one node_lost", i, c)
					}
				} else if c := got["late"]; len(c) != 0 {
					t.Fatalf("session %d: unrecorded late request got %v, want nothing", i, c)
				}
			}
			t.Logf("%d accepted requests each got one node_lost; %d of %d requests begun at the kill were recorded (and got one)",
				sessionsN*perSession, lateLost, sessionsN)
		})
	}
}

// TestNodeLossSurvivorKilledMidSweep: replica A dies with many requests in
// flight; survivor B starts sweeping and is killed in the middle (its
// sweep's context ends with scripts under way, then the process stops;
// how far it got varies from run to run and is logged).
// Survivors C and D then sweep at the same moment. Every request of A
// ends with exactly one node_lost in its session's log, whatever B had
// done: a record leaves the store only with its terminal.
func TestNodeLossSurvivorKilledMidSweep(t *testing.T) {
	for _, b := range nodeLossBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			a := b.openManager(t, "A", nodeLossLimits)
			bb := b.openManager(t, "B", nodeLossLimits)
			cc := b.openManager(t, "C", nodeLossLimits)
			dd := b.openManager(t, "D", nodeLossLimits)
			raw := rawRedis(t, b)
			const sessionsN, perSession = 40, 5
			ids := detachedWithRuns(t, a, sessionsN, perSession)
			crash(a)
			lapse(t, raw, b, "A")
			// B: killed in the middle of its sweep. Its context ends a
			// few milliseconds in, while its takes are under way: some
			// have run, some not, some ran on the server with their answer
			// lost (the same state a SIGKILL leaves).
			ctx, cancel := context.WithTimeout(t.Context(), 8*time.Millisecond)
			bb.SweepForTest(ctx)
			cancel()
			crash(bb)
			byB := 0
			for _, id := range ids {
				byB += len(logTerminals(t, cc, id))
			}
			var wg sync.WaitGroup
			for _, m := range []*Manager{cc, dd} {
				wg.Add(1)
				go func() { defer wg.Done(); m.SweepForTest(t.Context()) }()
			}
			wg.Wait()
			for i, id := range ids {
				logged := logTerminals(t, cc, id)
				for j := range perSession {
					req := fmt.Sprintf("r%d", j)
					if c := logged[req]; len(c) != 1 || c[0] != CodeNodeLost {
						t.Fatalf("session %d request %s: logged %v, want exactly one node_lost", i, req, c)
					}
				}
				if left, _ := cc.Running(t.Context(), id); len(left) != 0 {
					t.Fatalf("session %d: runs %v still recorded", i, left)
				}
			}
			t.Logf("B wrote %d of %d node_lost before it was killed; C and D the rest, each once", byB, sessionsN*perSession)
		})
	}
}

// inflightWelcome captures the welcome's inflight list.
type inflightWelcome struct {
	mu       sync.Mutex
	inflight []string
}

func (w *inflightWelcome) fn(ev *events.Welcome) []byte {
	w.mu.Lock()
	w.inflight = slices.Clone(ev.Inflight)
	w.mu.Unlock()
	return welcomeFn(ev)
}

func (w *inflightWelcome) get() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := slices.Clone(w.inflight)
	slices.Sort(s)
	return s
}

// TestNodeLossInflightAcrossReplicas: the welcome of a resume lists the
// session's requests in flight on any replica (contract v1.1 section 4a),
// read from the store with the claim: a request running on A is listed by
// a resume on B, with B's own; once ended it is not listed and its
// terminal is in the replay instead.
func TestNodeLossInflightAcrossReplicas(t *testing.T) {
	for _, b := range nodeLossBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			a := b.openManager(t, "A", nodeLossLimits)
			bb := b.openManager(t, "B", nodeLossLimits)
			oa := &fakeOutlet{}
			id, _ := attach(t, a, "alice", "", oa)
			onA := a.BeginRoute(id, "on-a", "stream", nil)
			if !onA.Recorded(t.Context()) {
				t.Fatal("not recorded")
			}
			inline := a.Begin(id, "inline-a") // not recorded: not visible from B
			ob := &fakeOutlet{}
			w := &inflightWelcome{}
			if _, _, err := bb.Attach(t.Context(), "alice", id, Resume{HasLast: true}, ob, w.fn); err != nil {
				t.Fatal(err)
			}
			if got := w.get(); !slices.Equal(got, []string{"on-a"}) {
				t.Fatalf("resume on B: inflight %v, want [on-a]", got)
			}
			onB := bb.BeginRoute(id, "on-b", "stream", nil)
			if !onB.Recorded(t.Context()) {
				t.Fatal("not recorded")
			}
			bb.Detach(id, ob, 0)
			w2 := &inflightWelcome{}
			ob2 := &fakeOutlet{}
			if _, _, err := bb.Attach(t.Context(), "alice", id, Resume{HasLast: true}, ob2, w2.fn); err != nil {
				t.Fatal(err)
			}
			if got := w2.get(); !slices.Equal(got, []string{"on-a", "on-b"}) {
				t.Fatalf("second resume on B: inflight %v, want [on-a on-b]", got)
			}
			onA.End(resultMsg("on-a"))
			inline.End(resultMsg("inline-a"))
			// Closed first: a takeover on this node would hold the replay
			// until the older connection's close.
			bb.Detach(id, ob2, 0)
			ob3 := &fakeOutlet{}
			w3 := &inflightWelcome{}
			if _, _, err := bb.Attach(t.Context(), "alice", id, Resume{HasLast: true}, ob3, w3.fn); err != nil {
				t.Fatal(err)
			}
			if got := w3.get(); !slices.Equal(got, []string{"on-b"}) {
				t.Fatalf("resume after on-a ended: inflight %v, want [on-b]", got)
			}
			if c := terminals(t, ob3.got())["on-a"]; len(c) != 1 {
				t.Fatalf("resume after on-a ended: its terminal %v, want once in the replay", c)
			}
			onB.End(resultMsg("on-b"))
		})
	}
}

// TestRunTermScript: the settle-and-log script. A normal end logs the
// terminal once; a retry of an end whose answer was lost (maybeDone)
// finds it in the log and does not log it again; a survivor's take
// after that takes nothing; a take logs node_lost and a late end of the
// same run is dropped; a run whose marker the store lost (and whose
// terminal is not in the log) is logged by the retry.
func TestRunTermScript(t *testing.T) {
	for _, b := range nodeLossBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			m := b.openManager(t, "A", nodeLossLimits)
			rs := m.store.(*RedisStore)
			id, _ := attach(t, m, "alice", "", &fakeOutlet{})
			ctx := t.Context()
			mark := func(req, token string) {
				if err := rs.c.Do(ctx, rs.c.B().Hset().Key(rs.kRun(id)).FieldValue().FieldValue(req, token).Build()).Error(); err != nil {
					t.Fatal(err)
				}
			}
			res := func(req string) []byte { return resultMsg(req) }
			at := func(msg []byte) int { return events.PosIndex(msg) }

			mark("e", "tokA")
			if _, err := rs.appendRun(ctx, id, res("e"), at(res("e")), "e", "tokA", false, false); err != nil {
				t.Fatalf("end: %v", err)
			}
			if _, err := rs.appendRun(ctx, id, res("e"), at(res("e")), "e", "tokA", false, true); err != errRunSettled {
				t.Fatalf("retried end: %v, want errRunSettled", err)
			}
			if _, err := rs.appendRun(ctx, id, res("e"), at(res("e")), "e", "tokA", true, false); err != errRunNotTaken {
				t.Fatalf("take after the end: %v, want errRunNotTaken", err)
			}

			mark("k", "tokA")
			lost := events.AppendError(nil, "k", CodeNodeLost, nodeLostMessage)
			if _, err := rs.appendRun(ctx, id, lost, at(lost), "k", "tokA", true, false); err != nil {
				t.Fatalf("take: %v", err)
			}
			if _, err := rs.appendRun(ctx, id, lost, at(lost), "k", "tokA", true, false); err != errRunNotTaken {
				t.Fatalf("second take: %v, want errRunNotTaken", err)
			}
			if _, err := rs.appendRun(ctx, id, res("k"), at(res("k")), "k", "tokA", false, false); err != errRunDropped {
				t.Fatalf("late end: %v, want errRunDropped", err)
			}

			// Marker gone with nothing logged (a store that lost it): the
			// retry logs the terminal.
			if _, err := rs.appendRun(ctx, id, res("g"), at(res("g")), "g", "tokA", false, true); err != nil {
				t.Fatalf("retried end of a lost marker: %v", err)
			}
			logged := logTerminals(t, m, id)
			want := map[string][]string{"e": {"result"}, "k": {CodeNodeLost}, "g": {"result"}}
			for req, w := range want {
				if !slices.Equal(logged[req], w) {
					t.Fatalf("log of %s: %v, want %v (all %v)", req, logged[req], w, logged)
				}
			}
			var v struct{ Pos uint64 }
			entries, _ := m.store.ReadLog(ctx, id, 0)
			for i, e := range entries {
				if err := json.Unmarshal(e.Msg, &v); err != nil || v.Pos != e.Pos || e.Pos != uint64(i+1) {
					t.Fatalf("entry %d: %s (pos %d, err %v)", i, e.Msg, e.Pos, err)
				}
			}
		})
	}
}

// BenchmarkNodeLossAcceptWait measures what accepting a request only once
// its record is in the store costs the request (Stream.Recorded, before
// the backend call): the wait from BeginRoute to Recorded's return
// (accept-µs/op), against one Redis round trip measured the same way in
// the same loop (ping-µs/op), alone (par1) and with 32 requests at a time
// on 2 cores (par16: the recorder batches them).
func BenchmarkNodeLossAcceptWait(b *testing.B) {
	for _, be := range benchBackends(b) {
		if !be.redis {
			continue
		}
		for _, par := range []int{1, 16} {
			b.Run(fmt.Sprintf("par%d", par), func(b *testing.B) {
				m, id := benchManager(b, be)
				rs := m.store.(*RedisStore)
				ctx := b.Context()
				var n, wait, rtt atomic.Int64
				b.SetParallelism(par)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						req := fmt.Sprintf("r%d", n.Add(1))
						t0 := time.Now()
						s := m.BeginRoute(id, req, "stream", nil)
						if !s.Recorded(ctx) {
							b.Error("not recorded")
						}
						wait.Add(int64(time.Since(t0)))
						t1 := time.Now()
						if err := rs.Ping(ctx); err != nil {
							b.Error(err)
						}
						rtt.Add(int64(time.Since(t1)))
						s.End(resultMsg(req))
					}
				})
				b.ReportMetric(float64(wait.Load())/float64(b.N)/1e3, "accept-µs/op")
				b.ReportMetric(float64(rtt.Load())/float64(b.N)/1e3, "ping-µs/op")
			})
		}
	}
}

// TestNodeLossRerunSurvivorKilled: A dies with a request of a
// retry_on_node_loss route; survivor B takes it over to run it again and
// dies right after (its Rerun hook accepted it but nothing of the rerun
// began). Survivor C finds it, under B's token in B's records, and runs
// it: exactly one terminal, the rerun's result, in the session's log.
func TestNodeLossRerunSurvivorKilled(t *testing.T) {
	for _, b := range nodeLossBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			a := b.openManager(t, "A", nodeLossLimits)
			bb := b.openManager(t, "B", nodeLossLimits)
			cc := b.openManager(t, "C", nodeLossLimits)
			raw := rawRedis(t, b)
			var mu sync.Mutex
			var calls []string
			bb.SetRerun(func(sid, user, req, route string, data []byte) bool {
				mu.Lock()
				calls = append(calls, "B "+req)
				mu.Unlock()
				return true // accepted; B dies before the rerun begins
			})
			cc.SetRerun(func(sid, user, req, route string, data []byte) bool {
				mu.Lock()
				calls = append(calls, "C "+req)
				mu.Unlock()
				s := cc.BeginRoute(sid, req, route, data)
				if !s.Recorded(t.Context()) {
					t.Error("rerun not recorded")
				}
				s.Chunk(chunkMsg(req, 0))
				s.End(resultMsg(req))
				return true
			})
			o := &fakeOutlet{}
			id, _ := attach(t, a, "alice", "", o)
			a.Detach(id, o, 0)
			if !a.BeginRoute(id, "again", "chat", []byte(`{"text":"hi"}`)).Recorded(t.Context()) {
				t.Fatal("not recorded")
			}
			crash(a)
			lapse(t, raw, b, "A")
			bb.SweepForTest(t.Context())
			crash(bb)
			lapse(t, raw, b, "B")
			cc.SweepForTest(t.Context())
			mu.Lock()
			got := slices.Clone(calls)
			mu.Unlock()
			if !slices.Equal(got, []string{"B again", "C again"}) {
				t.Fatalf("rerun calls %v, want B's then C's", got)
			}
			if logged := logTerminals(t, cc, id)["again"]; len(logged) != 1 || logged[0] != "result" {
				t.Fatalf("log of again: %v, want exactly one result (the rerun's on C)", logged)
			}
			if left, _ := cc.Running(t.Context(), id); len(left) != 0 {
				t.Fatalf("runs %v still recorded", left)
			}
			// The rerun adopted the record C wrote for the hand-over: once
			// it ended, nothing of it is left in C's records.
			eventually(t, 5*time.Second, "C's inflight records cleared", func() bool {
				n, err := raw.Do(t.Context(), raw.B().Hlen().Key(b.prefix+"{node:C}:inflight").Build()).AsInt64()
				return err == nil && n == 0
			})
		})
	}
}

// detachedWithRuns attaches n sessions of alice on m, detaches them, and
// begins per recorded "stream" runs r0, r1, … in each; it returns the ids.
func detachedWithRuns(t *testing.T, m *Manager, n, per int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		o := &fakeOutlet{}
		ids[i], _ = attach(t, m, "alice", "", o)
		m.Detach(ids[i], o, 0)
		for j := range per {
			if !m.BeginRoute(ids[i], fmt.Sprintf("r%d", j), "stream", nil).Recorded(t.Context()) {
				t.Fatal("not recorded")
			}
		}
	}
	return ids
}
