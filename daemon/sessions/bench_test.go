package sessions

import (
	"log/slog"

	"context"
	"fmt"
	"github.com/orchestratord/orchestratord/daemon/config"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// discard is an Outlet that accepts everything.
type discard struct{}

func (discard) Send([]byte) error                 { return nil }
func (discard) SendTerminal([]byte, uint64) error { return nil }
func (discard) Queued() int                       { return 0 }
func (discard) NotifyDrained(_ int, fn func())    { fn() }
func (discard) Kick()                             {}
func (discard) Cut()                              {}
func (discard) Acked() uint64                     { return 0 }

// benchBackends: the memory store and the real Redis in the same run.
func benchBackends(b *testing.B) []backend {
	bs := []backend{{name: "memory"}}
	if c, err := net.DialTimeout("tcp", realRedis, time.Second); err == nil {
		c.Close()
		p := randomPrefix()
		cleanupPrefix(b, realRedis, p)
		bs = append(bs, backend{name: "redis", redis: true, addr: realRedis, prefix: p})
	} else {
		b.Logf("no Redis at %s: memory only", realRedis)
	}
	return bs
}

func benchManager(b *testing.B, be backend) (*Manager, string) {
	m, err := OpenOptions(b.Context(), be.cfg(testLimits), "bench", testLog(b), Options{Redis: RedisOptions{Prefix: be.prefix}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	id, _, err := m.Attach(b.Context(), "alice", "", Resume{}, discard{}, welcomeFn)
	if err != nil {
		b.Fatal(err)
	}
	return m, id
}

// BenchmarkRequestPath is the session work of one request on the message
// path, connection attached on this node: Get (context + history for the
// backend), Touch (debounced), Begin, End delivered live (no outbox).
func BenchmarkRequestPath(b *testing.B) {
	for _, be := range benchBackends(b) {
		b.Run(be.name, func(b *testing.B) {
			m, id := benchManager(b, be)
			ctx := context.Background()
			result := resultMsg("r1")
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Get(ctx, id); err != nil {
					b.Fatal(err)
				}
				m.Touch(id)
				s := m.Begin(id, "r1")
				s.End(result)
			}
		})
	}
}

// BenchmarkChunkLocal is one chunk of a request whose connection is on the
// same node: no store or bus work, whatever the store.
func BenchmarkChunkLocal(b *testing.B) {
	for _, be := range benchBackends(b) {
		b.Run(be.name, func(b *testing.B) {
			m, id := benchManager(b, be)
			chunk := chunkMsg("r1", 1)
			s := m.Begin(id, "r1")
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				if n++; n == replayMaxChunks { // keep the replay buffer from growing into its bound
					s.End(resultMsg("r1"))
					s, n = m.Begin(id, "r1"), 0
				}
				s.Chunk(chunk)
			}
			s.End(resultMsg("r1"))
		})
	}
}

// BenchmarkRequestPathParallel is BenchmarkRequestPath from many
// goroutines on many sessions: with Redis, rueidis pipelines the
// concurrent round trips on a few connections.
func BenchmarkRequestPathParallel(b *testing.B) {
	for _, be := range benchBackends(b) {
		b.Run(be.name, func(b *testing.B) {
			m, _ := benchManager(b, be)
			const sessions = 64
			ids := make([]string, sessions)
			for i := range ids {
				id, _, err := m.Attach(b.Context(), "alice", "", Resume{}, discard{}, welcomeFn)
				if err != nil {
					b.Fatal(err)
				}
				ids[i] = id
			}
			var next atomic.Int64
			result := resultMsg("r1")
			b.ReportAllocs()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				id := ids[next.Add(1)%sessions]
				req := fmt.Sprintf("r%d", next.Add(1))
				for pb.Next() {
					if _, err := m.Get(context.Background(), id); err != nil {
						b.Error(err)
						return
					}
					m.Touch(id)
					m.Begin(id, req).End(result)
				}
			})
		})
	}
}

// countOutlet counts what it is sent.
type countOutlet struct{ n atomic.Int64 }

func (o *countOutlet) Send([]byte) error                 { o.n.Add(1); return nil }
func (o *countOutlet) SendTerminal([]byte, uint64) error { o.n.Add(1); return nil }
func (o *countOutlet) Queued() int                       { return 0 }
func (o *countOutlet) NotifyDrained(_ int, fn func())    { fn() }
func (o *countOutlet) Kick()                             {}
func (o *countOutlet) Cut()                              {}
func (o *countOutlet) Acked() uint64                     { return 0 }

// BenchmarkChunkRelay is one chunk of a request running on replica A whose
// connection is on replica B: one PUBLISH round trip on A, delivered by
// B's bus goroutine.
func BenchmarkChunkRelay(b *testing.B) {
	var be backend
	for _, x := range benchBackends(b) {
		if x.redis {
			be = x
		}
	}
	if !be.redis {
		b.Skip("no Redis")
	}
	open := func(node string) *Manager {
		m, err := OpenOptions(b.Context(), be.cfg(testLimits), node, testLog(b), Options{Redis: RedisOptions{Prefix: be.prefix}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Close() })
		return m
	}
	a, bb := open("A"), open("B")
	id, _, err := a.Attach(b.Context(), "alice", "", Resume{}, discard{}, welcomeFn)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	relayChunks(b, a, bb, id)
}

// relayChunks is the measured loop of the chunk relay benchmarks: chunks
// of a request on a (a new request every replayMaxChunks chunks) for
// session id, attached on bb; then it waits until bb has delivered them
// all.
func relayChunks(b *testing.B, a, bb *Manager, id string) {
	s := a.Begin(id, "r1")
	out := &countOutlet{}
	if _, _, err := bb.Attach(b.Context(), "alice", id, Resume{}, out, welcomeFn); err != nil {
		b.Fatal(err)
	}
	chunk := chunkMsg("r1", 1)
	base := out.n.Load()
	n := 0
	b.ResetTimer() // the setup above is not measured
	for b.Loop() {
		if n++; n == replayMaxChunks {
			s.End(resultMsg("r1"))
			s, n = a.Begin(id, "r1"), 0
		}
		s.Chunk(chunk)
	}
	s.End(resultMsg("r1"))
	want := int64(b.N)
	eventually(b, 10*time.Second, "relayed chunks not all delivered on B", func() bool { return out.n.Load()-base >= want })
}

// BenchmarkEchoTerminal is what positions add to an inline echo answer
// with the memory store: "log" numbers, logs and sends it through
// Manager.Terminal; "send" only sends the same bytes (the path before
// positions). Same run, same message.
func BenchmarkEchoTerminal(b *testing.B) {
	m, err := OpenOptions(b.Context(), config.Sessions{ReplayMax: 100, ReplayBytes: 1 << 20}, "n1", slog.New(slog.DiscardHandler), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	id, _, err := m.Attach(b.Context(), "alice", "", Resume{}, discard{}, welcomeFn)
	if err != nil {
		b.Fatal(err)
	}
	msg := []byte(`{"type":"result","id":"42","data":{"text":"hello world"}}`)
	b.Run("send", func(b *testing.B) {
		b.ReportAllocs()
		var o Outlet = discard{}
		for b.Loop() {
			_ = o.SendTerminal(msg, 1)
		}
	})
	b.Run("log", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := m.Terminal(b.Context(), id, "42", msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}
