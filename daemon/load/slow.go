package load

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// SlowReport is the slow-peer isolation figure: the same echo load without,
// with, and again without SlowPeers connections that each sent half a frame
// header and then one byte a second. The base is the two phases without.
type SlowReport struct {
	Peers          int               `json:"peers"`
	PeersConnected int               `json:"peers_connected"`
	BaseMsgs       uint64            `json:"base_msgs"`
	BaseSeconds    float64           `json:"base_seconds"`
	SlowMsgs       uint64            `json:"slow_msgs"`
	SlowSeconds    float64           `json:"slow_seconds"`
	BasePerSecond  float64           `json:"base_per_second"`
	SlowPerSecond  float64           `json:"slow_per_second"`
	Ratio          float64           `json:"ratio"` // with ÷ without; 1 means no cost
	LateTried      int               `json:"late_tried"`
	LateOK         int               `json:"late_ok"` // new clients that connected and got an echo during the slow phase
	LateErrors     map[string]uint64 `json:"late_errors,omitempty"`
}

func (r *SlowReport) fill() {
	if r.BaseSeconds > 0 {
		r.BasePerSecond = float64(r.BaseMsgs) / r.BaseSeconds
	}
	if r.SlowSeconds > 0 {
		r.SlowPerSecond = float64(r.SlowMsgs) / r.SlowSeconds
	}
	if r.BasePerSecond > 0 {
		r.Ratio = r.SlowPerSecond / r.BasePerSecond
	}
}

// lateProbes is how many new clients try to connect while slow peers hold.
const lateProbes = 10

// slow runs the slow-peer mode: echo, connect the slow peers, echo again
// while new clients try to get in.
func (s *shard) slow(ctx context.Context) *Hist {
	rep := &SlowReport{Peers: s.o.SlowPeers, LateErrors: map[string]uint64{}}
	half := s.o.Duration
	// Warm up first so that the first measured phase does not pay for heap
	// growth and cold caches that the second one would not.
	s.phase(ModeEcho, min(time.Second, half/2))
	sent, recv, un, _, secs := s.phase(ModeEcho, half)
	cr := s.connect(ctx, s.o.SlowPeers, 0, true)
	rep.PeersConnected = cr.OK
	for k, v := range cr.Errors {
		s.res.Errors["slow peer connect: "+k] += v
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Go(func() {
		for range lateProbes {
			err := s.probe(ctx, 5*time.Second)
			mu.Lock()
			rep.LateTried++
			if err != nil {
				rep.LateErrors[dialErrKey(err)]++
			} else {
				rep.LateOK++
			}
			mu.Unlock()
		}
	})
	sent2, recv2, un2, h, secs2 := s.phase(ModeEcho, half)
	wg.Wait()
	rep.SlowMsgs, rep.SlowSeconds = recv2, secs2
	// Close the peers and measure the base again: the base is the mean of
	// the phases before and after, so that whatever drifts with time (heap
	// growth, the machine's other work) does not pass for the peers' cost.
	s.onLoops(func(l *loop) {
		for _, c := range l.slow {
			l.drop(c, "")
		}
		l.slow = nil
	})
	sent3, recv3, un3, _, secs3 := s.phase(ModeEcho, half)
	rep.BaseMsgs, rep.BaseSeconds = recv+recv3, secs+secs3
	rep.fill()
	s.res.Sent, s.res.Received, s.res.Unanswered = sent+sent2+sent3, recv+recv2+recv3, un+un2+un3
	s.res.Seconds = secs + secs2 + secs3
	s.res.Slow = rep
	return h
}

// probe connects a new client with blocking I/O, waits for the welcome
// (protocol mode) and does one echo.
func (s *shard) probe(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	nc, br, err := s.d.DialBlocking(ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(limit))
	var rd = readerOf(nc, br)
	if !s.o.Raw {
		msg, err := wsutil.ReadServerText(rd)
		if err != nil {
			return fmt.Errorf("read welcome: %w", err)
		}
		var c Checker
		if _, err := c.Protocol(msg, false, nil); err != nil {
			return err
		}
	}
	var req []byte
	if s.o.Raw {
		req = bytes.Repeat([]byte{'p'}, s.o.Payload)
	} else {
		req = protoRequest(nil, s.o.Route, 1, s.w.data)
	}
	if err := wsutil.WriteClientMessage(nc, ws.OpText, req); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	for {
		msg, op, err := wsutil.ReadServerData(rd)
		if err != nil {
			return fmt.Errorf("read echo: %w", err)
		}
		if op != ws.OpText {
			continue
		}
		if s.o.Raw {
			if !bytes.Equal(msg, req) {
				return ErrDataMismatch
			}
			return nil
		}
		var c Checker
		c.Start(Pending{ID: 1})
		a, err := c.Protocol(msg, true, s.w.data)
		if err != nil {
			return err
		}
		if a.Done {
			if a.Code != "" {
				return fmt.Errorf("error %s", a.Code)
			}
			return nil
		}
	}
}

// readerOf returns a reader that first yields what the handshake buffered.
func readerOf(nc net.Conn, br *bufio.Reader) readWriter {
	if br == nil || br.Buffered() == 0 {
		return readWriter{nc, nc}
	}
	head := make([]byte, br.Buffered())
	_, _ = br.Read(head)
	ws.PutReader(br)
	return readWriter{&prefixReader{head: head, r: nc}, nc}
}

type readWriter struct {
	r interface{ Read([]byte) (int, error) }
	w net.Conn
}

func (rw readWriter) Read(p []byte) (int, error)  { return rw.r.Read(p) }
func (rw readWriter) Write(p []byte) (int, error) { return rw.w.Write(p) }

type prefixReader struct {
	head []byte
	r    interface{ Read([]byte) (int, error) }
}

func (p *prefixReader) Read(b []byte) (int, error) {
	if len(p.head) > 0 {
		n := copy(b, p.head)
		p.head = p.head[n:]
		return n, nil
	}
	return p.r.Read(b)
}
