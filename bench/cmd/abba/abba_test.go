package main

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/orchestratord/orchestratord/daemon/auth"
	"github.com/orchestratord/orchestratord/daemon/config"
)

func TestProtoRaw(t *testing.T) {
	p, err := newProto(false, 1024)
	if err != nil {
		t.Fatal(err)
	}
	req := p.request(nil, 42)
	if len(req) != 1024 {
		t.Fatalf("request is %d bytes", len(req))
	}
	if seq, err := p.answer(req); err != nil || seq != 42 {
		t.Fatalf("echo of the request: seq %d, %v", seq, err)
	}
	bad := append([]byte(nil), req...)
	bad[500] ^= 1
	if _, err := p.answer(bad); !errors.Is(err, errMismatch) {
		t.Fatalf("a flipped byte: %v", err)
	}
	if _, err := p.answer(req[:1023]); !errors.Is(err, errMismatch) {
		t.Fatalf("a short echo: %v", err)
	}
}

func TestProtoDaemon(t *testing.T) {
	p, err := newProto(true, 1024)
	if err != nil {
		t.Fatal(err)
	}
	req := p.request(nil, 7)
	if len(req) != 1024 || !strings.HasPrefix(string(req), `{"type":"echo","id":"00000000000000000007","data":"abc`) ||
		!strings.HasSuffix(string(req), `"}`) {
		t.Fatalf("request %d bytes: %.80s…", len(req), req)
	}
	data := string(p.field[len(`"data":`):])
	res := `{"type":"result","id":"00000000000000000007","pos":3,"data":` + data + `}`
	if seq, err := p.answer([]byte(res)); err != nil || seq != 7 {
		t.Fatalf("result: seq %d, %v", seq, err)
	}
	if _, err := p.answer([]byte(`{"type":"result","id":"00000000000000000007","pos":3,"data":"abd"}`)); !errors.Is(err, errMismatch) {
		t.Fatalf("other data: %v", err)
	}
	if _, err := p.answer([]byte(`{"type":"error","id":"00000000000000000007","code":"overloaded"}`)); err == nil || errors.Is(err, errOther) {
		t.Fatalf("an error terminal: %v", err)
	}
	if _, err := p.answer([]byte(`{"type":"pong","id":"x"}`)); !errors.Is(err, errOther) {
		t.Fatalf("a pong: %v", err)
	}
	if _, err := newProto(true, 53); err == nil {
		t.Fatal("a 53-byte envelope cannot hold id and data")
	}
}

// The daemon's own verifier accepts the token this tool signs by hand.
func TestMintHS256AcceptedByDaemon(t *testing.T) {
	secret := "test-secret-0123456789abcdef-0123456789"
	v, err := auth.NewVerifier(context.Background(), config.Auth{JWT: config.JWT{Algorithms: []string{"HS256"}, Secret: secret}},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := mintHS256([]byte(secret), "abba", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(tok)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if id.User != "abba" {
		t.Fatalf("identity %+v", id)
	}
	if _, err := v.Verify(tok[:len(tok)-2] + "AA"); err == nil {
		t.Fatal("a bad signature was accepted")
	}
}

func TestPercentilesAndSpread(t *testing.T) {
	var ns []int64
	for i := 1; i <= 1000; i++ {
		ns = append(ns, int64(i)*1e6) // 1..1000 ms, shuffled below
	}
	for i := range ns {
		j := (i * 7919) % len(ns)
		ns[i], ns[j] = ns[j], ns[i]
	}
	l := percentiles(ns)
	if l.P50 != 500 || l.P99 != 990 || l.P999 != 999 || l.Max != 1000 || l.Count != 1000 {
		t.Fatalf("%+v", l)
	}
	if s, ok := spreadOf([]float64{1.3, 0.9, math.NaN(), 1.1, 1.0}); !ok || s.med != 1.05 || s.lo != 0.9 || s.hi != 1.3 {
		t.Fatalf("%+v %v", s, ok)
	}
	if _, ok := spreadOf([]float64{math.NaN()}); ok {
		t.Fatal("no ratio, no spread")
	}
	g := goal{bound: 1.2, atLeast: true}
	if g.judge(spread{med: 1.25, lo: 1.21, hi: 1.3}) != "met in every pair" || g.judge(spread{med: 1.25, lo: 1.1, hi: 1.3}) != "met by the median, not in every pair" ||
		g.judge(spread{med: 1.1, lo: 1.0, hi: 1.3}) != "missed" {
		t.Fatal("judge")
	}
}

func TestParseSources(t *testing.T) {
	ips, err := parseSources("127.0.0.2-127.0.0.4")
	if err != nil || len(ips) != 3 || ips[2].String() != "127.0.0.4" {
		t.Fatalf("%v %v", ips, err)
	}
	for _, bad := range []string{"127.0.0.4-127.0.0.2", "127.0.1.2-127.0.0.4", "x"} {
		if _, err := parseSources(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

type gwsEcho struct{ gws.BuiltinEventHandler }

func (gwsEcho) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	_ = c.WriteMessage(m.Opcode, m.Bytes())
}

// corrupt flips a byte of every 50th echo.
type corrupt struct {
	gws.BuiltinEventHandler
	n atomic.Int64
}

func (h *corrupt) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	b := append([]byte(nil), m.Bytes()...)
	if h.n.Add(1)%50 == 0 {
		b[len(b)-1] ^= 1
	}
	_ = c.WriteMessage(m.Opcode, b)
}

func echoServer(t *testing.T, h gws.Event) string {
	up := gws.NewUpgrader(h, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r)
		if err != nil {
			return
		}
		go c.ReadLoop()
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

// Both loops against a real (in-process) gws echo server: every answer is
// checked and counted inside its window, and the open loop keeps its rate.
func TestLoopsAgainstEcho(t *testing.T) {
	d := &dialer{url: echoServer(t, gwsEcho{})}
	conns, err := d.connectAll(context.Background(), 20, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(conns)
	p, _ := newProto(false, 1024)

	var stop atomic.Bool
	now := time.Now()
	w := window{start: now.Add(100 * time.Millisecond), end: now.Add(400 * time.Millisecond)}
	time.AfterFunc(500*time.Millisecond, func() { stop.Store(true) })
	var n int64
	for _, tl := range closedLoop(conns, p, w, 5, &stop) {
		if len(tl.errs) > 0 {
			t.Fatalf("closed loop: %v", tl.errs)
		}
		n += tl.n
		if int64(len(tl.lat)) != tl.n {
			t.Fatal("one latency per counted answer")
		}
	}
	if n < 20 {
		t.Fatalf("closed loop: %d answers in 300 ms", n)
	}

	base := time.Now().Add(20 * time.Millisecond)
	w = window{start: base.Add(200 * time.Millisecond), end: base.Add(700 * time.Millisecond)}
	var sent, got int64
	for _, tl := range openLoop(conns, p, base, w, 2000) {
		if len(tl.errs) > 0 {
			t.Fatalf("open loop: %v", tl.errs)
		}
		sent += tl.sent
		got += tl.n
	}
	// 2000/s over 20 connections for 0.7 s: 70 each on schedule; about
	// 0.5 s of the answers counted (a stall of the loaded test machine
	// moves some out of the window).
	if sent != 1400 || got < 500 || got > 1200 {
		t.Fatalf("open loop: sent %d, counted %d", sent, got)
	}
}

func TestLoopsCatchBadEchoes(t *testing.T) {
	d := &dialer{url: echoServer(t, &corrupt{})}
	conns, err := d.connectAll(context.Background(), 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(conns)
	p, _ := newProto(false, 1024)
	var stop atomic.Bool
	time.AfterFunc(2*time.Second, func() { stop.Store(true) })
	now := time.Now()
	var errs int64
	for _, tl := range closedLoop(conns, p, window{start: now, end: now.Add(time.Hour)}, 0, &stop) {
		for k, v := range tl.errs {
			if k != errMismatch.Error() {
				t.Errorf("error %q", k)
			}
			errs += v
		}
	}
	if errs != 4 {
		t.Fatalf("%d connections stopped on a bad echo, want all 4", errs)
	}
}

// An open-loop run that fell behind the rate takes its pair out of the
// open-loop ratios, not out of the closed-loop ones.
func TestFellBehindLeavesPairOut(t *testing.T) {
	run := func(perCPU, p50 float64) *runResult {
		return &runResult{Closed: &phase{PerServerCPUs: perCPU}, Open: &phase{CPUPer100k: 1, Lat: latency{P50: p50}}}
	}
	c := &comparison{Pairs: []*pair{
		{Order: "AB", A: run(120, 0.5), B: run(100, 0.6)},
		{Order: "BA", A: run(110, 0.5), B: run(100, 400)},
	}}
	var closed, open metric
	for _, m := range metrics {
		switch m.name {
		case "msgs per server CPU-s (closed)":
			closed = m
		case "server CPU-s per 100k msgs (open)":
			open = m
		}
	}
	if r := closed.ratios(c, 10); len(r) != 2 || math.Abs(r[0]-1.2) > 1e-9 || math.Abs(r[1]-1.1) > 1e-9 {
		t.Fatalf("closed %v", r)
	}
	if r := open.ratios(c, 10); len(r) != 2 || r[0] != 1 || !math.IsNaN(r[1]) {
		t.Fatalf("open %v", r)
	}
	if r := open.ratios(c, 0); !(r[1] == 1) {
		t.Fatalf("open without the rule %v", r)
	}
	md := markdown(&report{Conns: 1000, Inflight: 200, BehindMs: 10, Comparisons: []*comparison{c}})
	if !strings.Contains(md, "(fell behind)") || !strings.Contains(md, "1 open-loop run(s) fell behind") {
		t.Fatalf("markdown does not say which run fell behind:\n%s", md)
	}
}
