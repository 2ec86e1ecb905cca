package netpoll

import (
	"testing"
	"time"
)

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
