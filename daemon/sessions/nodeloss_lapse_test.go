package sessions

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// TestNodeLossSweepTimedAtLapse: a survivor's sweep is due when the key of
// a node that stopped refreshing it lapses, not up to a sweep period
// later. A crashes with a run; its key is left 1 s (node_loss_after is a
// minute here: the sweep period is 6 s). B's sweep finds the key still
// set and says the next sweep is due in at most 1 s; that sweep ends the
// run with node_lost.
func TestNodeLossSweepTimedAtLapse(t *testing.T) {
	for _, b := range nodeLossBackends(t) {
		if b.advance != nil {
			continue // miniredis expires keys only when its clock is moved
		}
		t.Run(b.name, func(t *testing.T) {
			a := b.openManager(t, "A", nodeLossLimits)
			bb := b.openManager(t, "B", nodeLossLimits)
			raw := rawRedis(t, b)
			o := &fakeOutlet{}
			id, _ := attach(t, a, "alice", "", o)
			a.Detach(id, o, 0)
			if !a.BeginRoute(id, "x", "stream", nil).Recorded(t.Context()) {
				t.Fatal("not recorded")
			}
			crash(a)
			// Long enough that the sweep below runs before it lapses, even
			// on a loaded machine.
			const left = time.Second
			if err := raw.Do(t.Context(), raw.B().Pexpire().Key(b.prefix+"{node:A}:alive").Milliseconds(left.Milliseconds()).Build()).Error(); err != nil {
				t.Fatal(err)
			}
			next := bb.nl.sweepOnce(t.Context())
			if next > left+lapseSlack || next >= bb.nl.sweep {
				t.Fatalf("next sweep due in %v, want at most %v (A's key lapses then; the period is %v)", next, left+lapseSlack, bb.nl.sweep)
			}
			if got := logTerminals(t, bb, id)["x"]; len(got) != 0 {
				t.Fatalf("x ended %v while A's key was set", got)
			}
			time.Sleep(next) // the sweeper's timer, as the sweeper waits it
			bb.nl.sweepOnce(t.Context())
			if got := logTerminals(t, bb, id)["x"]; len(got) != 1 || got[0] != CodeNodeLost {
				t.Fatalf("x after the sweep due at the lapse: %v, want one node_lost", got)
			}
		})
	}
}

// TestNodeLossLapsedSurvivor: A crashes with runs while survivor B is so
// loaded that its own liveness has lapsed; survivor C is fine. B and C
// sweep A at the same moment, and C also takes B's own run (B looks dead
// to it); B then ends that run normally. Every run ends with exactly one
// terminal: each of A's one node_lost, by B or C; B's run C's node_lost,
// B's late result dropped.
func TestNodeLossLapsedSurvivor(t *testing.T) {
	for _, b := range nodeLossBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			// An hour: no refresh of B's key comes between its lapse
			// below and the sweeps.
			lim := nodeLossLimits
			lim.NodeLossAfter = config.Duration(time.Hour)
			a := b.openManager(t, "A", lim)
			bb := b.openManager(t, "B", lim)
			cc := b.openManager(t, "C", lim)
			raw := rawRedis(t, b)
			const sessionsN, perSession = 20, 4
			ids := detachedWithRuns(t, a, sessionsN, perSession)
			ob := &fakeOutlet{}
			own, _ := attach(t, bb, "alice", "", ob)
			sb := bb.BeginRoute(own, "b1", "stream", nil)
			if !sb.Recorded(t.Context()) {
				t.Fatal("not recorded")
			}
			crash(a)
			lapse(t, raw, b, "A")
			lapse(t, raw, b, "B") // B is alive, but its key lapsed
			var wg sync.WaitGroup
			for _, m := range []*Manager{bb, cc} {
				wg.Add(1)
				go func() { defer wg.Done(); m.SweepForTest(t.Context()) }()
			}
			wg.Wait()
			sb.End(resultMsg("b1"))
			for i, id := range ids {
				logged := logTerminals(t, cc, id)
				for j := range perSession {
					req := fmt.Sprintf("r%d", j)
					if c := logged[req]; len(c) != 1 || c[0] != CodeNodeLost {
						t.Fatalf("session %d request %s: logged %v, want exactly one node_lost", i, req, c)
					}
				}
			}
			if c := logTerminals(t, cc, own)["b1"]; len(c) != 1 || c[0] != CodeNodeLost {
				t.Fatalf("B's own run: logged %v, want exactly one node_lost (C took it; B's late result dropped)", c)
			}
			if c := terminals(t, ob.got())["b1"]; len(c) != 1 || c[0] != CodeNodeLost {
				t.Fatalf("B's own run: delivered %v, want exactly one node_lost", c)
			}
		})
	}
}
