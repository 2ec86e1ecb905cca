package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// The client side of the check: gorilla/websocket's client (the project's
// engine and its load tool use gobwas/ws and their own frame code, so no
// frame parser is shared with the servers under test), one goroutine per
// connection in the closed loop, a writer and a reader goroutine per
// connection in the open loop.

// proto builds requests and checks answers for one kind of server: a bare
// echo server ("raw") or the daemon's JSON envelope with the echo route.
// Every request is exactly size bytes and carries a 20-digit sequence number
// that its answer must give back.
type proto struct {
	daemon bool
	size   int
	filler []byte // raw: the bytes after the sequence number; daemon: the data string
	field  []byte // daemon: `"data":"<filler>"`, searched in each answer
}

const seqDigits = 20

var (
	reqHead    = []byte(`{"type":"echo","id":"`)
	reqMid     = []byte(`","data":"`)
	reqTail    = []byte(`"}`)
	typeResult = []byte(`"type":"result"`)
	typeError  = []byte(`"type":"error"`)
	idKey      = []byte(`"id":"`)
)

func newProto(daemon bool, size int) (proto, error) {
	p := proto{daemon: daemon, size: size}
	n := size - seqDigits
	if daemon {
		n -= len(reqHead) + len(reqMid) + len(reqTail)
	}
	if n < 1 {
		return p, fmt.Errorf("payload %d bytes is too small (at least %d)", size, size-n+1)
	}
	p.filler = make([]byte, n)
	for i := range p.filler {
		p.filler[i] = 'a' + byte(i%26)
	}
	if daemon {
		p.field = append(append([]byte(`"data":"`), p.filler...), '"')
	}
	return p, nil
}

// request appends request number seq to dst[:0].
func (p proto) request(dst []byte, seq uint64) []byte {
	dst = dst[:0]
	if p.daemon {
		dst = append(dst, reqHead...)
	}
	dst = appendSeq(dst, seq)
	if p.daemon {
		dst = append(dst, reqMid...)
	}
	dst = append(dst, p.filler...)
	if p.daemon {
		dst = append(dst, reqTail...)
	}
	return dst
}

func appendSeq(dst []byte, seq uint64) []byte {
	var b [seqDigits]byte
	for i := seqDigits - 1; i >= 0; i-- {
		b[i] = '0' + byte(seq%10)
		seq /= 10
	}
	return append(dst, b[:]...)
}

func parseSeq(b []byte) (uint64, bool) {
	if len(b) < seqDigits {
		return 0, false
	}
	var v uint64
	for _, c := range b[:seqDigits] {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

var (
	errMismatch = errors.New("answer does not match the request")
	errOther    = errors.New("not an answer") // a daemon message that is no terminal (skipped)
)

// answer checks one message from the server and returns the request number
// it answers.
func (p proto) answer(msg []byte) (uint64, error) {
	if !p.daemon {
		seq, ok := parseSeq(msg)
		if !ok || len(msg) != p.size || !bytes.Equal(msg[seqDigits:], p.filler) {
			return 0, errMismatch
		}
		return seq, nil
	}
	if !bytes.Contains(msg, typeResult) {
		if bytes.Contains(msg, typeError) {
			return 0, fmt.Errorf("daemon error: %.200s", msg)
		}
		return 0, errOther
	}
	i := bytes.Index(msg, idKey)
	if i < 0 {
		return 0, errMismatch
	}
	seq, ok := parseSeq(msg[i+len(idKey):])
	if !ok || !bytes.Contains(msg, p.field) {
		return 0, errMismatch
	}
	return seq, nil
}

// readInto reads the next data message into buf (grown as needed).
func readInto(c *websocket.Conn, buf []byte) ([]byte, error) {
	_, r, err := c.NextReader()
	if err != nil {
		return buf[:0], err
	}
	buf = buf[:cap(buf)]
	n := 0
	for {
		if n == len(buf) {
			buf = append(buf, make([]byte, len(buf)+512)...)
		}
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			return buf[:n], nil
		}
		if err != nil {
			return buf[:n], err
		}
	}
}

// dialer opens the connections from a rotation of source addresses.
type dialer struct {
	url     string
	header  http.Header
	sources []net.IP
	daemon  bool
	next    atomic.Uint64
}

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h): the bind
// before connect leaves the port to connect, which picks it from the whole
// 4-tuple space.
const ipBindAddressNoPort = 24

func (d *dialer) dial(ctx context.Context) (*websocket.Conn, error) {
	nd := &net.Dialer{Timeout: 10 * time.Second}
	if len(d.sources) > 0 {
		nd.LocalAddr = &net.TCPAddr{IP: d.sources[d.next.Add(1)%uint64(len(d.sources))]}
		nd.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	wd := websocket.Dialer{
		NetDialContext:   nd.DialContext,
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   4096,
		WriteBufferSize:  4096,
	}
	c, resp, err := wd.DialContext(ctx, d.url, d.header)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, err
	}
	if d.daemon {
		// The daemon speaks first: the welcome.
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, msg, err := c.ReadMessage()
		if err == nil && !bytes.Contains(msg, []byte(`"type":"welcome"`)) {
			err = fmt.Errorf("first message is no welcome: %.200s", msg)
		}
		if err != nil {
			_ = c.Close()
			return nil, err
		}
		_ = c.SetReadDeadline(time.Time{})
	}
	return c, nil
}

// connectAll opens n connections with a few dialing goroutines.
func (d *dialer) connectAll(ctx context.Context, n, par int) ([]*websocket.Conn, error) {
	conns := make([]*websocket.Conn, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range par {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				c, err := d.dial(ctx)
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("connection %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if first != nil {
		closeAll(conns)
		return nil, first
	}
	return conns, nil
}

func closeAll(conns []*websocket.Conn) {
	for _, c := range conns {
		if c != nil {
			_ = c.Close()
		}
	}
}

// window is a measured phase: answers that arrive in [start, end) count.
type window struct{ start, end time.Time }

func (w window) in(t time.Time) bool { return !t.Before(w.start) && t.Before(w.end) }

// tally is what one connection saw in a phase.
type tally struct {
	mu   sync.Mutex // fail is called by an open-loop connection's writer and reader
	n    int64
	lat  []int64 // ns, answers inside the window
	errs map[string]int64
	sent int64 // open loop: requests sent
}

func (t *tally) fail(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.errs == nil {
		t.errs = map[string]int64{}
	}
	s := err.Error()
	if len(s) > 120 {
		s = s[:120]
	}
	t.errs[s]++
}

// closedLoop runs request, answer, request … on every connection until
// stop is set; inflight > 0 caps the requests in flight over all of them.
func closedLoop(conns []*websocket.Conn, p proto, w window, inflight int, stop *atomic.Bool) []*tally {
	out := make([]*tally, len(conns))
	var sem chan struct{}
	if inflight > 0 && inflight < len(conns) {
		sem = make(chan struct{}, inflight)
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		t := &tally{lat: make([]int64, 0, 1024)}
		out[i] = t
		wg.Go(func() {
			req := make([]byte, 0, p.size)
			buf := make([]byte, 0, p.size+512)
			var seq uint64
			for !stop.Load() {
				if sem != nil {
					sem <- struct{}{}
				}
				seq++
				req = p.request(req, seq)
				t0 := time.Now()
				err := c.WriteMessage(websocket.TextMessage, req)
				var got uint64
				for err == nil {
					buf, err = readInto(c, buf)
					if err == nil {
						got, err = p.answer(buf)
						if errors.Is(err, errOther) {
							err = nil
							continue
						}
					}
					break
				}
				t1 := time.Now()
				if sem != nil {
					<-sem
				}
				if err == nil && got != seq {
					err = errMismatch
				}
				if err != nil {
					t.fail(err)
					return
				}
				if w.in(t1) {
					t.n++
					t.lat = append(t.lat, int64(t1.Sub(t0)))
				}
			}
		})
	}
	wg.Wait()
	return out
}

// ringSize bounds an open-loop connection's requests in flight; a writer
// that would pass it waits (and the wait shows in the latency, which is
// measured from the intended send time).
const ringSize = 1024

// openLoop sends rate requests per second in total, spread evenly over the
// connections and in time, from base until w.end, whatever the answers do;
// latency is measured from each request's intended send time, so a stall
// (the server's or the client's) shows instead of being omitted.
func openLoop(conns []*websocket.Conn, p proto, base time.Time, w window, rate int) []*tally {
	out := make([]*tally, len(conns))
	interval := time.Duration(float64(time.Second) * float64(len(conns)) / float64(rate))
	var wg sync.WaitGroup
	for i, c := range conns {
		t := &tally{lat: make([]int64, 0, 256)}
		out[i] = t
		phase := interval * time.Duration(i) / time.Duration(len(conns))
		var ring [ringSize]atomic.Int64 // intended send time (ns after base) by seq
		sem := make(chan struct{}, ringSize)
		var writerDone atomic.Bool
		quit := make(chan struct{}) // closed when the reader stops
		wg.Go(func() {              // writer
			req := make([]byte, 0, p.size)
			var seq uint64
			for k := time.Duration(0); ; k++ {
				at := base.Add(phase + k*interval)
				if !at.Before(w.end) {
					break
				}
				if d := time.Until(at); d > 0 {
					time.Sleep(d)
				}
				select {
				case sem <- struct{}{}:
				case <-quit:
					return
				}
				seq++
				ring[seq%ringSize].Store(int64(at.Sub(base)))
				req = p.request(req, seq)
				if err := c.WriteMessage(websocket.TextMessage, req); err != nil {
					<-sem
					t.fail(err)
					break
				}
				t.sent++
			}
			// Wait for the answers, then wake the reader.
			for deadline := time.Now().Add(5 * time.Second); len(sem) > 0 && time.Now().Before(deadline); {
				select {
				case <-quit:
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
			writerDone.Store(true)
			_ = c.SetReadDeadline(time.Now())
		})
		wg.Go(func() { // reader
			defer close(quit)
			buf := make([]byte, 0, p.size+512)
			for {
				var err error
				buf, err = readInto(c, buf)
				now := time.Now()
				if err != nil {
					if !writerDone.Load() || len(sem) > 0 {
						t.fail(err)
					}
					return
				}
				seq, err := p.answer(buf)
				if errors.Is(err, errOther) {
					continue
				}
				if err != nil {
					t.fail(err)
					return
				}
				intended := base.Add(time.Duration(ring[seq%ringSize].Load()))
				<-sem
				if w.in(now) {
					t.n++
					t.lat = append(t.lat, int64(now.Sub(intended)))
				}
			}
		})
	}
	wg.Wait()
	return out
}

// parseSources expands "127.0.0.2-127.0.0.9" (or a single address) into
// the addresses of that range.
func parseSources(s string) ([]net.IP, error) {
	if s == "" {
		return nil, nil
	}
	lo, hi, ok := strings.Cut(s, "-")
	a := net.ParseIP(lo).To4()
	b := a
	if ok {
		b = net.ParseIP(hi).To4()
	}
	if a == nil || b == nil || a[0] != b[0] || a[1] != b[1] || a[2] != b[2] || a[3] > b[3] {
		return nil, fmt.Errorf("sources %q: want a.b.c.d or a.b.c.d-a.b.c.e", s)
	}
	var out []net.IP
	for x := int(a[3]); x <= int(b[3]); x++ {
		out = append(out, net.IPv4(a[0], a[1], a[2], byte(x)))
	}
	return out, nil
}
