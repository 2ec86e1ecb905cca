package redistest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// MasterSet is the Sentinel master set name of the test setups.
const MasterSet = "orchmaster"

// Sentinel is one master, one replica and three Sentinels watching them
// (quorum 2, down-after 1 s).
type Sentinel struct {
	Master, Replica *Server
	Sentinels       []*Server
	dir             string
}

// StartSentinel starts the setup on free ports from base (5 ports within
// base..base+99) and waits until the Sentinels see the replica and each
// other. Close removes it.
func StartSentinel(base int) (*Sentinel, error) {
	return startOver(func() (*Sentinel, error) { return startSentinel(base) })
}

func startSentinel(base int) (_ *Sentinel, err error) {
	dir, ports, err := prepare("redis-sentinel-", base, 5)
	if err != nil {
		return nil, err
	}
	s := &Sentinel{dir: dir}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	p0 := ports[0]
	if s.Master, err = start(dir, p0); err != nil {
		return nil, err
	}
	if s.Replica, err = start(dir, ports[1], "--replicaof", "127.0.0.1", strconv.Itoa(p0)); err != nil {
		return nil, err
	}
	for i := range 3 {
		port := ports[2+i]
		conf := filepath.Join(dir, fmt.Sprintf("sentinel-%d.conf", port))
		body := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 2\nsentinel down-after-milliseconds %[1]s 1000\nsentinel failover-timeout %[1]s 5000\nsentinel parallel-syncs %[1]s 1\n", MasterSet, p0)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			return nil, err
		}
		sn, err := start(dir, port, conf, "--sentinel")
		if err != nil {
			return nil, err
		}
		s.Sentinels = append(s.Sentinels, sn)
	}
	err = waitFor(20*time.Second, "sentinels to see the replica and each other", func() bool {
		if s.Replica.info("replication")["master_link_status"] != "up" {
			return false
		}
		for _, sn := range s.Sentinels {
			out, err := sn.Cli("SENTINEL", "MASTER", MasterSet)
			if err != nil {
				return false
			}
			f := strings.Split(out, "\n")
			kv := map[string]string{}
			for i := 0; i+1 < len(f); i += 2 {
				kv[f[i]] = f[i+1]
			}
			if kv["num-slaves"] != "1" || kv["num-other-sentinels"] != "2" {
				return false
			}
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// StartSentinelT is StartSentinel for one test: skipped (failed under
// CI=true) without redis-server, closed at the end of the test.
func StartSentinelT(t testing.TB, base int) *Sentinel {
	t.Helper()
	return startT(t, "redis sentinel setup", func() (*Sentinel, error) { return StartSentinel(base) })
}

// URL is the sessions.redis_url: the Sentinels' addresses and the master
// set.
func (s *Sentinel) URL() string {
	u := "redis://" + s.Sentinels[0].Addr + "?"
	for _, sn := range s.Sentinels[1:] {
		u += "addr=" + sn.Addr + "&"
	}
	return u + "master_set=" + MasterSet
}

// MasterAddr asks a live Sentinel for the current master's address.
func (s *Sentinel) MasterAddr() (string, error) {
	var lastErr error
	for _, sn := range s.Sentinels {
		out, err := sn.Cli("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MasterSet)
		if err != nil {
			lastErr = err
			continue
		}
		f := strings.Fields(out)
		if len(f) == 2 {
			return f[0] + ":" + f[1], nil
		}
	}
	return "", fmt.Errorf("no sentinel knows the master: %v", lastErr)
}

// WaitSynced waits until the replica has acknowledged everything the
// master wrote, so that a kill of the master loses nothing the store was
// told (see Server.WaitReplicasSynced).
func (s *Sentinel) WaitSynced(timeout time.Duration) error {
	return s.Master.WaitReplicasSynced(timeout)
}

// Close kills every process and removes the directory.
func (s *Sentinel) Close() {
	for _, sv := range append([]*Server{s.Master, s.Replica}, s.Sentinels...) {
		if sv != nil {
			sv.Kill()
		}
	}
	os.RemoveAll(s.dir)
}
