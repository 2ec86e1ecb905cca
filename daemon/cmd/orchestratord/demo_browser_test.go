package main

import (
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/orchestratord/orchestratord/internal/browsertest"
)

// demoYAML is the demo setup (anonymous, demo page) on test ports.
const demoYAML = `
node: demo
ws:
  demo_page: true
auth:
  anonymous: true
backends:
  echo: {kind: echo}
  words: {kind: echo, stream: words, delay: 100ms}
routes:
  echo: {backend: echo}
  stream: {backend: words, timeout: 60s}
drain:
  lb_grace: 50ms
  timeout: 2s
`

// TestDemoPageInBrowser drives the demo chat page in headless Chromium
// against the real daemon: type a message, see its echo; an operator closes
// the session from the admin API (1008): the page stops (no reconnect loop)
// and says so; a click on the status reconnects and resumes the same
// session. UPDATE_SCREENSHOTS=1 rewrites docs/img/demo-live.png.
func TestDemoPageInBrowser(t *testing.T) {
	browsertest.Require(t)
	s := startStack(t, demoYAML)
	b := browser(t)
	ctx, run := b.Ctx, b.Run

	run("open page", chromedp.Navigate("http://"+s.addr+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#status[data-state="open"]`)))
	session, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#session`)))
	if err != nil || !strings.HasPrefix(session, "s_") {
		t.Fatalf("session shown = %q, %v", session, err)
	}
	run("send", chromedp.SendKeys(chromedp.CSS(`#msg`), "hello from chromium"), chromedp.Click(chromedp.CSS(`#send`)),
		chromedp.Poll[chromedp.Void](`[...document.querySelectorAll("#log li.bot:not(.pending)")].some(li => li.textContent.includes("hello from chromium"))`))

	// An operator closes the session (1008): the page stops; a click on the
	// status reconnects and resumes it.
	kick(t, s.admin, session)
	run("stopped", chromedp.WaitVisible(chromedp.CSS(`#status[data-state="closed"]`)))
	if txt, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#status`))); err != nil || !strings.Contains(txt, "policy_violation") {
		t.Fatalf("status after the operator's close = %q, %v; want it to say policy_violation", txt, err)
	}
	run("reconnected", chromedp.Click(chromedp.CSS(`#status`)), chromedp.WaitVisible(chromedp.CSS(`#status[data-state="open"]`)))
	again, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#session`)))
	if err != nil || again != session {
		t.Fatalf("after the drop the page shows session %q, want the resumed %q (%v)", again, session, err)
	}
	run("send again", chromedp.SendKeys(chromedp.CSS(`#msg`), "still here"), chromedp.Click(chromedp.CSS(`#send`)),
		chromedp.Poll[chromedp.Void](`[...document.querySelectorAll("#log li.bot:not(.pending)")].some(li => li.textContent.includes("still here"))`))
	if os.Getenv("UPDATE_SCREENSHOTS") == "1" {
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "..", "..", "docs", "img", "demo-live.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// browser starts headless Chromium for t and returns its context and a
// runner of actions that fails t.
func browser(t *testing.T) *browsertest.Browser {
	t.Helper()
	return browsertest.Start(t, browsertest.Options{Width: 1280, Height: 800, Timeout: 60 * time.Second})
}

// TestAdminPageInBrowser drives the admin page against the real daemon: a
// client that connects appears live in the sessions table; closing it from
// the page (with confirmation) closes the client's connection (1008); a
// drain started from the page turns /readyz 503 and the client gets
// reconnect and 1012.
func TestAdminPageInBrowser(t *testing.T) {
	s := startStack(t, baseYAML)
	b := browser(t)
	ctx, run := b.Ctx, b.Run
	run("open admin page", chromedp.Navigate("http://"+s.admin+"/"), chromedp.WaitVisible(chromedp.CSS(`#live.on`)))

	c := s.dial(t, "alice", "")
	w := c.expect(2 * time.Second)
	row := `tr[data-session="` + w.Session + `"]`
	run("row appears live", chromedp.WaitVisible(chromedp.CSS(row)))
	run("close it", chromedp.Click(chromedp.CSS(`button[data-action="kick"][data-id="`+w.Session+`"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm`)), chromedp.Click(chromedp.CSS(`#confirm-ok`)))
	if cl := c.expectClose(5 * time.Second); cl.code != 1008 {
		t.Fatalf("kicked client closed with %d, want 1008", cl.code)
	}
	run("row gone", chromedp.WaitNotPresent(chromedp.CSS(row)))

	d := s.dial(t, "bob", "")
	d.expect(2 * time.Second)
	run("drain", chromedp.Click(chromedp.CSS(`#drain`)), chromedp.WaitVisible(chromedp.CSS(`#confirm`)),
		chromedp.Click(chromedp.CSS(`#confirm-ok`)))
	if m := d.expect(5 * time.Second); m.Type != "reconnect" {
		t.Fatalf("after drain the client got %+v, want reconnect", m)
	}
	resp, err := http.Get("http://" + s.addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz after drain = %d, want 503", resp.StatusCode)
	}
	if cl := d.expectClose(5 * time.Second); cl.code != 1012 {
		t.Fatalf("drained client closed with %d, want 1012", cl.code)
	}
	_ = ctx
}

// kick closes a session through the admin API, with its CSRF token.
func kick(t *testing.T, admin, session string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + admin + "/api/token")
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		Token string `json:"csrf_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	req, _ := http.NewRequest(http.MethodPost, "http://"+admin+"/api/sessions/"+session+"/close", nil)
	req.Header.Set("X-CSRF-Token", tok.Token)
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("kick %s: status %d", session, resp.StatusCode)
	}
}
