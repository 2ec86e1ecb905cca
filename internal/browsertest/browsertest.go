// Package browsertest starts headless Chromium (chromedp) for the tests
// that drive the admin page and the demo page in a real browser (admin,
// web, daemon/cmd/orchestratord): one set of flags, one place that decides
// what a missing Chromium means (a skip, or a failure with CI=true).
package browsertest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Chromium is the browser the tests drive (.ci/run installs it).
const Chromium = "/usr/bin/chromium"

// Require skips t when Chromium is missing, or fails it with CI=true.
func Require(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(Chromium); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s missing (CI=true): %v", Chromium, err)
		}
		t.Skipf("%s missing: %v", Chromium, err)
	}
}

// Options shape one browser.
type Options struct {
	// Width and Height are the window's size in pixels.
	Width, Height int
	// Timeout bounds everything the test does in the browser, from the
	// moment the browser runs.
	Timeout time.Duration
	// StartWithin, when set, starts Chromium at once with a bound of its
	// own and Timeout counts from when it runs: on a loaded machine the
	// start alone can take much of a budget meant for the page. Unset,
	// Chromium starts with the first action, within Timeout.
	StartWithin time.Duration
}

// Browser is one headless Chromium of a test.
type Browser struct {
	// Ctx runs actions in the browser's tab (chromedp.Run, chromedp.Do).
	Ctx  context.Context
	t    testing.TB
	stop func()
}

// Start starts headless Chromium for t (Require first). The browser is
// stopped by Stop or, at the latest, when t's cleanups run.
func Start(t testing.TB, o Options) *Browser {
	t.Helper()
	Require(t)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(Chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(o.Width, o.Height),
	)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithErrorf(t.Logf))
	b := &Browser{t: t, stop: func() { cancel(); cancelAlloc() }}
	t.Cleanup(b.Stop)
	if o.StartWithin > 0 {
		// The first Do starts the browser; it must have no deadline of its
		// own (that deadline would stop the browser).
		t0 := time.Now()
		started := make(chan error, 1)
		go func() { started <- chromedp.Do(ctx) }()
		select {
		case err := <-started:
			if err != nil {
				t.Fatalf("start chromium: %v", err)
			}
		case <-time.After(o.StartWithin):
			cancel()
			t.Fatalf("chromium did not start within %s", o.StartWithin)
		}
		t.Logf("chromium started in %s", time.Since(t0).Round(time.Millisecond))
	}
	ctx, cancelT := context.WithTimeout(ctx, o.Timeout)
	b.Ctx, b.stop = ctx, func() { cancelT(); cancel(); cancelAlloc() }
	return b
}

// Stop stops the browser; later calls do nothing.
func (b *Browser) Stop() {
	if b.stop != nil {
		b.stop()
		b.stop = nil
	}
}

// Run runs actions in the browser, failing the test with what on error.
func (b *Browser) Run(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.Ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// Eval evaluates the JavaScript expression expr, which yields a string,
// failing the test on error.
func (b *Browser) Eval(expr string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.Ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}
