package main

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDemoStreamInBrowser drives the demo page (built on the client library
// served at /client/orchestrator.js) against the real daemon with the
// demo's streaming route: the answer streams in word by word; Stop cancels
// it (the backend call ends: nothing in flight, no more words); a reload in
// the middle of a streamed answer shows the complete answer, once, after the
// reload.
func TestDemoStreamInBrowser(t *testing.T) {
	s := startStack(t, demoYAML)
	b := browser(t)
	run, eval := b.Run, b.Eval
	words := func(n int, p string) string {
		w := make([]string, n)
		for i := range w {
			w[i] = p + strconv.Itoa(i)
		}
		return strings.Join(w, " ")
	}
	// last is the selector of the newest request's entry.
	last := func() string {
		return `#log li[data-id="` + eval(`(function(){var l=document.querySelectorAll("#log li[data-id]"); return l.length ? l[l.length-1].dataset.id : "none"})()`) + `"]`
	}
	bodyOf := func(sel string) string { return eval(`document.querySelector('` + sel + ` .body').textContent`) }
	ask := func(text string) string {
		t.Helper()
		run("send", chromedp.WaitVisible(chromedp.CSS(`#status[data-state="open"]`)),
			chromedp.Poll[chromedp.Void](`document.getElementById("route").value === "stream"`),
			chromedp.SendKeys(chromedp.CSS(`#msg`), text), chromedp.Click(chromedp.CSS(`#send`)),
			chromedp.Poll[chromedp.Void](`document.querySelectorAll("#log li[data-id]").length > 0 && document.querySelector("#log li[data-id]:last-of-type .body") !== null`))
		return last()
	}

	run("open", chromedp.Navigate("http://"+s.addr+"/"), chromedp.WaitVisible(chromedp.CSS(`#status[data-state="open"]`)))
	if got := eval(`[...document.querySelectorAll("#route option")].map(o => o.value).join(",")`); got != "echo,stream" {
		t.Fatalf("route picker offers %q, want the config's routes echo,stream", got)
	}
	if got := eval(`typeof (document.querySelector('footer a') || {}).href`); got != "string" {
		t.Fatalf("no link to the library: %q", got)
	}

	// Streams: the words arrive one by one before the answer completes.
	text := words(12, "w")
	sel := ask(text)
	run("first words", chromedp.Poll[chromedp.Void](`document.querySelector('`+sel+` .body').textContent.startsWith("w0 w1 ")`))
	if cls := eval(`document.querySelector('` + sel + `').className`); !strings.Contains(cls, "pending") {
		t.Fatalf("entry class %q while streaming, want pending", cls)
	}
	run("complete", chromedp.WaitVisible(chromedp.CSS(sel+`:not(.pending)`)))
	if got := bodyOf(sel); got != text {
		t.Fatalf("streamed answer %q, want %q", got, text)
	}

	// Stop cancels: the backend call ends and no more words come.
	sel = ask(words(60, "s"))
	run("streaming", chromedp.Poll[chromedp.Void](`document.querySelector('`+sel+` .body').textContent.length > 6`),
		chromedp.Click(chromedp.CSS(`#stop`)), chromedp.WaitVisible(chromedp.CSS(sel+`.canceled`)))
	stopped := bodyOf(sel)
	waitUntil(t, 5*time.Second, func() bool { return inFlight(t, s) == 0 })
	time.Sleep(500 * time.Millisecond)
	if got := bodyOf(sel); got != stopped || strings.Contains(got, "s59") {
		t.Fatalf("after Stop the answer went on: %q, then %q", stopped, got)
	}

	// A reload mid-answer: the answer completes after the reload, once.
	text = words(30, "r")
	sel = ask(text)
	run("mid-answer", chromedp.Poll[chromedp.Void](`document.querySelector('`+sel+` .body').textContent.includes("r4 ")`))
	run("reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`#status[data-state="open"]`)))
	if got := bodyOf(sel); strings.Contains(got, "r29") {
		t.Fatalf("the answer was complete before the reload was over (%q): the test proves nothing", got)
	}
	run("completes after the reload", chromedp.WaitVisible(chromedp.CSS(sel+`:not(.pending)`)))
	time.Sleep(300 * time.Millisecond) // a duplicate would arrive now
	if got := bodyOf(sel); got != text {
		t.Fatalf("after the reload the answer is %q, want %q", got, text)
	}
	if n := eval(`String(document.querySelectorAll('` + sel + `').length)`); n != "1" {
		t.Fatalf("%s entries for the request after the reload, want 1", n)
	}
	if n := eval(fmt.Sprintf(`String([...document.querySelectorAll("#log li.user")].filter(li => li.textContent === %q).length)`, text)); n != "1" {
		t.Fatalf("%s user entries for the question after the reload, want 1", n)
	}
}
