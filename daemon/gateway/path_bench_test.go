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
	g, sts, wss := benchDaemonConns(b, 1)
	return g, sts[0], wss[0]
}

// benchDaemonConns is benchDaemon with n attached connections, each its
// own session.
func benchDaemonConns(b *testing.B, n int) (*Gateway, []*conn, []*sinkWS) {
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
	var sts []*conn
	var wss []*sinkWS
	for i := range n {
		remote := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), uint16(1000+i))
		d := g.Admit(&netpoll.Request{Path: "/ws", Remote: remote})
		st := d.Value.(*conn)
		ws := &sinkWS{remote: remote}
		g.open(st, ws)
		if attached(st) == nil {
			b.Fatal("never attached")
		}
		sts, wss = append(sts, st), append(wss, ws)
	}
	return g, sts, wss
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

// BenchmarkMessagePathSessions is BenchmarkMessagePath over 1,000
// connections, each its own session, in turn (as the load tool's echo at
// 1,000 connections): the replay logs, 1,000 x 100 terminals of 1 KiB,
// are far larger than the caches, so each append writes cold memory as
// in the daemon (docs/benchmarks.md, "The replay log as a ring").
func BenchmarkMessagePathSessions(b *testing.B) {
	const n = 1000
	g, sts, wss := benchDaemonConns(b, n)
	pad := make([]byte, 1024-len(`{"type":"echo","id":"12345678","data":""}`))
	for i := range pad {
		pad[i] = 'a' + byte(i%26)
	}
	data := append(append([]byte(`"`), pad...), '"')
	frame := make([]byte, 0, 1100)
	send := func(i int, id uint64) {
		frame = append(frame[:0], `{"type":"echo","id":"`...)
		frame = strconv.AppendUint(frame, id, 10)
		frame = append(frame, `","data":`...)
		frame = append(frame, data...)
		frame = append(frame, '}')
		g.message(sts[i], frame)
	}
	// Fill every log first: the measured appends drop and refill.
	id := uint64(0)
	for range 100 {
		id++
		for i := range n {
			send(i, id)
		}
	}
	b.SetBytes(1024)
	b.ReportAllocs()
	cpu0 := processCPU()
	i := 0
	for b.Loop() {
		send(i, id+1)
		if i++; i == n {
			i, id = 0, id+1
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
	if got := wss[0].last.Load(); got < 100 {
		b.Fatalf("first session's last terminal at position %d, want >= 100", got)
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
