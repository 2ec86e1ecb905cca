package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/backends"
	"github.com/orchestratord/orchestratord/daemon/config"
)

// TestRetireWaitsForCalls: a backend set replaced by a reload stays open
// while one of its calls runs, and is closed (dropped from the retired
// list) once the call ends; at exit closeSets closes what is left.
func TestRetireWaitsForCalls(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := map[string]config.Backend{"slow": {Kind: config.KindEcho, Delay: config.Duration(400 * time.Millisecond), MaxConcurrent: 4}}
	old, err := backends.New(cfg, func(string) (string, bool) { return "", false }, log)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := backends.New(cfg, func(string) (string, bool) { return "", false }, log)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{set: cur, stop: make(chan struct{})}
	pool, _ := old.Pool("slow")
	done := make(chan error, 1)
	go func() {
		_, err := pool.Call(context.Background(), &backends.Request{ID: "1", Data: json.RawMessage(`1`)}, func(json.RawMessage) {})
		done <- err
	}()
	waitUntil(t, 2*time.Second, func() bool { return setInFlight(old) == 1 })
	n.retire(old, 10*time.Second)
	if got := n.retiredSets(); got != 1 {
		t.Fatalf("retired sets while a call runs = %d, want 1", got)
	}
	if err := <-done; err != nil {
		t.Fatalf("the call on the retired set failed: %v", err)
	}
	waitUntil(t, 2*time.Second, func() bool { return n.retiredSets() == 0 })

	// A retired set with a call still running is closed by closeSets at
	// exit, without waiting for its (long) bound.
	curPool, _ := cur.Pool("slow")
	go func() {
		_, _ = curPool.Call(context.Background(), &backends.Request{ID: "2"}, func(json.RawMessage) {})
	}()
	waitUntil(t, 2*time.Second, func() bool { return setInFlight(cur) == 1 })
	n.retire(cur, time.Hour)
	n.set = old
	start := time.Now()
	n.closeSets()
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("closeSets waited %s for a retirer", el)
	}
	if got := n.retiredSets(); got != 0 {
		t.Fatalf("retired sets after closeSets = %d, want 0", got)
	}
}
