package sessions

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// TestAppendRecordRacesExpiryAndTrim: terminals appended to the record
// the Manager holds (MemoryStore.appendRecord) race the sessions' expiry
// (and the restore that follows it), acks, resumes with and without
// ?last= and the memory budget's trim, across many wraps of the replay
// logs; every message delivered is whole JSON, and afterwards each log's
// logBytes is what its entries hold and the store's byte count is the sum
// over the live sessions (a leak or a double count across a wrap, a trim
// or an expiry shows here).
func TestAppendRecordRacesExpiryAndTrim(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default().Sessions
	cfg.Store = "memory"
	cfg.ReplayMax = 5
	cfg.ReplayBytes = 3000
	cfg.MemoryBudgetBytes = 8000
	cfg.TTL = config.Duration(40 * time.Millisecond)
	m, err := OpenOptions(ctx, cfg, "n1", testLog(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ms := m.memStore
	var expired atomic.Int32
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := &fakeOutlet{}
			id, _, err := m.Attach(ctx, "u", "", Resume{}, o, welcomeFn)
			if err != nil {
				t.Error(err)
				return
			}
			for i := range 400 {
				msg, _ := logTerminal(i, 100+(i*37+g)%900)
				if _, err := m.Terminal(ctx, id, fmt.Sprintf("r%d", i), msg); err != nil && i%50 == 0 {
					t.Logf("terminal: %v", err)
				}
				switch i % 7 {
				case 3:
					m.Ack(id, uint64(i/2))
				case 5:
					m.Detach(id, o, o.acked())
					o = &fakeOutlet{}
					if _, _, err := m.Attach(ctx, "u", id, Resume{Last: uint64(i / 3), HasLast: i%2 == 0}, o, welcomeFn); err != nil {
						t.Error(err)
						return
					}
				}
				if i%40 == 0 {
					time.Sleep(60 * time.Millisecond) // let it expire now and then
					if _, err := ms.Get(ctx, id); err != nil {
						expired.Add(1)
					}
				}
			}
			for _, s := range o.raw() {
				if !json.Valid([]byte(s)) {
					t.Errorf("bad message %.60q", s)
				}
			}
		}()
	}
	wg.Wait()
	if expired.Load() == 0 {
		t.Error("no session expired: the expiry race went untested")
	}
	t.Logf("expired %d times", expired.Load())
	ms.Close() // the sweeper (expiry, trim) stops: the counts hold still

	var sum int64
	for i := range ms.reg.shards {
		sh := &ms.reg.shards[i]
		sh.mu.Lock()
		for l := range sh.m.all() {
			if e := l.mem; e != nil && e.x != nil {
				var lb int64
				for le := range e.x.log.all() {
					lb += int64(len(le.Msg))
				}
				if lb != e.x.logBytes {
					t.Errorf("session %s: logBytes %d, entries hold %d", l.id, e.x.logBytes, lb)
				}
				sum += e.x.logBytes + e.x.size
			}
		}
		sh.mu.Unlock()
	}
	if got := ms.Bytes(); got != sum {
		t.Errorf("store counts %d bytes, entries hold %d", got, sum)
	}
}
