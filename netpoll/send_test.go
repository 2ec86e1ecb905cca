package netpoll

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestConcurrentSend sends from several goroutines at once while the client
// reads slowly at first, so that both the direct write and the queued path
// run; every frame must arrive whole and in per-goroutine order.
func TestConcurrentSend(t *testing.T) {
	h := newEchoHandler()
	_, addr := startEngine(t, Config{}, h, acceptAll{}, nil)
	c := dialWS(t, addr)
	sc := h.waitOpen(t)
	const senders, each = 4, 500
	var wg sync.WaitGroup
	for g := range senders {
		wg.Go(func() {
			for i := range each {
				msg := fmt.Sprintf("%d:%d:%0200d", g, i, i)
				if err := sc.Send([]byte(msg)); err != nil {
					t.Errorf("Send: %v", err)
					return
				}
			}
		})
	}
	next := make([]int, senders)
	for range senders * each {
		hd, p, err := c.readFrame()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var g, i, pad int
		if _, err := fmt.Sscanf(string(p), "%d:%d:%d", &g, &i, &pad); err != nil || hd.OpCode != ws.OpText {
			t.Fatalf("frame %v %q: %v", hd.OpCode, p, err)
		}
		if i != next[g] {
			t.Fatalf("sender %d: got message %d, want %d", g, i, next[g])
		}
		next[g]++
	}
	wg.Wait()
	if st := sc.Stats(); st.MsgsOut != senders*each || st.BytesOut == 0 {
		t.Fatalf("Stats = %+v, want %d messages out", st, senders*each)
	}
}

// valueGate accepts with a subprotocol and a value.
type valueGate struct{}

func (valueGate) Admit(r *Request) Decision {
	return Decision{Subprotocol: "orchestrator.v1", Value: "user-" + r.Header.Get("X-User")}
}

func TestAdmitSubprotocolAndValue(t *testing.T) {
	h := newEchoHandler()
	_, addr := startEngine(t, Config{}, h, valueGate{}, nil)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nX-User: ada\r\n" +
		"Sec-WebSocket-Protocol: orchestrator.v1\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	io.WriteString(nc, req)
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Protocol") != "orchestrator.v1" {
		t.Fatalf("got %d protocol %q, want 101 orchestrator.v1", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Protocol"))
	}
	c := h.waitOpen(t)
	if c.Value() != "user-ada" || !c.Remote().IsValid() || time.Since(c.Since()) > 5*time.Second || c.ID() == 0 {
		t.Fatalf("conn value %v remote %v since %v id %d", c.Value(), c.Remote(), c.Since(), c.ID())
	}
}

// TestPipelinedEchoCoalesced writes many frames in one TCP write, so that
// one read pass calls OnMessage for each: the first echo goes out at once,
// the rest are queued and written together at the end of the pass. Every
// echo must arrive whole and in order, small and large (over maxCorked,
// written at once) mixed.
func TestPipelinedEchoCoalesced(t *testing.T) {
	h := newEchoHandler()
	_, addr := startEngine(t, Config{}, h, acceptAll{}, nil)
	c := dialWS(t, addr)
	h.waitOpen(t)
	var batch []byte
	var want []string
	for i := range 200 {
		n := 10 + i%7
		if i%50 == 7 {
			n = maxCorked + 100
		}
		msg := fmt.Sprintf("%04d:%s", i, strings.Repeat("x", n))
		want = append(want, msg)
		batch = append(batch, text(msg)...)
	}
	c.write(batch)
	for i, w := range want {
		_, p, err := c.readFrame()
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if string(p) != w {
			t.Fatalf("echo %d = %.20q..., want %.20q...", i, p, w)
		}
	}
}
