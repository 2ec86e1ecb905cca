package redistest

import (
	"testing"
	"time"
)

// TestClusterFailover: the helper's cluster serves every slot, and when a
// master is killed its replica takes over.
func TestClusterFailover(t *testing.T) {
	c := StartClusterT(t, 34600)
	m, err := c.MasterOf("{x}")
	if err != nil {
		t.Fatal(err)
	}
	m.Kill()
	start := time.Now()
	if err := c.WaitHealthy(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	if n := len(c.Masters()); n != 3 {
		t.Fatalf("%d masters after the failover, want 3", n)
	}
	t.Logf("replica promoted %v after the kill", time.Since(start).Round(time.Millisecond))
}

// TestSentinelFailover: the Sentinels promote the replica when the master
// is killed.
func TestSentinelFailover(t *testing.T) {
	s := StartSentinelT(t, 34700)
	before, err := s.MasterAddr()
	if err != nil || before != s.Master.Addr {
		t.Fatalf("master %q (%v), want %s", before, err, s.Master.Addr)
	}
	s.Master.Kill()
	if err := waitFor(20*time.Second, "promotion", func() bool {
		a, err := s.MasterAddr()
		return err == nil && a == s.Replica.Addr && s.Replica.Role() == "master"
	}); err != nil {
		t.Fatal(err)
	}
}
