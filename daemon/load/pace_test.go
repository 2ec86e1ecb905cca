package load

import (
	"context"
	"testing"
	"time"
)

func TestPacerReserve(t *testing.T) {
	p := newPacer(100) // a slot every 10 ms
	if p.interval != 10*time.Millisecond {
		t.Fatalf("interval %v, want 10ms", p.interval)
	}
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	steps := []struct {
		now, want time.Time
	}{
		{t0, t0},           // the first slot is now
		{t0, ms(10)},       // then one every interval
		{ms(1), ms(20)},    // callers that come early queue behind
		{ms(15), ms(30)},   //
		{ms(100), ms(100)}, // late: the slot is now, with no burst to catch up
		{ms(100), ms(110)},
	}
	for i, st := range steps {
		if got := p.reserve(st.now); !got.Equal(st.want) {
			t.Errorf("step %d: reserve(%v) = %v, want %v", i, st.now.Sub(t0), got.Sub(t0), st.want.Sub(t0))
		}
	}
}

func TestPacerOff(t *testing.T) {
	for _, r := range []float64{0, -5} {
		if p := newPacer(r); p != nil {
			t.Errorf("newPacer(%v) = %+v, want nil (unpaced)", r, p)
		}
	}
	var p *pacer
	if err := p.wait(context.Background()); err != nil {
		t.Errorf("nil pacer wait: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.wait(ctx); err == nil {
		t.Error("nil pacer wait on a cancelled context: nil, want its error")
	}
}

func TestPacerWaitCancelled(t *testing.T) {
	p := newPacer(1.0 / 3600) // one slot an hour
	ctx, cancel := context.WithCancel(context.Background())
	if err := p.wait(ctx); err != nil {
		t.Fatalf("first slot: %v, want nil (it starts now)", err)
	}
	done := make(chan error, 1)
	go func() { done <- p.wait(ctx) }()
	cancel()
	if err := <-done; err == nil {
		t.Error("wait for a slot an hour away returned nil after cancel, want the context's error")
	}
}
