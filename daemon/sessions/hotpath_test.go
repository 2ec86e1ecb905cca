package sessions

import (
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// TestLocalStreamNoRedis: with the connection on the node running the
// request, chunks cost Redis nothing (the terminal is one script call,
// which miniredis counts with the commands the script runs).
func TestLocalStreamNoRedis(t *testing.T) {
	mr := miniredis.RunT(t)
	b := backend{name: "miniredis", redis: true, addr: mr.Addr(), prefix: randomPrefix()}
	m := b.openManager(t, "A", testLimits)
	o := &fakeOutlet{}
	id, _ := attach(t, m, "alice", "", o)
	m.Touch(id) // within the debounce interval of the attach: no write
	// The manager's background work (subscriber, first sweep, liveness
	// ticks) talks to Redis on its own schedule; a tick that lands inside
	// the window is not the stream's doing. Wait for a quiet store, and
	// measure up to three streams: a stream that costs commands costs
	// them every time.
	var got int
	for try := range 3 {
		waitQuiet(t, mr)
		req := fmt.Sprintf("r%d", try)
		before := mr.CommandCount()
		s := m.Begin(id, req)
		for i := range 100 {
			s.Chunk(chunkMsg(req, i))
		}
		got = mr.CommandCount() - before
		s.End(resultMsg(req))
		if got == 0 {
			break
		}
	}
	if got != 0 {
		t.Fatalf("a local stream of 100 chunks sent %d Redis commands, want 0", got)
	}
	if n := len(o.got()); n < 1+100+1 || (n-1)%101 != 0 {
		t.Fatalf("outlet got %d messages, want the welcome and 101 a stream", n)
	}
}

// waitQuiet waits until mr has seen no command for 200 ms (at most 5 s).
func waitQuiet(t *testing.T, mr *miniredis.Miniredis) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	last := mr.CommandCount()
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		n := mr.CommandCount()
		if n == last {
			return
		}
		last = n
	}
}

// TestChunkAllocs: a chunk delivered on this node allocates only its copy.
func TestChunkAllocs(t *testing.T) {
	m := backend{name: "memory"}.openManager(t, "A", testLimits)
	id, _, err := m.Attach(t.Context(), "alice", "", Resume{}, discard{}, welcomeFn)
	if err != nil {
		t.Fatal(err)
	}
	s := m.Begin(id, "r1")
	chunk := chunkMsg("r1", 1)
	if n := testing.AllocsPerRun(1000, func() { s.Chunk(chunk) }); n > 1 {
		t.Fatalf("Chunk allocates %v times, want at most 1 (the copy)", n)
	}
	s.End(resultMsg("r1"))
}
