package netpoll

import (
	"testing"
	"time"
)

// TestPollerSpin checks when a poller that ran out of work polls again
// rather than parking: only while work has been coming back within
// microseconds, and only for spinWindow since it ran out, and never past
// maxHold since it woke.
func TestPollerSpin(t *testing.T) {
	us := func(n int) int64 { return int64(time.Duration(n) * time.Microsecond) }
	// settle runs rounds of "out of work at t, work again gap later".
	settle := func(p *poller, gap int64) int64 {
		var now int64
		for range 64 {
			p.spin(now, now)
			now += gap
			p.noteWork(now)
		}
		return now
	}
	tests := []struct {
		name     string
		gap      int64 // the gaps the poller has seen
		idleFor  int64 // since it ran out of work
		heldFor  int64 // since the drain began
		wantSpin bool
	}{
		{"closed loop: work back in 2µs", us(2), 0, us(5), true},
		{"closed loop, spun its window out", us(2), spinWindow.Nanoseconds(), us(30), false},
		{"closed loop, held the P too long", us(2), 0, maxHold.Nanoseconds(), false},
		{"fixed rate: a message every 100µs", us(100), 0, us(5), false},
		{"idle: heartbeats only", int64(time.Second), 0, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &poller{}
			now := settle(p, tc.gap)
			woke := now - tc.heldFor
			p.spin(now, woke) // runs out of work at now
			if got := p.spin(now+tc.idleFor, woke); got != tc.wantSpin {
				t.Fatalf("spin after gaps of %v, idle %v, held %v = %v, want %v",
					time.Duration(tc.gap), time.Duration(tc.idleFor), time.Duration(tc.heldFor), got, tc.wantSpin)
			}
		})
	}
	// A spinning poller whose next gap is long stops spinning at once.
	p := &poller{}
	now := settle(p, us(2))
	p.spin(now, now)
	now += us(200)
	p.noteWork(now)
	if p.spin(now, now) {
		t.Fatalf("still spins after a gap of 200µs (average %v)", time.Duration(p.gapAvg))
	}
}
