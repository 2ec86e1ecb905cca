package main

import (
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLifecycleE2E builds the daemon once and runs the lifecycle scenarios
// against it as a subprocess: sd_notify, drain (answers on the socket, and
// in the session outbox past the timeout), reload, socket activation, a
// restart behind held sockets, nginx (docs/nginx) in front of two
// replicas during a drain, and the client addresses nginx reports
// (X-Forwarded-For, and the PROXY protocol through nginx stream).
func TestLifecycleE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs the binary")
	}
	e := &e2e{bin: buildDaemon(t, t.TempDir())}
	t.Run("notify", e.testNotify)
	t.Run("drain", e.testDrain)
	t.Run("drain_timeout_outbox_redis", e.testDrainTimeoutOutbox)
	t.Run("reload", e.testReload)
	t.Run("socket_activate", e.testSocketActivate)
	t.Run("restart_behind_held_sockets", e.testRestartHeldSockets)
	t.Run("nginx_drain", e.testNginxDrain)
	t.Run("nginx_client_address", e.testNginxClientAddress)
	t.Run("nginx_stream_proxy_protocol", e.testNginxStreamProxyProtocol)
}

// testNotify: with NOTIFY_SOCKET and WATCHDOG_USEC=500000 the daemon sends
// READY=1, STATUS=..., WATCHDOG=1 and, after SIGTERM, STOPPING=1, in this
// order, then exits 0.
func (e *e2e) testNotify(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	next := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := nc.Read(buf)
		if err != nil {
			t.Fatalf("read notify socket: %v", err)
		}
		return string(buf[:n])
	}

	client, admin := freePort(t), freePort(t)
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, configYAML(client, admin, 100*time.Millisecond, 2*time.Second, `backends:
  echo: {kind: echo}
routes:
  echo: {backend: echo}
`))
	p := e.startDaemon(t, cfg, client, admin, "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=500000")

	if got := next(); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	// READY=1 comes after the listeners are up.
	if c := status(client, "/healthz"); c != 200 {
		t.Errorf("after READY=1: client /healthz = %d, want 200", c)
	}
	if got := next(); !strings.HasPrefix(got, "STATUS=") || len(got) == len("STATUS=") {
		t.Fatalf("second notification %q, want STATUS=<text>", got)
	}
	start := time.Now()
	if got := next(); got != "WATCHDOG=1" {
		t.Fatalf("third notification %q, want WATCHDOG=1", got)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("first WATCHDOG=1 after %s, want about WATCHDOG_USEC/2 (250ms)", d)
	}
	p.signal(syscall.SIGTERM)
	var got []string
	for {
		m := next()
		if m == "WATCHDOG=1" || strings.HasPrefix(m, "STATUS=") {
			continue // pings and the status loop go on until the drain ends
		}
		got = append(got, m)
		if m == "STOPPING=1" || len(got) > 3 {
			break
		}
	}
	if got[len(got)-1] != "STOPPING=1" {
		t.Fatalf("after SIGTERM got %q, want STOPPING=1", got)
	}
	if code := p.exitCode(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}
