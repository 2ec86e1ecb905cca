package sessions

import (
	"testing"

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
	before := mr.CommandCount()
	s := m.Begin(id, "r1")
	for i := range 100 {
		s.Chunk(chunkMsg("r1", i))
	}
	if got := mr.CommandCount() - before; got != 0 {
		t.Fatalf("a local stream of 100 chunks sent %d Redis commands, want 0", got)
	}
	s.End(resultMsg("r1"))
	if got := len(o.got()); got != 1+100+1 {
		t.Fatalf("outlet got %d messages, want 102", got)
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
