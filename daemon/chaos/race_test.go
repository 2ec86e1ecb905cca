package chaos

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestResumeRace: clients resume their session from a second connection
// right after the first chunk of a request whose terminal follows within
// a few milliseconds, so that the terminal races the takeover (4009) and
// the attach. Each terminal must
// arrive exactly once, on the new connection or from the outbox.
func TestResumeRace(t *testing.T) {
	be := newFakeBackend(t)
	d := startDaemon(t, "chaos-race", clientConfig(be.url(), 1<<20))
	base := d.baseline()
	l := newLedger()
	clients, cycles := scale(10, 50), scale(100, 1000)
	var lost atomic.Int64
	var wg sync.WaitGroup
	for ci := 0; ci < clients; ci++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(ci), 11))
			user := fmt.Sprintf("race%d", ci)
			c, err := dialAs(t, d.client, user, "")
			if err != nil {
				t.Errorf("client %d: %v", ci, err)
				return
			}
			defer func() { c.close() }()
			for k := 0; k < cycles; k++ {
				id := fmt.Sprintf("z%dx%d", ci, k)
				l.sent(c, id)
				if err := c.request("stream", id, job{Mode: modeSSE, Chunks: 1, GapMS: rng.IntN(10)}); err != nil {
					t.Errorf("send: %v", err)
					return
				}
				m, err := c.read(5 * time.Second)
				if err != nil {
					t.Errorf("client %d first message of %s: %v", ci, id, err)
					return
				}
				l.see(m)
				if !m.terminal() {
					// Resume while the old connection is still open: the
					// daemon takes it over (4009). Whatever reaches either
					// connection is read, so nothing the daemon wrote can be
					// lost by this client.
					sid := c.welcome.Session
					c2, err := dialAs(t, d.client, user, sid)
					if err != nil {
						t.Errorf("resume: %v", err)
						return
					}
					old := c
					var oldDone sync.WaitGroup
					oldDone.Add(1)
					go func() {
						defer oldDone.Done()
						defer old.close()
						err := l.pump(old, 5*time.Second, nil)
						if code := closeCode(err); code != 4009 {
							t.Errorf("taken-over connection ended with %v, want 4009", err)
						}
					}()
					oldDone.Wait()
					c = c2
				}
				deadline := time.Now().Add(3 * time.Second)
				for !l.done(id) && time.Now().Before(deadline) {
					m, err := c.read(time.Until(deadline))
					if err != nil {
						break
					}
					l.see(m)
				}
				if !l.done(id) {
					lost.Add(1)
					// Reconnect to go on: the old connection may be stuck.
					c.close()
					c2, err := dialAs(t, d.client, user, c.welcome.Session)
					if err != nil {
						t.Errorf("resume after a lost terminal: %v", err)
						return
					}
					c = c2
				}
			}
		}()
	}
	wg.Wait()
	l.collect(t, d.client, 5*time.Second)
	t.Logf("%d takeover cycles; %d terminals not seen within 3 s of the resume", clients*cycles, lost.Load())
	l.check(t, "resume race")
	be.srv.CloseClientConnections()
	d.settles(base, 8)
}
