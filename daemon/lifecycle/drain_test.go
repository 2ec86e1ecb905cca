package lifecycle

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

const ms = time.Millisecond

// fakeSteps returns Steps that record their calls. Wait returns nil after
// waitFor, or ctx's error when ctx ends first; with ignoreCtx it returns
// only when the test ends (a Wait that misbehaves).
func fakeSteps(r *recorder, waitFor time.Duration, ignoreCtx bool, release <-chan struct{}) Steps {
	return Steps{
		Start:         func() { r.add("start") },
		StopListening: func() { r.add("stop_listening") },
		Wait: func(ctx context.Context) error {
			t := time.NewTimer(waitFor)
			defer t.Stop()
			if ignoreCtx {
				select {
				case <-t.C:
				case <-release:
				}
				r.add("wait_done")
				return nil
			}
			select {
			case <-t.C:
				r.add("wait_done")
				return nil
			case <-ctx.Done():
				// Not recorded: Drain and this goroutine both wake at
				// the deadline, in no fixed order.
				return ctx.Err()
			}
		},
		Abort: func() { r.add("abort") },
		Close: func() { r.add("close") },
	}
}

func TestDrainOrderAndTiming(t *testing.T) {
	const forever = time.Hour
	tests := []struct {
		name      string
		timing    Timing
		waitFor   time.Duration
		ignoreCtx bool
		want      []string
	}{
		{
			name:    "requests end before lb_grace: the listener still stays open for lb_grace, no abort",
			timing:  Timing{LBGrace: 300 * ms, Timeout: time.Second},
			waitFor: 100 * ms,
			want:    []string{"start@0s", "wait_done@100ms", "stop_listening@300ms", "close@300ms"},
		},
		{
			name:    "requests end after lb_grace, before the timeout: no abort",
			timing:  Timing{LBGrace: 300 * ms, Timeout: time.Second},
			waitFor: 700 * ms,
			want:    []string{"start@0s", "stop_listening@300ms", "wait_done@700ms", "close@700ms"},
		},
		{
			name:    "nothing in flight: stop listening after lb_grace",
			timing:  Timing{LBGrace: 300 * ms, Timeout: time.Second},
			waitFor: 0,
			want:    []string{"start@0s", "wait_done@0s", "stop_listening@300ms", "close@300ms"},
		},
		{
			name:    "timeout counts from the start of the drain, not from stop_listening",
			timing:  Timing{LBGrace: 300 * ms, Timeout: time.Second},
			waitFor: forever,
			want:    []string{"start@0s", "stop_listening@300ms", "abort@1s", "close@1s"},
		},
		{
			name:      "a Wait that ignores its context does not hold the drain past the timeout",
			timing:    Timing{LBGrace: 300 * ms, Timeout: time.Second},
			waitFor:   forever,
			ignoreCtx: true,
			want:      []string{"start@0s", "stop_listening@300ms", "abort@1s", "close@1s"},
		},
		{
			name:    "lb_grace longer than the timeout: the timeout wins",
			timing:  Timing{LBGrace: 5 * time.Second, Timeout: time.Second},
			waitFor: forever,
			want:    []string{"start@0s", "stop_listening@1s", "abort@1s", "close@1s"},
		},
		{
			name:    "lb_grace longer than the timeout, requests end early: stop at the timeout, no abort",
			timing:  Timing{LBGrace: 5 * time.Second, Timeout: time.Second},
			waitFor: 200 * ms,
			want:    []string{"start@0s", "wait_done@200ms", "stop_listening@1s", "close@1s"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				log, _ := testLogger(t)
				r := newRecorder()
				release := make(chan struct{})
				Drain(tc.timing, fakeSteps(r, tc.waitFor, tc.ignoreCtx, release), nil, log)
				got := r.got()
				close(release)
				synctest.Wait()
				if !equal(got, tc.want) {
					t.Errorf("got %v, want %v", got, tc.want)
				}
			})
		})
	}
}

func TestDrainNotifies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, _ := testLogger(t)
		r := newRecorder()
		n := recordingNotifier(r, log)
		Drain(Timing{LBGrace: 100 * ms, Timeout: time.Second}, fakeSteps(r, 50*ms, false, nil), n, log)
		want := []string{
			"notify:STOPPING=1@0s",
			"notify:EXTEND_TIMEOUT_USEC=11000000@0s", // timeout + exitSlack
			"notify:STATUS=draining@0s",
			"start@0s", "wait_done@50ms", "stop_listening@100ms", "close@100ms",
		}
		if got := r.got(); !equal(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
}
