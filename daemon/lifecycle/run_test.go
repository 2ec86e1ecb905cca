package lifecycle

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// runSteps are Steps that record their calls and finish at once.
func runSteps(r *recorder) Steps {
	return Steps{
		Start:         func() { r.add("start") },
		StopListening: func() { r.add("stop_listening") },
		Wait:          func(context.Context) error { return nil },
		Abort:         func() { r.add("abort") },
		Close:         func() { r.add("close") },
	}
}

func TestRunReloadsOnSIGHUPAndKeepsGoingAfterAnError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, logs := testLogger(t)
		r := newRecorder()
		sigs := make(chan os.Signal, 1)
		results := []error{errors.New("routes.x.backend: unknown backend"), nil}
		reloads := 0
		done := make(chan struct{})
		go func() {
			defer close(done)
			Run(context.Background(), Options{
				Notifier: recordingNotifier(r, log),
				Timing:   Timing{LBGrace: 100 * ms, Timeout: time.Second},
				Steps:    runSteps(r),
				Reload: func() error {
					err := results[reloads]
					reloads++
					r.add("reload")
					return err
				},
				Signals: sigs,
			}, log)
		}()
		sigs <- syscall.SIGHUP
		synctest.Wait()
		if !strings.Contains(logs.String(), "reload refused") {
			t.Errorf("log after a failed reload: no %q line in\n%s", "reload refused", logs.String())
		}
		sigs <- syscall.SIGHUP
		synctest.Wait()
		if !strings.Contains(logs.String(), "configuration reloaded") {
			t.Errorf("log after a good reload: no %q line", "configuration reloaded")
		}
		sigs <- syscall.SIGTERM
		<-done
		want := []string{
			"notify:READY=1@0s",
			"notify:RELOADING=1@0s", "reload@0s", "notify:READY=1@0s",
			"notify:RELOADING=1@0s", "reload@0s", "notify:READY=1@0s",
			"notify:STOPPING=1@0s", "notify:EXTEND_TIMEOUT_USEC=11000000@0s", "notify:STATUS=draining@0s",
			"start@0s", "stop_listening@100ms", "close@100ms",
		}
		if got := r.got(); !equal(got, want) {
			t.Errorf("got %v\nwant %v", got, want)
		}
	})
}

func TestRunDrainTriggers(t *testing.T) {
	tests := []struct {
		name    string
		trigger func(sigs chan os.Signal, drains chan string, cancel context.CancelFunc)
		reason  string
	}{
		{"SIGTERM", func(s chan os.Signal, _ chan string, _ context.CancelFunc) { s <- syscall.SIGTERM }, "terminated"},
		{"SIGINT", func(s chan os.Signal, _ chan string, _ context.CancelFunc) { s <- syscall.SIGINT }, "interrupt"},
		{"admin request", func(_ chan os.Signal, d chan string, _ context.CancelFunc) { d <- "admin api" }, "admin api"},
		{"context done", func(_ chan os.Signal, _ chan string, c context.CancelFunc) { c() }, "context done"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				log, logs := testLogger(t)
				r := newRecorder()
				sigs := make(chan os.Signal, 1)
				drains := make(chan string, 1)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				done := make(chan struct{})
				go func() {
					defer close(done)
					Run(ctx, Options{Timing: Timing{LBGrace: 50 * ms, Timeout: time.Second}, Steps: runSteps(r),
						Signals: sigs, DrainRequests: drains}, log)
				}()
				synctest.Wait()
				if got := r.got(); len(got) != 0 {
					t.Fatalf("before the trigger: got %v, want nothing", got)
				}
				tc.trigger(sigs, drains, cancel)
				<-done
				want := []string{"start@0s", "stop_listening@50ms", "close@50ms"}
				if got := r.got(); !equal(got, want) {
					t.Errorf("got %v, want %v", got, want)
				}
				if !strings.Contains(logs.String(), "reason="+quoteIfNeeded(tc.reason)) {
					t.Errorf("log has no reason=%q:\n%s", tc.reason, logs.String())
				}
			})
		})
	}
}

func quoteIfNeeded(s string) string {
	if strings.ContainsAny(s, " =\"") {
		return `"` + s + `"`
	}
	return s
}

func TestRunIgnoresSignalsDuringDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, logs := testLogger(t)
		r := newRecorder()
		sigs := make(chan os.Signal) // unbuffered: a send succeeds only if someone reads
		release := make(chan struct{})
		steps := runSteps(r)
		steps.Wait = func(ctx context.Context) error {
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			Run(context.Background(), Options{Timing: Timing{LBGrace: 10 * ms, Timeout: time.Second}, Steps: steps,
				Reload: func() error { r.add("reload"); return nil }, Signals: sigs}, log)
		}()
		sigs <- syscall.SIGTERM
		sigs <- syscall.SIGTERM // read and ignored, not a second drain
		sigs <- syscall.SIGHUP  // no reload during a drain
		close(release)
		<-done
		want := []string{"start@0s", "stop_listening@10ms", "close@10ms"}
		if got := r.got(); !equal(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
		if n := strings.Count(logs.String(), "signal ignored during drain"); n != 2 {
			t.Errorf("got %d \"signal ignored\" lines, want 2", n)
		}
	})
}

func TestRunWatchdogPingsOnlyWhileAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, logs := testLogger(t)
		r := newRecorder()
		start := time.Now()
		// Wedged from 350ms to 650ms.
		alive := func() error {
			if e := time.Since(start); e >= 350*ms && e < 650*ms {
				return errors.New("poller stalled")
			}
			return nil
		}
		sigs := make(chan os.Signal, 1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			Run(context.Background(), Options{
				Notifier:         recordingNotifier(r, log),
				Timing:           Timing{LBGrace: 0, Timeout: time.Second},
				Steps:            runSteps(r),
				Alive:            alive,
				WatchdogInterval: 100 * ms,
				Signals:          sigs,
			}, log)
		}()
		time.Sleep(950 * ms) // fake time: advances the bubble's clock
		sigs <- syscall.SIGTERM
		<-done
		var pings []string
		for _, e := range r.got() {
			if strings.HasPrefix(e, "notify:WATCHDOG=1") {
				pings = append(pings, strings.TrimPrefix(e, "notify:WATCHDOG=1@"))
			}
		}
		want := []string{"100ms", "200ms", "300ms", "700ms", "800ms", "900ms"}
		if !equal(pings, want) {
			t.Errorf("watchdog pings at %v, want %v", pings, want)
		}
		if n := strings.Count(logs.String(), "withholding watchdog pings"); n != 1 {
			t.Errorf("got %d \"withholding\" log lines, want 1 per stall", n)
		}
	})
}

func TestRunStatusLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, _ := testLogger(t)
		r := newRecorder()
		sigs := make(chan os.Signal, 1)
		n := 0
		done := make(chan struct{})
		go func() {
			defer close(done)
			Run(context.Background(), Options{
				Notifier: recordingNotifier(r, log),
				Timing:   Timing{Timeout: time.Second},
				Steps:    runSteps(r),
				Status: func() string {
					n++
					return "serving: " + string(rune('0'+n)) + " connections"
				},
				StatusInterval: time.Second,
				Signals:        sigs,
			}, log)
		}()
		time.Sleep(2500 * ms) // fake time: advances the bubble's clock
		sigs <- syscall.SIGTERM
		<-done
		var got []string
		for _, e := range r.got() {
			if strings.HasPrefix(e, "notify:STATUS=serving") || strings.HasPrefix(e, "notify:READY") {
				got = append(got, e)
			}
		}
		want := []string{"notify:READY=1@0s", "notify:STATUS=serving: 1 connections@0s",
			"notify:STATUS=serving: 2 connections@1s", "notify:STATUS=serving: 3 connections@2s"}
		if !equal(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
}

func TestWatchdogInterval(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"500000", "", 250 * ms},
		{"500000", self, 250 * ms},
		{"500000", "1", 0}, // meant for another process
		{"0", "", 0},
		{"-5", "", 0},
		{"soon", "", 0},
		{"30000000", "", 15 * time.Second},
	}
	for _, tc := range tests {
		if got := WatchdogInterval(tc.usec, tc.pid); got != tc.want {
			t.Errorf("WatchdogInterval(%q, %q) = %v, want %v", tc.usec, tc.pid, got, tc.want)
		}
	}
}

func TestRunCurrentTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, _ := testLogger(t)
		r := newRecorder()
		sigs := make(chan os.Signal, 1)
		timing := Timing{LBGrace: 100 * ms, Timeout: time.Second}
		done := make(chan struct{})
		go func() {
			defer close(done)
			Run(context.Background(), Options{
				Timing:        Timing{LBGrace: 5 * time.Second, Timeout: 10 * time.Second},
				CurrentTiming: func() Timing { return timing }, // read at the drain: as reloaded
				Steps:         runSteps(r),
				Reload:        func() error { timing.LBGrace = 200 * ms; return nil },
				Signals:       sigs,
			}, log)
		}()
		sigs <- syscall.SIGHUP
		sigs <- syscall.SIGTERM
		<-done
		want := []string{"start@0s", "stop_listening@200ms", "close@200ms"}
		if got := r.got(); !equal(got, want) {
			t.Errorf("got %v, want %v (the reloaded lb_grace)", got, want)
		}
	})
}
