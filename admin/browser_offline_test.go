package admin

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/internal/browsertest"
)

// serveOn runs s on addr ("127.0.0.1:0" for any port) until stop is
// called; it returns the address.
func serveOn(t *testing.T, s *Server, addr string) (string, func()) {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the previous server's port may linger a moment
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// TestBrowserDisconnected: the page shows a human flash for a failed
// action; when the daemon goes away it shows the disconnected banner,
// greys the stale values and disables the actions; when a daemon answers
// again it goes back to live. UPDATE_SCREENSHOTS=1 rewrites
// docs/img/admin-disconnected.png.
func TestBrowserDisconnected(t *testing.T) {
	ctx := browsertest.Start(t, browsertest.Options{Width: 1366, Height: 900, Timeout: 90 * time.Second}).Ctx
	f := newFixture(3)
	f.detached.set(DetachedRow{ID: "s_away", User: "zoe", Since: time.Now().Add(-time.Minute), Owed: 2, OwedBytes: 512})
	s, err := New(config.Admin{User: "admin", MetricsPublic: true}, "127.0.0.1:0", f.deps(), nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	s.interval = 250 * time.Millisecond
	addr, stop := serveOn(t, s, "127.0.0.1:0")

	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v; page state: %s", what, err, pageState(ctx))
		}
	}
	run("open page", chromedp.Navigate("http://"+addr+"/"), chromedp.WaitVisible(chromedp.CSS(`#live.on`)))
	run("detached row", chromedp.WaitVisible(chromedp.CSS(`tr[data-detached="s_away"]`)))
	if v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#version`))); err != nil || v != "1.4.2-test" {
		t.Errorf("version shown %q (%v), want 1.4.2-test", v, err)
	}

	// A failed action reads as a sentence, not a code.
	f.sessions.mu.Lock()
	f.sessions.kickErr = fmt.Errorf("kick: %w", ErrNotFound)
	f.sessions.mu.Unlock()
	id := f.sessions.rows[0].ID
	run("kick a session that is gone", chromedp.Click(chromedp.CSS(`button[data-action="kick"][data-id="`+id+`"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm`)), chromedp.Click(chromedp.CSS(`#confirm-ok`)),
		chromedp.WaitVisible(chromedp.CSS(`#flash.bad`)))
	flash, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#flash`)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(flash, "Session "+id+" is not connected to this node any more") || strings.Contains(flash, "not_found") {
		t.Errorf("flash %q: want a sentence naming the session, no raw code", flash)
	}

	// The daemon goes away.
	stop()
	run("disconnected banner", chromedp.WaitVisible(chromedp.CSS(`#offline`)),
		chromedp.WaitVisible(chromedp.CSS(`body.stale`)),
		chromedp.WaitVisible(chromedp.CSS(`#drain:disabled`)),
		chromedp.WaitVisible(chromedp.CSS(`button[data-action="reset"]:disabled`)))
	state, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({live: document.getElementById("live").textContent,
		banner: document.getElementById("offline").textContent.replace(/\s+/g, " ").trim(),
		opacity: getComputedStyle(document.querySelector(".stats")).opacity})`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(state, `"live":"disconnected"`) || !strings.Contains(state, "Disconnected.") || !strings.Contains(state, "may be out of date") ||
		strings.Contains(state, `"opacity":"1"`) {
		t.Errorf("disconnected page state %s: want live=disconnected, the banner, greyed stats", state)
	}

	if os.Getenv("UPDATE_SCREENSHOTS") == "1" {
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		path := filepath.Join("..", "docs", "img", "admin-disconnected.png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// A daemon answers again on the same address: live again.
	s2, err := New(config.Admin{User: "admin", MetricsPublic: true}, "127.0.0.1:0", f.deps(), nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	s2.interval = 250 * time.Millisecond
	serveOn(t, s2, addr)
	run("live again", chromedp.WaitVisible(chromedp.CSS(`#live.on`)), chromedp.WaitNotVisible(chromedp.CSS(`#offline`)),
		chromedp.WaitNotPresent(chromedp.CSS(`body.stale`)), chromedp.WaitVisible(chromedp.CSS(`button[data-action="reset"]:enabled`)))
}
