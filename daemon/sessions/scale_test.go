package sessions

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/internal/redistest"
)

// TestClusterShardedBus: on a Redis 7 Cluster the bus subscribes with
// SSUBSCRIBE to a channel tagged {node:<name>}: one shard (the owner of
// that slot) holds the subscription, and no classic subscription exists.
func TestClusterShardedBus(t *testing.T) {
	c := testCluster(t)
	if c == nil {
		t.Skip("no redis-server: see testCluster")
	}
	b := backend{name: "cluster", redis: true, url: c.URL(), prefix: randomPrefix()}
	m := b.openManager(t, "shard-A", testLimits)
	rt, ok := m.bus.t.(*redisTransport)
	if !ok || !rt.sharded {
		t.Fatalf("bus transport %T sharded=%v, want sharded redis pub/sub", m.bus.t, ok && rt.sharded)
	}
	ch := rt.channel("shard-A")
	if want := b.prefix + "{node:shard-A}"; ch != want {
		t.Fatalf("channel %q, want %q", ch, want)
	}
	owner, err := c.MasterOf(ch)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range c.Masters() {
		out, err := s.Cli("PUBSUB", "SHARDNUMSUB", ch)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("%s\n0", ch)
		if s == owner {
			want = fmt.Sprintf("%s\n1", ch)
		}
		if out != want {
			t.Errorf("SHARDNUMSUB on %s (owner %v): %q, want %q", s.Addr, s == owner, out, want)
		}
		if out, _ := s.Cli("PUBSUB", "NUMSUB", ch); out != ch+"\n0" {
			t.Errorf("classic subscription on %s: %q", s.Addr, out)
		}
	}
	if !busReaches(t, m, "shard-A") {
		t.Fatal("SPUBLISH to the node's own channel not received")
	}
}

// TestSentinelFailoverNoLostSession: a Manager on Sentinel (1 master, 1
// replica, 3 Sentinels) creates sessions; once the replica has them, the
// master is killed: the Manager follows the promoted replica by itself
// and every session resumes.
func TestSentinelFailoverNoLostSession(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Redis servers")
	}
	s := redistest.StartSentinelT(t, sentinelPorts)
	b := backend{name: "sentinel", redis: true, url: s.URL(), prefix: randomPrefix()}
	m := b.openManager(t, "sent-A", testLimits)
	const n = 50
	ids := make([]string, n)
	for i := range ids {
		ids[i], _ = attach(t, m, "alice", "", &fakeOutlet{})
	}
	if err := s.WaitSynced(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	s.Master.Kill()
	killed := time.Now()
	var readyAgain time.Duration
	eventually(t, 30*time.Second, "manager ready on the new master", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		if _, err := m.Store().Create(ctx, "probe"); err != nil {
			return false
		}
		readyAgain = time.Since(killed)
		return m.Ready(ctx) == nil
	})
	// The Sentinels agree on the promoted replica (the one asked first may
	// learn of the failover from the leader a moment later).
	eventually(t, 10*time.Second, "sentinels name the replica as master", func() bool {
		a, err := s.MasterAddr()
		return err == nil && a == s.Replica.Addr
	})
	for i, id := range ids {
		got, resumed := attach(t, m, "alice", id, &fakeOutlet{})
		if got != id || !resumed {
			t.Fatalf("session %d %s after the failover: got %s resumed=%v", i, id, got, resumed)
		}
	}
	t.Logf("sentinel failover: store writable again %v after the master was killed; %d/%d sessions resumed", readyAgain.Round(time.Millisecond), n, n)
}
