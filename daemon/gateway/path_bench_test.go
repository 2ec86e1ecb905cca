package gateway

import (
	"log/slog"
	"net/netip"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/backends"
	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/dispatch"
	"github.com/orchestratord/orchestratord/daemon/sessions"
	"github.com/orchestratord/orchestratord/daemon/telemetry"
	"github.com/orchestratord/orchestratord/netpoll"
)

// sinkWS is a connection that takes every message and keeps none: what
// the daemon costs per message above the engine, without the engine.
type sinkWS struct {
	remote netip.AddrPort
	n      atomic.Int64
	last   atomic.Uint64 // the newest terminal's position
}

func (c *sinkWS) Send(msg []byte) error {
	c.n.Add(1)
	return nil
}

func (c *sinkWS) SendTagged(msg []byte, pos uint64) error {
	c.n.Add(1)
	c.last.Store(pos)
	return nil
}

func (c *sinkWS) Queued() int                                  { return 0 }
func (c *sinkWS) NotifyDrained(int, func())                    {}
func (c *sinkWS) Acked() uint64                                { return 0 }
func (c *sinkWS) Close(netpoll.CloseCode, string)              {}
func (c *sinkWS) CloseAt(time.Time, netpoll.CloseCode, string) {}
func (c *sinkWS) ID() uint64                                   { return 1 }
func (c *sinkWS) Client() netip.AddrPort                       { return c.remote }
func (c *sinkWS) Since() time.Time                             { return time.Time{} }
func (c *sinkWS) Stats() netpoll.ConnStats                     { return netpoll.ConnStats{} }

// benchDaemon wires the daemon as serve does with the benchmark config
// (bench/config/daemon.yaml: memory store, the inline echo route, real
// metrics), except the engine and the gate: the connection is a sinkWS.
func benchDaemon(b *testing.B) (*Gateway, *conn, *sinkWS) {
	b.Helper()
	cfg, err := config.Load("../../bench/config/daemon.yaml", []string{"ORCH_JWT_SECRET=bench-secret-0123456789abcdef0123"})
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	metrics := telemetry.New("bench")
	mgr, err := sessions.OpenOptions(b.Context(), cfg.Sessions, "bench-1", log, sessions.Options{PaceBytes: cfg.WS.OutboundQueueBytes / 2})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = mgr.Close() })
	set, err := backends.New(cfg.Backends, func(string) (string, bool) { return "", false }, log, backends.WithMeter(metrics))
	if err != nil {
		b.Fatal(err)
	}
	table, err := dispatch.NewTable(cfg, set)
	if err != nil {
		b.Fatal(err)
	}
	router := dispatch.New(table, DispatchSessions(mgr, metrics), metrics, log)
	g := New(Options{Node: cfg.Node, Heartbeat: cfg.WS.Heartbeat.D(), Path: cfg.WS.Path},
		&fakeGate{}, ManagerSessions(mgr), router, metrics, log)
	b.Cleanup(g.Close)
	d := g.Admit(&netpoll.Request{Path: "/ws", Remote: netip.MustParseAddrPort("127.0.0.2:1000")})
	st := d.Value.(*conn)
	ws := &sinkWS{remote: netip.MustParseAddrPort("127.0.0.2:1000")}
	g.open(st, ws)
	if attached(st) == nil {
		b.Fatal("never attached")
	}
	return g, st, ws
}

// BenchmarkMessagePath is one echo request of the load tool (1 KiB
// frame, no acks: the replay log stays full) through the daemon's layers
// above netpoll: the gateway's message handling, the JSON envelope,
// dispatch (rate bucket, route, inline echo), the result encoding and the
// session's terminal (position, replay log, delivery), with the metrics
// serve wires. docs/benchmarks.md, "The daemon's message path".
func BenchmarkMessagePath(b *testing.B) {
	g, st, ws := benchDaemon(b)
	pad := make([]byte, 1024-len(`{"type":"echo","id":"12345678","data":""}`))
	for i := range pad {
		pad[i] = 'a' + byte(i%26)
	}
	data := append(append([]byte(`"`), pad...), '"')
	frame := make([]byte, 0, 1100)
	id := uint64(0)
	b.SetBytes(1024)
	b.ReportAllocs()
	cpu0 := processCPU()
	for b.Loop() {
		id++
		frame = append(frame[:0], `{"type":"echo","id":"`...)
		frame = strconv.AppendUint(frame, id, 10)
		frame = append(frame, `","data":`...)
		frame = append(frame, data...)
		frame = append(frame, '}')
		g.message(st, frame)
	}
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
	if got := ws.last.Load(); got != id {
		b.Fatalf("last terminal at position %d, want %d", got, id)
	}
}

// processCPU returns the CPU time the process used (user and system, all
// threads, the GC's included), in nanoseconds: on a shared machine the
// time per op waits for a core, the CPU per op does not.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
