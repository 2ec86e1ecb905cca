package sessions

import (
	"context"

	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/internal/redistest"
)

// realNATS is the NATS server the workspace runs; with CI=true it must be
// there.
const realNATS = "127.0.0.1:4222"

// Ports of this package's Redis servers, each range 100 wide: the Cluster
// (34100-34199), the Sentinel setup (34200-34299), the ACL test's server
// (34500-34599), the benchmarks' servers (34600-34899). The daemon's
// end-to-end tests use 34300-34499.
const (
	clusterPorts  = 34100
	sentinelPorts = 34200
	aclPorts      = 34500
	benchPorts    = 34600
)

// cluster is the Redis Cluster the package's tests share: started by the
// first test that asks, stopped by TestMain.
var cluster struct {
	once sync.Once
	c    *redistest.Cluster
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if cluster.c != nil {
		cluster.c.Close()
	}
	os.Exit(code)
}

// testCluster returns the shared cluster, nil (logged) when redis-server
// is not installed; a failure under CI=true. -short leaves it out.
func testCluster(t testing.TB) *redistest.Cluster {
	t.Helper()
	if testing.Short() {
		return nil
	}
	if err := redistest.Require(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: %v", err)
		}
		t.Logf("no Redis Cluster: %v", err)
		return nil
	}
	cluster.once.Do(func() { cluster.c, cluster.err = redistest.StartCluster(clusterPorts) })
	if cluster.err != nil {
		t.Fatalf("start redis cluster: %v", cluster.err)
	}
	return cluster.c
}

// haveNATS reports whether NATS answers at realNATS (a failure under
// CI=true when it does not).
func haveNATS(t testing.TB) bool {
	t.Helper()
	c, err := net.DialTimeout("tcp", realNATS, time.Second)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and no NATS at %s: %v", realNATS, err)
		}
		t.Logf("no NATS at %s: not testing the nats bus", realNATS)
		return false
	}
	c.Close()
	return true
}

// busReaches reports whether a bus message from m to node is received now
// (a no-op: an ack of nonce 0, which no attach waits for).
func busReaches(t testing.TB, m *Manager, node string) bool {
	t.Helper()
	msg, err := encodeBus(busMsg{T: busAck}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r := m.bus.t.send(ctx, []busOut{{node: node, msg: msg}})[0]
	return r.err == nil && r.received
}
