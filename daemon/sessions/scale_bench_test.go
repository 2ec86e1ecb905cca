package sessions

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/events"
	"github.com/orchestratord/orchestratord/daemon/internal/redistest"
)

// The benchmarks of docs/benchmarks.md "Past one Redis" and the sizing
// figures of docs/deploy.md: a standalone redis-server and the 3-master
// Redis Cluster, both started here on this machine, measured in the same
// run (the shared Redis at 6379 carries other people's load).

// scaleBackends: the single server and the Cluster, started by the test.
// The single server is returned too, for its CPU counters.
func scaleBackends(b *testing.B) ([]backend, *redistest.Single) {
	s := redistest.StartSingleT(b, benchPorts)
	bs := []backend{{name: "single", redis: true, addr: s.Addr, prefix: randomPrefix()}}
	if c := testCluster(b); c != nil {
		bs = append(bs, backend{name: "cluster", redis: true, url: c.URL(), prefix: randomPrefix()})
	}
	return bs, s
}

// scaleLimits are the production defaults (config.Default).
var scaleLimits = config.Sessions{TTL: config.Duration(24 * time.Hour), OutboxMax: 100, HistoryMaxTurns: 20}

func scaleManager(b *testing.B, be backend, node string) *Manager {
	m, err := OpenOptions(b.Context(), be.cfg(scaleLimits), node, testLog(b), Options{Redis: RedisOptions{Prefix: be.prefix}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

func scaleSessions(b *testing.B, m *Manager, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		id, _, err := m.Attach(b.Context(), "alice", "", Resume{}, discard{}, welcomeFn)
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = id
	}
	return ids
}

// BenchmarkScaleResume: resumes of 256 sessions, alternating between two
// replicas (each resume claims the session in the store, kicks the other
// replica's connection over the bus and waits for its ack), from 16
// goroutines per CPU.
func BenchmarkScaleResume(b *testing.B) {
	bes, single := scaleBackends(b)
	for _, be := range bes {
		b.Run(be.name, func(b *testing.B) {
			ms := [2]*Manager{scaleManager(b, be, "A"), scaleManager(b, be, "B")}
			ids := scaleSessions(b, ms[0], 256)
			// On the single server the CPU is the store and bus work of a
			// resume: claim script, PUBLISH of the attach, the other node's
			// ack.
			runScaleParallel(b, be, single, ids, "resumes/s", func(k int64, id string) error {
				if _, resumed, err := ms[(k/int64(len(ids)))%2].Attach(context.Background(), "alice", id, Resume{}, discard{}, welcomeFn); err != nil || !resumed {
					return fmt.Errorf("resume %s: resumed=%v %v", id, resumed, err)
				}
				return nil
			})
		})
	}
}

// runScaleParallel is the measured part of the scale benchmarks: op from
// 16 goroutines per CPU, the k-th call on session ids[k%len(ids)]; it
// reports calls per second as unit and, on the single server, that
// server's CPU per call. What was set up before is not measured.
func runScaleParallel(b *testing.B, be backend, single *redistest.Single, ids []string, unit string, op func(k int64, id string) error) {
	var next atomic.Int64
	b.SetParallelism(16)
	_, _, _, _, cpu0 := redisStats(b, single)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := next.Add(1)
			if err := op(k, ids[k%int64(len(ids))]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), unit)
	if be.name == "single" {
		_, _, _, _, cpu1 := redisStats(b, single)
		b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "redis-cpu-µs/op")
	}
}

// BenchmarkScaleRequest: the store work of a chat request, from 16
// goroutines per CPU on 256 sessions: Get (context + history), Touch,
// Begin/End delivered live, AppendHistory of the two turns.
func BenchmarkScaleRequest(b *testing.B) {
	bes, single := scaleBackends(b)
	for _, be := range bes {
		b.Run(be.name, func(b *testing.B) {
			m := scaleManager(b, be, "A")
			ids := scaleSessions(b, m, 256)
			result := resultMsg("r1")
			turns := []events.Turn{{Role: "user", Content: "what is the capital of France?"}, {Role: "assistant", Content: "Paris."}}
			runScaleParallel(b, be, single, ids, "requests/s", func(k int64, id string) error {
				if _, err := m.Get(context.Background(), id); err != nil {
					return err
				}
				m.Touch(id)
				m.Begin(id, "r"+strconv.FormatInt(k, 10)).End(result)
				return m.AppendHistory(context.Background(), id, turns)
			})
		})
	}
}

// BenchmarkScaleChunkRelay: one chunk of a request on replica A whose
// connection is on replica B, over each bus: Redis pub/sub on the single
// server, core NATS, sharded pub/sub on the Cluster.
func BenchmarkScaleChunkRelay(b *testing.B) {
	var bes []backend
	all, _ := scaleBackends(b)
	for _, be := range all {
		bes = append(bes, be)
		if be.name == "single" && haveNATS(b) {
			bes = append(bes, backend{name: "single/nats-bus", redis: true, addr: be.addr, prefix: randomPrefix(), bus: "nats"})
		}
	}
	for _, be := range bes {
		b.Run(be.name, func(b *testing.B) {
			a, bb := scaleManager(b, be, "A"), scaleManager(b, be, "B")
			relayChunks(b, a, bb, scaleSessions(b, a, 1)[0])
		})
	}
}

// redisStats reads the counters of a standalone server; cpu is its
// user+system CPU time in microseconds.
func redisStats(b *testing.B, s *redistest.Single) (cmds, in, out, mem, cpu int64) {
	b.Helper()
	v := map[string]int64{}
	var cpuS float64
	for _, sec := range []string{"stats", "memory", "cpu"} {
		o, err := s.Cli("INFO", sec)
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(o, "\n") {
			if k, val, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
				n, _ := strconv.ParseInt(val, 10, 64)
				v[k] = n
				if k == "used_cpu_sys" || k == "used_cpu_user" {
					f, _ := strconv.ParseFloat(val, 64)
					cpuS += f
				}
			}
		}
	}
	return v["total_commands_processed"], v["total_net_input_bytes"], v["total_net_output_bytes"], v["used_memory"], int64(cpuS * 1e6)
}

// BenchmarkScaleStoreTraffic: what one operation costs the store, on a
// standalone server of its own: commands (round trips are fewer: each
// operation is one pipelined round trip or one script) and bytes in and
// out per operation. A chat request is Get + Touch + AppendHistory of two
// turns; a resume is a Claim on the node that held the session.
func BenchmarkScaleStoreTraffic(b *testing.B) {
	turns := []events.Turn{{Role: "user", Content: "what is the capital of France?"}, {Role: "assistant", Content: "Paris."}}
	ops := []struct {
		name string
		op   func(m *Manager, id string) error
	}{
		{"create", func(m *Manager, _ string) error {
			_, err := m.Store().Create(context.Background(), "alice")
			return err
		}},
		{"resume", func(m *Manager, id string) error {
			_, _, err := m.Attach(context.Background(), "alice", id, Resume{}, discard{}, welcomeFn)
			return err
		}},
		{"chat_request", func(m *Manager, id string) error {
			if _, err := m.Get(context.Background(), id); err != nil {
				return err
			}
			if err := m.Store().Touch(context.Background(), id); err != nil {
				return err
			}
			return m.AppendHistory(context.Background(), id, turns)
		}},
	}
	srv := redistest.StartSingleT(b, benchPorts+100)
	be := backend{name: "single", redis: true, addr: srv.Addr, prefix: randomPrefix()}
	for _, o := range ops {
		b.Run(o.name, func(b *testing.B) {
			m := scaleManager(b, be, "A")
			id := scaleSessions(b, m, 1)[0]
			c0, i0, o0, _, u0 := redisStats(b, srv)
			for b.Loop() {
				if err := o.op(m, id); err != nil {
					b.Fatal(err)
				}
			}
			c1, i1, o1, _, u1 := redisStats(b, srv)
			n := float64(b.N)
			b.ReportMetric((float64(c1-c0)-1)/n, "cmds/op") // -1: the INFO itself
			b.ReportMetric(float64(i1-i0)/n, "in-B/op")
			b.ReportMetric(float64(o1-o0)/n, "out-B/op")
			b.ReportMetric(float64(u1-u0)/n, "redis-cpu-µs/op")
		})
	}
}

// BenchmarkScaleSessionMemory: Redis memory per session (used_memory
// growth per session, and MEMORY USAGE of one session's keys), idle (just
// created and claimed) and with a full history of 20 turns of ~100 bytes;
// and the Manager's Go heap per attached session.
func BenchmarkScaleSessionMemory(b *testing.B) {
	hist := make([]events.Turn, 20)
	for i := range hist {
		hist[i] = events.Turn{Role: []string{"user", "assistant"}[i%2], Content: strings.Repeat("x", 80) + fmt.Sprintf(" turn %d", i)}
	}
	for _, withHistory := range []bool{false, true} {
		name := "idle"
		if withHistory {
			name = "history_20_turns"
		}
		b.Run(name, func(b *testing.B) {
			srv := redistest.StartSingleT(b, benchPorts+200)
			be := backend{name: "single", redis: true, addr: srv.Addr, prefix: randomPrefix()}
			m := scaleManager(b, be, "A")
			var ids []string
			runtime.GC()
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			_, _, _, mem0, _ := redisStats(b, srv)
			for b.Loop() {
				id, _, err := m.Attach(context.Background(), "alice", "", Resume{}, discard{}, welcomeFn)
				if err != nil {
					b.Fatal(err)
				}
				if withHistory {
					if err := m.AppendHistory(context.Background(), id, hist); err != nil {
						b.Fatal(err)
					}
				}
				ids = append(ids, id)
			}
			_, _, _, mem1, _ := redisStats(b, srv)
			runtime.GC()
			runtime.ReadMemStats(&ms1)
			var usage int64
			for _, k := range []string{be.prefix + "{" + ids[0] + "}", be.prefix + "{" + ids[0] + "}:h", be.prefix + "{" + ids[0] + "}:n", be.prefix + "{" + ids[0] + "}:l"} {
				if o, err := srv.Cli("MEMORY", "USAGE", k, "SAMPLES", "0"); err == nil {
					n, _ := strconv.ParseInt(o, 10, 64)
					usage += n
				}
			}
			b.ReportMetric(float64(mem1-mem0)/float64(b.N), "redis-B/session")
			b.ReportMetric(float64(usage), "memory-usage-B")
			b.ReportMetric(float64(int64(ms1.HeapInuse)-int64(ms0.HeapInuse))/float64(b.N), "go-heap-B/session")
			runtime.KeepAlive(ids)
		})
	}
}
