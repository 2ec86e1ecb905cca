package sessions

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// nodeLossLimits: a long node_loss_after, so that only the tests decide
// when a node counts as lost (they delete its liveness key, or sweep by
// hand), and an outbox large enough to hold every terminal.
var nodeLossLimits = config.Sessions{TTL: config.Duration(time.Hour), OutboxMax: 1000, HistoryMaxTurns: 3,
	NodeLossAfter: config.Duration(time.Minute)}

// nodeLossBackends are the stores with node-loss recovery: both Redis
// forms.
func nodeLossBackends(t *testing.T) []backend { return sharedBackends(t) }

func rawRedis(t *testing.T, b backend) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{b.addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// attachAfter resumes session id on m with ?last=last: only what came
// after it is replayed (the delivered position a Detach records reaches
// the store asynchronously; a test must not depend on that timing).
func attachAfter(t *testing.T, m *Manager, id string, last uint64, out Outlet) {
	t.Helper()
	if _, _, err := m.Attach(t.Context(), "alice", id, Resume{Last: last, HasLast: true}, out, welcomeFn); err != nil {
		t.Fatalf("resume %s on %s after %d: %v", id, m.Node(), last, err)
	}
}

// crash stops m as kill -9 would, as far as the store can tell: its
// liveness key stays until it lapses (or the test deletes it), its records
// stay, nothing is cleaned up.
func crash(m *Manager) {
	m.nl.cancel()
	m.nl.wg.Wait()
	m.nl = nil // Close must not remove the liveness key
	m.Close()
}

// lapse deletes node's liveness key: its liveness has lapsed.
func lapse(t *testing.T, c rueidis.Client, b backend, node string) {
	t.Helper()
	if err := c.Do(t.Context(), c.B().Del().Key(b.prefix+"{node:"+node+"}:alive").Build()).Error(); err != nil {
		t.Fatal(err)
	}
}

// waitRecorded waits until every (session, request) of runs is recorded.
func waitRecorded(t *testing.T, m *Manager, runs map[string][]string) {
	t.Helper()
	eventually(t, 5*time.Second, "runs recorded in the store", func() bool {
		for sid, reqs := range runs {
			got, err := m.Running(t.Context(), sid)
			if err != nil {
				return false
			}
			for _, r := range reqs {
				if !slices.Contains(got, r) {
					return false
				}
			}
		}
		return true
	})
}

// terminals decodes the terminal messages of msgs: request id -> codes
// ("result" for a result).
func terminals(t *testing.T, msgs []string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, m := range msgs {
		var v struct{ Type, ID, Code string }
		if err := json.Unmarshal([]byte(m), &v); err != nil {
			t.Fatalf("bad message %q: %v", m, err)
		}
		switch v.Type {
		case "result":
			out[v.ID] = append(out[v.ID], "result")
		case "error":
			out[v.ID] = append(out[v.ID], v.Code)
		}
	}
	return out
}

// TestNodeLossRace: replica A dies with requests in flight in many
// sessions (some attached on survivor B, some on survivor C, some
// detached); B and C sweep at the same moment. Every orphaned request gets
// exactly one node_lost terminal, delivered to the session's connection
// wherever it is, and a request that had finished before gets none.
func TestNodeLossRace(t *testing.T) {
	for _, b := range nodeLossBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			a := b.openManager(t, "A", nodeLossLimits)
			bb := b.openManager(t, "B", nodeLossLimits)
			cc := b.openManager(t, "C", nodeLossLimits)
			raw := rawRedis(t, b)
			const sessionsN, perSession = 30, 3
			ids := make([]string, sessionsN)
			lasts := make([]uint64, sessionsN)
			runs := map[string][]string{}
			for i := range ids {
				o := &fakeOutlet{}
				ids[i], _ = attach(t, a, "alice", "", o)
				for j := range perSession {
					req := fmt.Sprintf("r%d", j)
					s := a.BeginRoute(ids[i], req, "stream", nil)
					s.Chunk(chunkMsg(req, 0))
					runs[ids[i]] = append(runs[ids[i]], req)
				}
				// One request that finished before the crash: no node_lost.
				done := a.BeginRoute(ids[i], "done", "stream", nil)
				done.End(resultMsg("done"))
				lasts[i] = o.acked()
				a.Detach(ids[i], o, o.acked())
			}
			waitRecorded(t, a, runs)
			crash(a)
			outs := make([]*fakeOutlet, sessionsN)
			for i, id := range ids {
				switch i % 3 {
				case 0:
					outs[i] = &fakeOutlet{}
					attachAfter(t, bb, id, lasts[i], outs[i])
				case 1:
					outs[i] = &fakeOutlet{}
					attachAfter(t, cc, id, lasts[i], outs[i])
				}
			}
			lapse(t, raw, b, "A")
			var wg sync.WaitGroup
			for _, m := range []*Manager{bb, cc} {
				wg.Add(1)
				go func() { defer wg.Done(); m.SweepForTest(t.Context()) }()
			}
			wg.Wait()
			for i, id := range ids {
				var got []string
				if outs[i] != nil {
					o := outs[i]
					eventually(t, 5*time.Second, fmt.Sprintf("node_lost delivered to the attached connection of session %d (%s)", i, id), func() bool {
						return countPrefix(o.got(), `{"type":"error"`) >= perSession
					})
					got = o.got()
				} else {
					o := &fakeOutlet{}
					attachAfter(t, bb, id, lasts[i], o)
					got = o.got()
				}
				term := terminals(t, got)
				for _, req := range runs[id] {
					if c := term[req]; len(c) != 1 || c[0] != CodeNodeLost {
						t.Fatalf("session %d request %s: terminals %v, want exactly one node_lost (all: %q)", i, req, c, got)
					}
				}
				if c := term["done"]; len(c) != 0 {
					t.Fatalf("session %d: request finished before the crash got %v after it, want nothing", i, c)
				}
				if left, _ := bb.Running(t.Context(), id); len(left) != 0 {
					t.Fatalf("session %d: runs %v still recorded", i, left)
				}
			}
			// A is forgotten once settled; nothing of it is left.
			n, err := raw.Do(t.Context(), raw.B().Sismember().Key(b.prefix+"nodes").Member("A").Build()).AsInt64()
			if err != nil || n != 0 {
				t.Fatalf("A still registered (%d, %v)", n, err)
			}
			n, _ = raw.Do(t.Context(), raw.B().Hlen().Key(b.prefix+"{node:A}:inflight").Build()).AsInt64()
			if n != 0 {
				t.Fatalf("%d runs of A left in its inflight hash", n)
			}
			// A second sweep finds nothing more to do.
			bb.SweepForTest(t.Context())
			cc.SweepForTest(t.Context())
			for i, o := range outs {
				if o == nil {
					continue
				}
				if got := countPrefix(o.got(), `{"type":"error"`); got != perSession {
					t.Fatalf("session %d got %d errors after a second sweep, want %d", i, got, perSession)
				}
			}
		})
	}
}

// TestNodeLossPartitionedNodeComesBack: A is only cut off: its liveness
// lapses, B ends A's requests with node_lost, then A comes back and its
// requests end normally. Their late terminals are dropped (one terminal
// each), while A's requests begun after it came back end normally.
func TestNodeLossPartitionedNodeComesBack(t *testing.T) {
	for _, b := range nodeLossBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			a := b.openManager(t, "A", nodeLossLimits)
			bb := b.openManager(t, "B", nodeLossLimits)
			raw := rawRedis(t, b)
			oa := &fakeOutlet{}
			id, _ := attach(t, a, "alice", "", oa)
			s1 := a.BeginRoute(id, "p1", "stream", nil)
			s2 := a.BeginRoute(id, "p2", "stream", nil)
			waitRecorded(t, a, map[string][]string{id: {"p1", "p2"}})

			lapse(t, raw, b, "A") // the partition: A's key lapses
			bb.SweepForTest(t.Context())
			eventually(t, 5*time.Second, "node_lost delivered to the connection on A over the bus", func() bool {
				return countPrefix(oa.got(), `{"type":"error"`) == 2
			})
			// A is back: its liveness key is set again, and its runs end.
			if _, err := a.nl.rs.refreshAlive(t.Context(), "A", a.nl.token, a.nl.ttl); err != nil {
				t.Fatal(err)
			}
			s1.End(resultMsg("p1"))
			s2.End(resultMsg("p2"))
			s3 := a.BeginRoute(id, "p3", "stream", nil)
			waitRecorded(t, a, map[string][]string{id: {"p3"}})
			bb.SweepForTest(t.Context()) // A is alive: p3 is not an orphan
			s3.End(resultMsg("p3"))
			eventually(t, 5*time.Second, "p3's result delivered", func() bool {
				return terminals(t, oa.got())["p3"] != nil
			})
			term := terminals(t, oa.got())
			for req, want := range map[string]string{"p1": CodeNodeLost, "p2": CodeNodeLost, "p3": "result"} {
				if c := term[req]; len(c) != 1 || c[0] != want {
					t.Fatalf("%s: terminals %v, want exactly one %s (all %q)", req, c, want, oa.got())
				}
			}
			// Nothing more is owed: a resume after the last position seen
			// replays nothing.
			last := oa.acked()
			a.Detach(id, oa, last)
			o := &fakeOutlet{}
			attachAfter(t, bb, id, last, o)
			if term := terminals(t, o.got()); len(term) != 0 {
				t.Fatalf("replayed after the last position seen: %v, want nothing", term)
			}
			if st := a.Stats(); st.Streams != 0 {
				t.Fatalf("A still holds %d streams", st.Streams)
			}
		})
	}
}

// TestNodeLossRestartedNode: a replica crashes and is started again under
// the same name before its liveness lapses; the new process ends its
// predecessor's requests with node_lost on its first sweep, and not its own.
func TestNodeLossRestartedNode(t *testing.T) {
	for _, b := range nodeLossBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			a := b.openManager(t, "A", nodeLossLimits)
			o := &fakeOutlet{}
			id, _ := attach(t, a, "alice", "", o)
			a.BeginRoute(id, "old", "stream", nil)
			waitRecorded(t, a, map[string][]string{id: {"old"}})
			a.Detach(id, o, o.acked())
			crash(a)
			a2 := b.openManager(t, "A", nodeLossLimits)
			o2 := &fakeOutlet{}
			attach(t, a2, "alice", id, o2)
			s := a2.BeginRoute(id, "new", "stream", nil)
			waitRecorded(t, a2, map[string][]string{id: {"new"}})
			a2.SweepForTest(t.Context())
			eventually(t, 5*time.Second, "node_lost of the predecessor's request", func() bool {
				return terminals(t, o2.got())["old"] != nil
			})
			s.End(resultMsg("new"))
			term := terminals(t, o2.got())
			if c := term["old"]; len(c) != 1 || c[0] != CodeNodeLost {
				t.Fatalf("old: %v, want one node_lost", c)
			}
			if c := term["new"]; len(c) != 1 || c[0] != "result" {
				t.Fatalf("new: %v, want one result", c)
			}
		})
	}
}

// TestNodeLossSweeperOnItsOwn: with node_loss_after 1s and no help from
// the test, a survivor ends a crashed replica's requests within 1s of the
// moment its liveness was last refreshed... measured from the crash.
func TestNodeLossSweeperOnItsOwn(t *testing.T) {
	for _, b := range nodeLossBackends(t) {
		if b.advance != nil {
			continue // miniredis expires keys only when its clock is moved
		}
		t.Run(b.name, func(t *testing.T) {
			lim := nodeLossLimits
			lim.NodeLossAfter = config.Duration(time.Second)
			a := b.openManager(t, "A", lim)
			bb := b.openManager(t, "B", lim)
			o := &fakeOutlet{}
			id, _ := attach(t, a, "alice", "", o)
			a.BeginRoute(id, "x", "stream", nil)
			waitRecorded(t, a, map[string][]string{id: {"x"}})
			ob := &fakeOutlet{}
			attach(t, bb, "alice", id, ob)
			crashed := time.Now()
			crash(a)
			eventually(t, 3*time.Second, "node_lost from the sweeper", func() bool {
				return terminals(t, ob.got())["x"] != nil
			})
			took := time.Since(crashed)
			t.Logf("node_lost %v after the crash (node_loss_after 1s)", took.Round(time.Millisecond))
			if took > time.Second+500*time.Millisecond {
				t.Fatalf("node_lost after %v, want within node_loss_after (1s) plus scheduling slack", took)
			}
		})
	}
}

// TestNodeLossNormalEndCleansUp: a request that ends normally leaves no
// record behind, and a clean Close removes the node's liveness and
// registration.
func TestNodeLossNormalEndCleansUp(t *testing.T) {
	for _, b := range nodeLossBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			a := b.openManager(t, "A", nodeLossLimits)
			raw := rawRedis(t, b)
			o := &fakeOutlet{}
			id, _ := attach(t, a, "alice", "", o)
			var reqs []string
			for i := range 20 {
				reqs = append(reqs, fmt.Sprintf("n%d", i))
			}
			streams := make([]*Stream, len(reqs))
			for i, r := range reqs {
				streams[i] = a.BeginRoute(id, r, "stream", nil)
			}
			waitRecorded(t, a, map[string][]string{id: reqs})
			for i, r := range reqs {
				streams[i].End(resultMsg(r))
			}
			// Ended before the recorder wrote it: never written at all.
			quick := a.BeginRoute(id, "quick", "stream", nil)
			quick.End(resultMsg("quick"))
			term := terminals(t, o.got())
			for _, r := range append(reqs, "quick") {
				if c := term[r]; len(c) != 1 || c[0] != "result" {
					t.Fatalf("%s: %v, want one result", r, c)
				}
			}
			if left, _ := a.Running(t.Context(), id); len(left) != 0 {
				t.Fatalf("markers %v left after the ends", left)
			}
			keys := []string{b.prefix + "{node:A}:alive"}
			if n, _ := raw.Do(t.Context(), raw.B().Exists().Key(keys...).Build()).AsInt64(); n != 1 {
				t.Fatalf("liveness key missing while A runs")
			}
			a.Close() // at once: the inflight entries are removed by Close if not yet
			if n, _ := raw.Do(t.Context(), raw.B().Hlen().Key(b.prefix+"{node:A}:inflight").Build()).AsInt64(); n != 0 {
				t.Fatalf("%d inflight entries left after a clean close", n)
			}
			if n, _ := raw.Do(t.Context(), raw.B().Exists().Key(keys...).Build()).AsInt64(); n != 0 {
				t.Fatalf("liveness key left after a clean close")
			}
			if n, _ := raw.Do(t.Context(), raw.B().Sismember().Key(b.prefix+"nodes").Member("A").Build()).AsInt64(); n != 0 {
				t.Fatalf("A still registered after a clean close")
			}
		})
	}
}

// TestNodeLossHeldWhileStoreDown: a request's end whose check cannot reach
// the store is held, not delivered blindly, and lands once the store is
// back.
func TestNodeLossHeldWhileStoreDown(t *testing.T) {
	r := newOwnRedis(t)
	b := backend{name: "own", redis: true, addr: r.addr(), prefix: randomPrefix()}
	lim := nodeLossLimits
	m, err := OpenOptions(t.Context(), b.cfg(lim), "A", testLog(t),
		Options{Redis: RedisOptions{Prefix: b.prefix, OpTimeout: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	o := &fakeOutlet{}
	id, _ := attach(t, m, "alice", "", o)
	s := m.BeginRoute(id, "h", "stream", nil)
	waitRecorded(t, m, map[string][]string{id: {"h"}})
	r.stop()
	s.End(resultMsg("h"))
	if got := terminals(t, o.got())["h"]; got != nil {
		t.Fatalf("terminal delivered while its run could not be settled: %v", got)
	}
	// Begun while the store is down: its record cannot be written, so no
	// survivor can know of it; its end is not held by the node-loss check
	// (Manager.Terminal keeps it until the store numbers it).
	d := m.BeginRoute(id, "d", "stream", nil)
	<-d.run.sent
	d.End(resultMsg("d"))
	m.nl.mu.Lock()
	held := len(m.nl.held)
	m.nl.mu.Unlock()
	if d.run.stored || held != 1 || m.waitingForStore() != 1 {
		t.Fatalf("run begun with the store down: stored %v, %d held (want 1: h), %d waiting for the store (want 1: d)",
			d.run.stored, held, m.waitingForStore())
	}
	r.start()
	eventually(t, 10*time.Second, "held terminal delivered once the store is back", func() bool {
		return terminals(t, o.got())["h"] != nil
	})
	eventually(t, 10*time.Second, "d delivered once the store is back", func() bool {
		return terminals(t, o.got())["d"] != nil
	})
	for _, req := range []string{"h", "d"} {
		if got := terminals(t, o.got())[req]; len(got) != 1 || got[0] != "result" {
			t.Fatalf("%s: %v, want one result", req, got)
		}
	}
}

// TestNodeLossMemoryStore: the memory store has no sweeper; BeginRoute and
// End behave as Begin and End, and Running lists this node's requests.
func TestNodeLossMemoryStore(t *testing.T) {
	b := backend{name: "memory"}
	m := b.openManager(t, "solo", nodeLossLimits)
	o := &fakeOutlet{}
	id, _ := attach(t, m, "alice", "", o)
	s := m.BeginRoute(id, "m1", "echo", nil)
	if got, err := m.Running(t.Context(), id); err != nil || strings.Join(got, ",") != "m1" {
		t.Fatalf("Running = %v, %v; want [m1]", got, err)
	}
	if m.SweepForTest(context.Background()) {
		t.Fatal("the memory store swept")
	}
	s.End(resultMsg("m1"))
	if c := terminals(t, o.got())["m1"]; len(c) != 1 {
		t.Fatalf("m1: %v, want one result", c)
	}
}

func TestParseRunRecord(t *testing.T) {
	for _, tc := range []struct {
		name, field, value string
		ok                 bool
		want               runRecord
	}{
		{"plain", "s_x 1 r1", "A/ab 1700000000000 chat", true, runRecord{SID: "s_x", Req: "r1", Token: "A/ab", Route: "chat"}},
		{"request id with spaces", "s_x 2 a b", "A/ab 1 r", true, runRecord{SID: "s_x", Req: "a b", Token: "A/ab", Route: "r"}},
		{"no route", "s_x 3 r", "A/ab 1", true, runRecord{SID: "s_x", Req: "r", Token: "A/ab"}},
		{"retry data", runField("s_x", 4, "r"), runValue("A/ab", time.UnixMilli(5), "my route", []byte(`{"a": "b c"}`)), true,
			runRecord{SID: "s_x", Req: "r", Token: "A/ab", Route: "my route", Data: []byte(`{"a": "b c"}`)}},
		{"no request", "s_x 5", "A/ab 1 r", false, runRecord{}},
		{"no number", "s_x", "A/ab 1 r", false, runRecord{}},
		{"bad time", "s_x 6 r", "A/ab x r", false, runRecord{}},
		{"no token", "s_x 7 r", "", false, runRecord{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseRunRecord(tc.field, tc.value)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if ok && (got.SID != tc.want.SID || got.Req != tc.want.Req || got.Token != tc.want.Token || got.Route != tc.want.Route || string(got.Data) != string(tc.want.Data)) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// BenchmarkNodeLossRecord is what node-loss recovery adds to a request
// that runs long enough to be recorded (Redis store), against the same
// request begun without a record, in the same run, 32 requests at a time:
// "plain" is Begin + End live; "recorded" is BeginRoute, the recorder's
// write (pipelined with the other requests' starts), then End with its
// settling round trip (pipelined by rueidis with the other ends).
func BenchmarkNodeLossRecord(b *testing.B) {
	for _, be := range benchBackends(b) {
		if !be.redis {
			continue
		}
		for _, recorded := range []bool{false, true} {
			name := "plain"
			if recorded {
				name = "recorded"
			}
			b.Run(name, func(b *testing.B) {
				m, id := benchManager(b, be)
				var n atomic.Int64
				b.ReportAllocs()
				b.SetParallelism(16) // 32 requests in flight on 2 cores
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						req := fmt.Sprintf("r%d", n.Add(1))
						if !recorded {
							m.Begin(id, req).End(resultMsg(req))
							continue
						}
						s := m.BeginRoute(id, req, "stream", nil)
						<-s.run.sent
						s.End(resultMsg(req))
					}
				})
			})
		}
	}
}

// TestNodeLossRerun: a request whose route retries on node loss is run
// again by exactly one of two racing survivors (the Rerun hook), with no
// node_lost; one the hook refuses ends with node_lost.
func TestNodeLossRerun(t *testing.T) {
	for _, b := range nodeLossBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			a := b.openManager(t, "A", nodeLossLimits)
			bb := b.openManager(t, "B", nodeLossLimits)
			cc := b.openManager(t, "C", nodeLossLimits)
			raw := rawRedis(t, b)
			var mu sync.Mutex
			calls := map[string][]string{} // request -> "node route data user"
			for _, m := range []*Manager{bb, cc} {
				m.SetRerun(func(sid, user, req, route string, data []byte) bool {
					mu.Lock()
					calls[req] = append(calls[req], fmt.Sprintf("%s %s %s %s", m.Node(), route, data, user))
					mu.Unlock()
					if req == "refused" {
						return false
					}
					s := m.BeginRoute(sid, req, route, data)
					s.Chunk(fmt.Appendf(nil, `{"type":"restart","id":%q}`, req))
					s.Chunk(chunkMsg(req, 0))
					s.End(resultMsg(req))
					return true
				})
			}
			o := &fakeOutlet{}
			id, _ := attach(t, a, "alice", "", o)
			a.BeginRoute(id, "again", "chat", []byte(`{"text":"hi there"}`))
			a.BeginRoute(id, "refused", "chat", []byte(`null`))
			a.BeginRoute(id, "plain", "chat", nil)
			waitRecorded(t, a, map[string][]string{id: {"again", "refused", "plain"}})
			a.Detach(id, o, o.acked())
			crash(a)
			ob := &fakeOutlet{}
			attach(t, bb, "alice", id, ob)
			lapse(t, raw, b, "A")
			var wg sync.WaitGroup
			for _, m := range []*Manager{bb, cc} {
				wg.Add(1)
				go func() { defer wg.Done(); m.SweepForTest(t.Context()) }()
			}
			wg.Wait()
			eventually(t, 5*time.Second, "three terminals", func() bool { return len(terminals(t, ob.got())) == 3 })
			term := terminals(t, ob.got())
			for req, want := range map[string]string{"again": "result", "refused": CodeNodeLost, "plain": CodeNodeLost} {
				if c := term[req]; len(c) != 1 || c[0] != want {
					t.Fatalf("%s: %v, want exactly one %s (all %q)", req, c, want, ob.got())
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if c := calls["again"]; len(c) != 1 || !strings.HasSuffix(c[0], ` chat {"text":"hi there"} alice`) {
				t.Fatalf("rerun calls for again: %q, want one with route, data and user", c)
			}
			if c := calls["plain"]; len(c) != 0 {
				t.Fatalf("a request without retry data was run again: %q", c)
			}
			if countPrefix(ob.got(), `{"type":"restart","id":"again"}`) != 1 {
				t.Fatalf("restart notice not delivered once: %q", ob.got())
			}
		})
	}
}

// TestNodeLossIDReused: a request id that ends and is sent again at once
// on the same node: the batched removal of the first run's entry must not
// remove the second's, which is still found (and ended) after a crash.
func TestNodeLossIDReused(t *testing.T) {
	for _, b := range nodeLossBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			a := b.openManager(t, "A", nodeLossLimits)
			bb := b.openManager(t, "B", nodeLossLimits)
			raw := rawRedis(t, b)
			o := &fakeOutlet{}
			id, _ := attach(t, a, "alice", "", o)
			first := a.BeginRoute(id, "same", "stream", nil)
			waitRecorded(t, a, map[string][]string{id: {"same"}})
			first.End(resultMsg("same"))
			a.BeginRoute(id, "same", "stream", nil)
			waitRecorded(t, a, map[string][]string{id: {"same"}})
			eventually(t, 5*time.Second, "ended runs flushed", func() bool {
				a.nl.mu.Lock()
				defer a.nl.mu.Unlock()
				return len(a.nl.ended) == 0 && len(a.nl.queue) == 0
			})
			last := o.acked()
			a.Detach(id, o, last)
			crash(a)
			ob := &fakeOutlet{}
			attachAfter(t, bb, id, last, ob)
			lapse(t, raw, b, "A")
			bb.SweepForTest(t.Context())
			eventually(t, 5*time.Second, "node_lost of the second run", func() bool {
				return terminals(t, ob.got())["same"] != nil
			})
			if c := terminals(t, ob.got())["same"]; len(c) != 1 || c[0] != CodeNodeLost {
				t.Fatalf("second run: %v, want one node_lost", c)
			}
		})
	}
}

// FuzzParseRunRecord: whatever a client puts in a request id, a route
// name or a request's data, an inflight entry reads back as written; and
// any stored pair either parses or is refused, never panics.
func FuzzParseRunRecord(f *testing.F) {
	f.Add("s_abc", uint64(1), "r1", "A-1-x/0a", "chat", []byte(`{"q":"a b"}`), "s_x 1 r", "A/ab 1 r")
	f.Add("s_abc", uint64(2), "id with spaces", "A/0", "my route/%", []byte(nil), "", "")
	f.Add("s_", uint64(0), " ", "t", "", []byte(` `), "s_x 1", "t x")
	f.Fuzz(func(t *testing.T, sid string, seq uint64, req, token, route string, data []byte, field, value string) {
		_, _ = parseRunRecord(field, value)
		if sid == "" || strings.ContainsRune(sid, ' ') || req == "" || token == "" || strings.ContainsRune(token, ' ') {
			return // not shapes the daemon writes: ids are checked, tokens made here
		}
		got, ok := parseRunRecord(runField(sid, seq, req), runValue(token, time.UnixMilli(42), route, data))
		if !ok {
			t.Fatalf("entry of (%q, %q, %q, %q, %q) does not parse", sid, req, token, route, data)
		}
		if got.SID != sid || got.Req != req || got.Token != token || got.Route != route ||
			(data == nil) != (got.Data == nil) || string(got.Data) != string(data) || got.Started.UnixMilli() != 42 {
			t.Fatalf("read back %+v, wrote sid %q req %q token %q route %q data %q", got, sid, req, token, route, data)
		}
	})
}
