package main

import (
	"testing"
)

// Ports of this package's Redis Cluster (34300-34399) and Sentinel setup
// (34400-34499); the sessions package uses 34100-34299.
const (
	clusterE2EPorts  = 34300
	sentinelE2EPorts = 34400
)

// requireNATS skips (or, with CI=true, fails) when NATS is not at
// 127.0.0.1:4222.
func requireNATS(t *testing.T) {
	t.Helper()
	requireServer(t, "nats", "127.0.0.1:4222")
}
