package netpoll

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNodeClient runs a real third-party client (node with the npm package
// ws) against an echo engine: echo, ping/pong and a clean 1000 close. With
// CI=true a missing node or npm is a failure, not a skip.
func TestNodeClient(t *testing.T) {
	node, errNode := exec.LookPath("node")
	npm, errNpm := exec.LookPath("npm")
	if errNode != nil || errNpm != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("node/npm not found (CI=true): %v %v", errNode, errNpm)
		}
		t.Skip("node or npm not installed")
	}
	dir, err := filepath.Abs(filepath.Join("..", "testdata", "node"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "ws")); err != nil {
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--prefix", dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci: %v\n%s", err, out)
		}
	}
	h := newEchoHandler()
	_, addr := startEngine(t, Config{}, h, acceptAll{}, nil)
	cmd := exec.CommandContext(ctx, node, filepath.Join(dir, "client.js"), "ws://"+addr+"/ws")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node client: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "OK echo ping close") {
		t.Fatalf("node client output %q", out)
	}
	ev := h.waitClose(t)
	if ev.code != CloseNormal || ev.err != nil {
		t.Fatalf("OnClose = %d %v, want 1000 nil", ev.code, ev.err)
	}
}
