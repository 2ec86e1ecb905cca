package redistest

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Cluster is a Redis Cluster of 3 masters with one replica each.
type Cluster struct {
	Servers []*Server
	dir     string
}

// NodeTimeout is the cluster-node-timeout of the test clusters: a master
// silent this long is failed over to its replica.
const NodeTimeout = 1000 * time.Millisecond

// StartCluster starts 6 cluster-enabled servers on free ports of
// base..base+99 (their cluster bus ports too), joins them with `redis-cli --cluster create
// --cluster-replicas 1`, and waits until every slot is served and every
// replica is in sync. Close removes it.
func StartCluster(base int) (*Cluster, error) {
	return startOver(func() (*Cluster, error) { return startCluster(base) })
}

func startCluster(base int) (_ *Cluster, err error) {
	dir, ports, err := prepare("redis-cluster-", base, 12)
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	addrs := make([]string, 6)
	for i := range 6 {
		p := ports[i]
		s, err := start(dir, p, "--cluster-enabled", "yes", "--cluster-config-file", fmt.Sprintf("%s/nodes-%d.conf", dir, p),
			"--cluster-node-timeout", strconv.Itoa(int(NodeTimeout.Milliseconds())), "--cluster-port", strconv.Itoa(ports[6+i]),
			"--cluster-replica-validity-factor", "0", "--cluster-require-full-coverage", "yes")
		if err != nil {
			return nil, err
		}
		c.Servers = append(c.Servers, s)
		addrs[i] = s.Addr
	}
	out, err := exec.Command("redis-cli", append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "1", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("redis-cli --cluster create: %w\n%s", err, out)
	}
	if err := c.WaitHealthy(20 * time.Second); err != nil {
		return nil, err
	}
	return c, nil
}

// StartClusterT is StartCluster for one test: skipped (failed under
// CI=true) without redis-server, closed at the end of the test.
func StartClusterT(t testing.TB, base int) *Cluster {
	t.Helper()
	return startT(t, "redis cluster", func() (*Cluster, error) { return StartCluster(base) })
}

// URL is the sessions.redis_url of the cluster: the first live server,
// the others as addr= seeds.
func (c *Cluster) URL() string {
	var seeds []string
	for _, s := range c.Servers {
		seeds = append(seeds, s.Addr)
	}
	u := "redis://" + seeds[0]
	for i, a := range seeds[1:] {
		if i == 0 {
			u += "?addr=" + a
		} else {
			u += "&addr=" + a
		}
	}
	return u
}

// Masters returns the live servers that are masters now.
func (c *Cluster) Masters() []*Server {
	var m []*Server
	for _, s := range c.Servers {
		if s.Alive() && s.Role() == "master" {
			m = append(m, s)
		}
	}
	return m
}

// MasterOf returns the live master serving key's slot.
func (c *Cluster) MasterOf(key string) (*Server, error) {
	for _, s := range c.Servers {
		if !s.Alive() {
			continue
		}
		slot, err := s.Cli("CLUSTER", "KEYSLOT", key)
		if err != nil {
			continue
		}
		n, _ := strconv.Atoi(slot)
		for _, m := range c.Masters() {
			if owns(m, n) {
				return m, nil
			}
		}
	}
	return nil, fmt.Errorf("no live master serves the slot of %q", key)
}

// owns reports whether master m serves slot n (CLUSTER NODES "myself").
func owns(m *Server, n int) bool {
	out, err := m.Cli("CLUSTER", "NODES")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.Contains(f[2], "myself") {
			continue
		}
		for _, r := range f[8:] {
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 == nil && err2 == nil && n >= a && n <= b {
				return true
			}
		}
	}
	return false
}

// WaitHealthy waits until every live server reports cluster_state:ok,
// three masters serve the slots, and every live replica's link is up.
func (c *Cluster) WaitHealthy(timeout time.Duration) error {
	return waitFor(timeout, "a healthy cluster", func() bool {
		masters := 0
		for _, s := range c.Servers {
			if !s.Alive() {
				continue
			}
			if s.info("cluster")["cluster_state"] != "ok" {
				return false
			}
			r := s.info("replication")
			switch r["role"] {
			case "master":
				masters++
			case "slave":
				if r["master_link_status"] != "up" {
					return false
				}
			default:
				return false
			}
		}
		return masters == 3
	})
}

// Close kills every server and removes the directory.
func (c *Cluster) Close() {
	for _, s := range c.Servers {
		s.Kill()
	}
	os.RemoveAll(c.dir)
}
