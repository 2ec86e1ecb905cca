package sessions

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// seqsOf returns the chunk seqs of req in msgs, and whether its result came.
func seqsOf(t *testing.T, msgs []string, req string) (seqs []int, result bool) {
	t.Helper()
	for _, raw := range msgs {
		var m struct {
			Type, ID string
			Seq      int
		}
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			t.Fatalf("message %q: %v", raw, err)
		}
		switch {
		case m.Type == "chunk" && m.ID == req:
			if result {
				t.Fatalf("chunk %d after the result", m.Seq)
			}
			seqs = append(seqs, m.Seq)
		case m.Type == "result" && m.ID == req:
			if result {
				t.Fatal("two results on one connection")
			}
			result = true
		}
	}
	return seqs, result
}

// TestFlappingResume: while a request streams on A, the client moves
// between three replicas every few chunks, each new connection taking over
// the previous one. Every connection sees a gapless run of chunks from seq
// 0 (replay, then live) without duplicates; every connection but the last
// is kicked; the last one sees every chunk and the result exactly once.
func TestFlappingResume(t *testing.T) {
	for _, b := range sharedBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			nodes := []*Manager{b.openManager(t, "A", testLimits), b.openManager(t, "B", testLimits), b.openManager(t, "C", testLimits)}
			const n = 40
			first := &fakeOutlet{}
			id, _ := attach(t, nodes[0], "alice", "", first)
			produced := make(chan int, n)
			// The request ends only once the last connection attached:
			// under load the attaches can fall behind the 20 ms chunks,
			// and a resume after the end gets the result from the log
			// and, rightly, no chunks (no request streams any more).
			hold := make(chan struct{})
			release := sync.OnceFunc(func() { close(hold) })
			defer release()
			done := produceHeld(nodes[0], id, "r1", n, produced, hold)
			outlets := []*fakeOutlet{first}
			for i := 1; ; i++ {
				waitSeq(t, produced, min(3*i, n-1))
				if 3*i >= n-1 {
					break
				}
				o := &fakeOutlet{}
				attach(t, nodes[i%3], "alice", id, o)
				outlets = append(outlets, o)
			}
			release()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("request did not end")
			}
			last := outlets[len(outlets)-1]
			eventually(t, 5*time.Second, "no result on the last connection", func() bool {
				_, r := seqsOf(t, last.got(), "r1")
				return r
			})
			for i, o := range outlets {
				seqs, result := seqsOf(t, o.got(), "r1")
				for j, s := range seqs {
					if s != j {
						t.Fatalf("connection %d: chunk seqs %v: want 0,1,2,... without gaps or repeats", i, seqs)
					}
				}
				if i < len(outlets)-1 && !o.wasKicked() {
					t.Errorf("connection %d of %d not kicked", i, len(outlets))
				}
				if i == len(outlets)-1 && (len(seqs) != n || !result) {
					t.Fatalf("last connection: %d chunks, result %v; want %d and the result: %s", len(seqs), result, n, fmt.Sprint(o.got()))
				}
			}
			t.Logf("%d connections over 3 replicas", len(outlets))
		})
	}
}

// TestFlappingResumeManyRequests: three requests of one session run on
// three replicas at once while the client keeps moving between them. Each
// connection sees, per request, a gapless run of chunks from seq 0; the
// last one sees every chunk of every request once, then its result.
func TestFlappingResumeManyRequests(t *testing.T) {
	for _, b := range sharedBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			nodes := []*Manager{b.openManager(t, "A", testLimits), b.openManager(t, "B", testLimits), b.openManager(t, "C", testLimits)}
			const n = 40
			var outlets []*fakeOutlet
			id := ""
			var dones []chan struct{}
			produced := make([]chan int, len(nodes))
			// The requests end after the last attach (see TestFlappingResume).
			hold := make(chan struct{})
			release := sync.OnceFunc(func() { close(hold) })
			defer release()
			for i, m := range nodes { // each request begins where the connection is
				o := &fakeOutlet{}
				id, _ = attach(t, m, "alice", id, o)
				outlets = append(outlets, o)
				produced[i] = make(chan int, n)
				dones = append(dones, produceHeld(m, id, fmt.Sprintf("r%d", i), n, produced[i], hold))
			}
			for i := 0; ; i++ {
				waitSeq(t, produced[0], min(4+3*i, n-1))
				if 4+3*i >= n-12 {
					break
				}
				o := &fakeOutlet{}
				attach(t, nodes[i%3], "alice", id, o)
				outlets = append(outlets, o)
			}
			release()
			for _, d := range dones {
				select {
				case <-d:
				case <-time.After(10 * time.Second):
					t.Fatal("request did not end")
				}
			}
			last := outlets[len(outlets)-1]
			eventually(t, 5*time.Second, "results missing on the last connection", func() bool {
				return countPrefix(last.got(), `{"type":"result"`) == len(nodes)
			})
			for i, o := range outlets {
				for r := range nodes {
					req := fmt.Sprintf("r%d", r)
					seqs, result := seqsOf(t, o.got(), req)
					for j, s := range seqs {
						if s != j {
							t.Fatalf("connection %d, %s: chunk seqs %v, want a gapless run from 0", i, req, seqs)
						}
					}
					if o == last && (len(seqs) != n || !result) {
						t.Fatalf("last connection, %s: %d chunks, result %v; want %d and the result", req, len(seqs), result, n)
					}
				}
				if o != last && !o.wasKicked() {
					t.Errorf("connection %d of %d not kicked", i, len(outlets))
				}
			}
			t.Logf("%d connections over 3 replicas, 3 requests", len(outlets))
		})
	}
}

// gatedHolder holds Store.Holder (the once-per-stream lookup of
// Stream.Chunk) until release is closed, after saying so on entered.
type gatedHolder struct {
	Store
	entered chan struct{}
	release chan struct{}
}

func (g *gatedHolder) Holder(ctx context.Context, id string) (Holder, error) {
	g.entered <- struct{}{}
	<-g.release
	return g.Store.Holder(ctx, id)
}

// TestResumeWhileChunkRouted: a resume that takes the session while a
// chunk of one of its requests is being routed (here: held in the
// stream's store lookup of the holder) replays the chunk or lets it come
// live after the replay, never both. The resume is on the request's node
// (Bind replays the stream) or on another replica (the bus attach
// replays it there). Before the chunk was recorded and routed in one
// critical section, the chunk recorded before the lookup was in the
// resume's replay and then sent again: seqs 0,0,1.
func TestResumeWhileChunkRouted(t *testing.T) {
	for _, b := range sharedBackends(t) {
		for _, where := range []string{"same node", "other node"} {
			t.Run(b.name+"/"+where, func(t *testing.T) {
				a, other := b.openManager(t, "A", testLimits), b.openManager(t, "B", testLimits)
				gate := &gatedHolder{Store: a.store, entered: make(chan struct{}, 1), release: make(chan struct{})}
				a.store = gate // before any goroutine of a reads it
				// The session was on A, whose connection went: A has
				// neither a connection nor a remote holder for it, so
				// the first chunk of a request begun there asks the
				// store where the session is.
				o0 := &fakeOutlet{}
				id, _ := attach(t, a, "alice", "", o0)
				a.Detach(id, o0, o0.acked())
				s := a.Begin(id, "r1")
				chunked := make(chan struct{})
				go func() {
					defer close(chunked)
					s.Chunk(chunkMsg("r1", 0))
				}()
				select {
				case <-gate.entered:
				case <-time.After(5 * time.Second):
					t.Fatal("the first chunk did not look the holder up")
				}
				to := a
				if where == "other node" {
					to = other
				}
				o1 := &fakeOutlet{}
				attach(t, to, "alice", id, o1) // on B: returns once A replayed (its ack)
				close(gate.release)
				<-chunked
				s.Chunk(chunkMsg("r1", 1))
				s.End(resultMsg("r1"))
				eventually(t, 5*time.Second, "no result on the resumed connection", func() bool {
					_, r := seqsOf(t, o1.got(), "r1")
					return r
				})
				if seqs, _ := seqsOf(t, o1.got(), "r1"); !slices.Equal(seqs, []int{0, 1}) {
					t.Fatalf("resumed connection: chunk seqs %v, want [0 1]: %q", seqs, o1.got())
				}
			})
		}
	}
}
