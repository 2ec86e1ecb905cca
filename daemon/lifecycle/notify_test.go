package lifecycle

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notifySocket listens like systemd does on NOTIFY_SOCKET and returns a
// function reading the next message within a deadline.
func notifySocket(t *testing.T) (path string, next func() string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", path, err)
	}
	t.Cleanup(func() { c.Close() })
	buf := make([]byte, 4096)
	return path, func() string {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read notify socket: %v", err)
		}
		return string(buf[:n])
	}
}

func TestNotifierMessages(t *testing.T) {
	path, next := notifySocket(t)
	log, _ := testLogger(t)
	n := NewNotifier(path, log)
	n.Ready()
	n.Status("serving: 3 connections\nsecond line")
	n.Watchdog()
	n.Reloading()
	n.ExtendTimeout(40 * time.Second)
	n.Stopping()
	want := []string{"READY=1", "STATUS=serving: 3 connections second line", "WATCHDOG=1", "RELOADING=1\nMONOTONIC_USEC=",
		"EXTEND_TIMEOUT_USEC=40000000", "STOPPING=1"}
	for _, w := range want {
		got := next()
		if strings.HasSuffix(w, "=") {
			if !strings.HasPrefix(got, w) || len(got) == len(w) {
				t.Errorf("got %q, want %q followed by a number", got, w)
			}
			continue
		}
		if got != w {
			t.Errorf("got %q, want %q", got, w)
		}
	}
}

func TestNotifierDisabled(t *testing.T) {
	log, logs := testLogger(t)
	var nilNotifier *Notifier
	for _, n := range []*Notifier{nilNotifier, NewNotifier("", log)} {
		if n.Enabled() {
			t.Errorf("Enabled() = true, want false")
		}
		n.Ready() // must not panic nor log
		n.Stopping()
	}
	// A socket that is gone is logged once, not per message.
	n := NewNotifier(filepath.Join(t.TempDir(), "missing.sock"), log)
	n.Watchdog()
	n.Watchdog()
	if c := strings.Count(logs.String(), "sd_notify failed"); c != 1 {
		t.Errorf("got %d \"sd_notify failed\" lines, want 1", c)
	}
}

// TestRunNotifySequence drives Run against a real notify socket: READY=1,
// STATUS=, WATCHDOG=1 and, after SIGTERM, STOPPING=1, in that order.
func TestRunNotifySequence(t *testing.T) {
	path, next := notifySocket(t)
	log, _ := testLogger(t)
	sigs := make(chan os.Signal, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(context.Background(), Options{
			Notifier:         NewNotifier(path, log),
			Timing:           Timing{LBGrace: 10 * time.Millisecond, Timeout: time.Second},
			Steps:            runSteps(newRecorder()),
			Status:           func() string { return "serving: 0 connections" },
			StatusInterval:   time.Hour,
			Alive:            func() error { return nil },
			WatchdogInterval: 20 * time.Millisecond,
			Signals:          sigs,
		}, log)
	}()
	for _, want := range []string{"READY=1", "STATUS=serving: 0 connections", "WATCHDOG=1"} {
		if got := next(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	sigs <- syscall.SIGTERM
	// Watchdog pings may still arrive before the drain starts.
	for {
		got := next()
		if got == "WATCHDOG=1" {
			continue
		}
		if got != "STOPPING=1" {
			t.Fatalf("after SIGTERM: got %q, want STOPPING=1", got)
		}
		break
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the drain")
	}
}
