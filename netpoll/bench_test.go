package netpoll

import (
	"io"
	"testing"
	"time"
)

// TestEchoNoAlloc backs the claim that a message costs the engine no
// allocation on its way through: read, decode, OnMessage, Send and the
// write. The client side reads into a reused buffer, so that every
// allocation counted is the engine's.
func TestEchoNoAlloc(t *testing.T) {
	e, err := New(Config{}, newEchoHandler(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ln := listenForBench(t)
	go e.Serve(ln)
	c := dialWS(t, ln.Addr().String())
	defer c.nc.Close() // before e.Close, which would wait for a close frame
	payload := `{"type":"echo","id":"1","data":{"hello":"world"}}`
	msg := text(payload)
	echo := make([]byte, 2+len(payload))
	round := func() {
		if _, err := c.nc.Write(msg); err != nil {
			t.Fatalf("write: %v", err)
		}
		if _, err := io.ReadFull(c.br, echo); err != nil {
			t.Fatalf("read echo: %v", err)
		}
	}
	round()
	if got := string(echo[2:]); got != payload {
		t.Fatalf("echo = %q, want %q", got, payload)
	}
	if allocs := testing.AllocsPerRun(1000, round); allocs != 0 {
		t.Fatalf("an echoed message allocates %v times, want 0", allocs)
	}
}

// BenchmarkEchoRoundTrip measures one small text message through the engine
// and back (client write, epoll, worker, decode, OnMessage, Send, client
// read) over loopback.
func BenchmarkEchoRoundTrip(b *testing.B) {
	h := newEchoHandler()
	e, err := New(Config{}, h, nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	ln := listenForBench(b)
	go e.Serve(ln)
	c := dialWS(b, ln.Addr().String())
	msg := text(`{"type":"echo","id":"1","data":{}}`)
	b.ReportAllocs()
	for b.Loop() {
		c.write(msg)
		if _, _, err := c.readFrame(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	c.nc.SetDeadline(time.Now().Add(time.Second))
}

// BenchmarkHandshake measures accept, request head, admission and 101.
func BenchmarkHandshake(b *testing.B) {
	e, err := New(Config{}, newEchoHandler(), nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	ln := listenForBench(b)
	go e.Serve(ln)
	b.ReportAllocs()
	for b.Loop() {
		c := dialWS(b, ln.Addr().String())
		c.nc.Close()
	}
}
