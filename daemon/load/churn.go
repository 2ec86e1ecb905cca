package load

import (
	"context"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// ChurnReport is the connect/disconnect rate.
type ChurnReport struct {
	Cycles    uint64            `json:"cycles"` // connected (and welcomed) then closed
	Failed    uint64            `json:"failed"`
	PerSecond float64           `json:"per_second"`
	Errors    map[string]uint64 `json:"errors,omitempty"`
}

// churn has ChurnWorkers goroutines connect, wait for the welcome (protocol
// mode), close with 1000 and start over, for Duration. The histogram holds
// the time from dial to welcome (raw mode: to the 101).
func (s *shard) churn(ctx context.Context) (*ChurnReport, *Hist) {
	rep := &ChurnReport{Errors: map[string]uint64{}}
	h := NewHist()
	var mu sync.Mutex
	ctx, cancel := context.WithTimeout(ctx, s.o.Duration)
	defer cancel()
	end, _ := ctx.Deadline()
	start := time.Now()
	var wg sync.WaitGroup
	for range s.o.ChurnWorkers {
		wg.Go(func() {
			mine := NewHist()
			var ok, failed uint64
			errs := map[string]uint64{}
			for ctx.Err() == nil {
				t0 := time.Now()
				err := s.cycle(ctx)
				switch {
				case err == nil:
					ok++
					mine.Record(time.Since(t0))
				case ctx.Err() == nil && time.Now().Before(end):
					// A socket deadline set from ctx can fire just before
					// ctx reports done: only failures before the end count.
					failed++
					errs[dialErrKey(err)]++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			rep.Cycles += ok
			rep.Failed += failed
			for k, v := range errs {
				rep.Errors[k] += v
			}
			h.Merge(mine)
		})
	}
	wg.Wait()
	if secs := time.Since(start).Seconds(); secs > 0 {
		rep.PerSecond = float64(rep.Cycles) / secs
	}
	return rep, h
}

func (s *shard) cycle(ctx context.Context) error {
	nc, br, err := s.d.DialBlocking(ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	if !s.o.Raw {
		_ = nc.SetDeadline(time.Now().Add(s.o.DialTimeout))
		msg, err := wsutil.ReadServerText(readerOf(nc, br))
		if err != nil {
			return err
		}
		var c Checker
		if _, err := c.Protocol(msg, false, nil); err != nil {
			return err
		}
	} else if br != nil {
		ws.PutReader(br)
	}
	return wsutil.WriteClientMessage(nc, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
}
