package sessions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"github.com/segmentio/encoding/json"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// The bus connects the Managers of the replicas sharing a store. Its logic
// (this file) sits on a small transport (busTransport): Redis pub/sub
// (bus_redis.go; sharded pub/sub on a Cluster) or NATS core subjects
// (bus_nats.go), chosen by sessions.bus. Each node subscribes to its own
// channel and the others send to it. A send reports whether the node's
// subscriber received the message (PUBLISH's receiver count; a NATS
// request answered on arrival); a terminal nobody received waits in the
// session's replay log for the next resume. Messages from one node to
// another are sent in order, each waiting for its answer, and both
// transports deliver one channel's messages in order; the receiving node
// handles them in order on one goroutine. docs/sessions.md gives the ordering argument.

// busTransport carries bus messages between nodes.
type busTransport interface {
	// start subscribes to node self's channel and returns once the
	// subscription is confirmed (or ctx ends, or it fails). From then on
	// deliver is called for each message, in arrival order, from one
	// goroutine at a time (it may block: back pressure); up reports the
	// subscription going down (false) and coming back (true).
	start(ctx context.Context, self string, deliver func([]byte), up func(bool)) error
	// send sends each message to its node, in order per node, and reports
	// for each whether a subscriber of that node received it.
	send(ctx context.Context, outs []busOut) []busSent
	// close ends the subscription and releases the connections; deliver
	// is not called once close returns.
	close()
}

// busOut is one message for one node.
type busOut struct {
	node string
	msg  []byte
}

// busSent is the outcome of one busOut.
type busSent struct {
	received bool
	err      error
}

// Kinds of bus messages.
const (
	busAttach = "attach" // S was claimed by conn C on node N with epoch E; reply ack K after replaying
	busAck    = "ack"    // the replay for the attach with nonce K is published
	busRelay  = "relay"  // output of request R of S for conn C; P: the position of a terminal
)

// busMsg is the header of a bus message; the payload (an encoded server
// message, for relays) follows it after a newline.
type busMsg struct {
	T string `json:"t"`
	S string `json:"s,omitempty"`
	N string `json:"n,omitempty"`
	C uint64 `json:"c,omitempty"`
	E uint64 `json:"e,omitempty"`
	K uint64 `json:"k,omitempty"`
	R string `json:"r,omitempty"`
	P uint64 `json:"p,omitempty"`
}

func encodeBus(h busMsg, payload []byte) ([]byte, error) {
	b, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("encode bus message: %w", err)
	}
	b = append(b, '\n')
	b = append(b, payload...)
	return b, nil
}

func decodeBus(raw []byte) (busMsg, []byte, error) {
	var h busMsg
	i := bytes.IndexByte(raw, '\n')
	if i < 0 {
		return h, nil, errors.New("bus message without header")
	}
	if err := json.Unmarshal(raw[:i], &h); err != nil {
		return h, nil, fmt.Errorf("decode bus header: %w", err)
	}
	return h, raw[i+1:], nil
}

type bus struct {
	m  *Manager
	t  busTransport
	in chan []byte

	subscribed atomic.Bool

	acksMu sync.Mutex
	acks   map[uint64]chan struct{} // guarded by acksMu
	nonce  atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// openBus starts the bus cfg.Bus names on the store's Redis client pub (or
// on NATS) and returns once this node's subscription is confirmed.
func openBus(ctx context.Context, m *Manager, cfg config.Sessions, pub rueidis.Client, opts RedisOptions) (*bus, error) {
	var t busTransport
	switch cfg.Bus {
	case "", "redis":
		rt, err := newRedisTransport(cfg, pub, opts, m.log)
		if err != nil {
			return nil, err
		}
		t = rt
	case "nats":
		t = newNatsTransport(cfg.NatsURLs, opts, m.log)
	default:
		return nil, fmt.Errorf("sessions.bus: unknown bus %q (want redis or nats)", cfg.Bus)
	}
	b := &bus{m: m, t: t, in: make(chan []byte, 4096), acks: make(map[uint64]chan struct{})}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.wg.Add(1)
	go b.dispatch()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	deliver := func(raw []byte) {
		select {
		case b.in <- raw:
		case <-b.ctx.Done():
		}
	}
	if err := t.start(sctx, m.node, deliver, func(up bool) { b.subscribed.Store(up) }); err != nil {
		b.close()
		return nil, fmt.Errorf("session bus: %w", err)
	}
	return b, nil
}

// dispatch handles the node's bus messages in arrival order.
func (b *bus) dispatch() {
	defer b.wg.Done()
	for {
		select {
		case <-b.ctx.Done():
			return
		case raw := <-b.in:
			h, payload, err := decodeBus(raw)
			if err != nil {
				b.m.log.Warn("bad session bus message", slog.Any("err", err))
				continue
			}
			switch h.T {
			case busAttach:
				b.onAttach(h)
			case busAck:
				b.onAck(h)
			case busRelay:
				b.onRelay(h, payload)
			}
		}
	}
}

// publish sends one message to node and reports whether it was received.
func (b *bus) publish(ctx context.Context, node string, h busMsg, payload []byte) (bool, error) {
	msg, err := encodeBus(h, payload)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.m.opts.Redis.OpTimeout)
	defer cancel()
	r := b.t.send(ctx, []busOut{{node: node, msg: msg}})[0]
	return r.received, r.err
}

// relay publishes one message of request req (a terminal: pos > 0) to the
// holder's node and reports whether that node received it. A terminal it
// did not receive is in the session's log for the next resume.
func (b *bus) relay(to Holder, id, req string, pos uint64, msg []byte) bool {
	ok, err := b.publish(b.ctx, to.Node, busMsg{T: busRelay, S: id, C: to.Conn, R: req, P: pos}, msg)
	if err != nil {
		b.m.warn("session relay failed", slog.String("session", id), slog.String("request", req), slog.Any("err", err))
		return false
	}
	return ok
}

// announce tells nodes that conn claimed the session with epoch, and waits
// until each node that received it has replayed the output of the
// session's requests it runs (its ack), or ctx / the ack timeout ends.
func (b *bus) announce(ctx context.Context, id string, conn, epoch uint64, nodes []string) {
	nonce := b.nonce.Add(1)
	acked := make(chan struct{}, len(nodes))
	b.acksMu.Lock()
	b.acks[nonce] = acked
	b.acksMu.Unlock()
	defer func() {
		b.acksMu.Lock()
		delete(b.acks, nonce)
		b.acksMu.Unlock()
	}()
	msg, err := encodeBus(busMsg{T: busAttach, S: id, N: b.m.node, C: conn, E: epoch, K: nonce}, nil)
	if err != nil {
		return
	}
	outs := make([]busOut, len(nodes))
	for i, n := range nodes {
		outs[i] = busOut{node: n, msg: msg}
	}
	pctx, cancel := context.WithTimeout(ctx, b.m.opts.Redis.OpTimeout)
	res := b.t.send(pctx, outs)
	cancel()
	want := 0
	for i, r := range res {
		if r.err != nil {
			b.m.log.Warn("session attach announce failed", slog.String("session", id),
				slog.String("node", nodes[i]), slog.Any("err", r.err))
		}
		if r.received {
			want++
		}
	}
	t := time.NewTimer(b.m.opts.AckTimeout)
	defer t.Stop()
	for ; want > 0; want-- {
		select {
		case <-acked:
		case <-t.C:
			b.m.log.Warn("session attach: replicas did not confirm replay in time",
				slog.String("session", id), slog.Int("missing", want))
			return
		case <-ctx.Done():
			return
		case <-b.ctx.Done():
			return
		}
	}
}

// onAttach: another node claimed the session. Kick the connection here if
// older, point the session's streams here at the new holder, replay what
// they produced so far, then ack. It runs in the session's turn, like this
// node's terminals (append, then removal of the stream and delivery) and
// the switches made on the store's word (deliver, Stream.Chunk): a
// terminal appended before the claim has its stream removed before the
// attach looks for streams (its result is in the claim's replay, so its
// chunks must not follow it), one appended after finds the switch done
// (and goes behind the replay).
//
// The bus goroutine never waits for a turn: a turn's holder may be a
// terminal whose store append (and, the session lost, its restore) takes
// several round trips, and more holders may be queued before it, while
// every session's relays to this node wait behind this goroutine. A
// turn that is free is taken here (the common case, handled in place);
// a busy one is waited for on a goroutine of its own, which does the
// rest (attached). Correctness does not depend on which of a terminal
// and an attach gets the turn first (deliver switches on the store's
// word), and two attaches of one session are ordered by their epochs.
func (b *bus) onAttach(h busMsg) {
	m := b.m
	l := m.lockLocal(h.S, false)
	if l == nil {
		b.ack(h.N, h.K, h.S)
		return
	}
	l.held++
	l.mu.Unlock()
	if l.turn.CompareAndSwap(turnFree, turnHeld) {
		b.attached(l, h, true)
		return
	}
	b.wg.Add(1) // dispatch, which calls this, holds the group open
	go func() {
		defer b.wg.Done()
		b.attached(l, h, l.takeTurn(b.ctx))
	}()
}

// attached is onAttach once the session's turn is held (turn true) or
// given up (b.ctx ended); l is held (l.held), released here.
func (b *bus) attached(l *Record, h busMsg, turn bool) {
	m := b.m
	var (
		older    Outlet // kicked once the lock is released
		r        *remote
		outs     []busOut
		deferred bool // acked by the replay under way to this holder
	)
	if turn {
		to := Holder{Node: h.N, Conn: h.C, Epoch: h.E}
		l.mu.Lock()
		if h.E > uint64(l.epoch) {
			r, outs, older = m.switchLocked(l, to)
		} else if cur := l.remote(); cur != nil && cur.Holder == to && cur.replaying {
			// This node switched to the holder on the store's word
			// and is publishing its replay: acked once published.
			cur.acks = append(cur.acks, h.K)
			deferred = true
		}
		l.mu.Unlock()
		l.giveTurn()
	}
	m.unhold(l)
	if r != nil {
		b.publishReplay(l, r, outs)
	}
	if older != nil {
		older.Kick()
	}
	if !deferred {
		b.ack(h.N, h.K, h.S)
	}
}

// ack tells node that the replay for its attach with nonce k is published.
func (b *bus) ack(node string, k uint64, id string) {
	if _, err := b.publish(b.ctx, node, busMsg{T: busAck, K: k, N: b.m.node}, nil); err != nil {
		b.m.log.Warn("session attach ack failed", slog.String("session", id), slog.Any("err", err))
	}
}

// switchLocked makes h, a claim newer than any this node has seen, the
// session's holder here: the connection here (older, returned to be
// kicked once l.mu is released) is let go, and the session's streams
// are pointed at h. It returns the remote and the replay of every chunk
// they recorded, which the caller publishes off l.mu (publishReplay);
// live output waits behind it meanwhile (relayLocked). Called on h's
// attach message, and when the store tells of h first (a terminal's
// append, a chunk's lookup of the holder): either way the new connection
// gets the replay once, whichever comes second finding the epoch seen.
// l.mu held, and the session's turn.
func (m *Manager) switchLocked(l *Record, h Holder) (r *remote, outs []busOut, older Outlet) {
	l.epoch = uint32(h.Epoch)
	older = l.out
	l.out, l.conn = nil, 0
	l.setDetached(0)
	r = &remote{Holder: h, replaying: true}
	l.setRemote(r)
	for _, s := range l.sortedStreams() {
		for _, c := range s.replay() {
			msg, err := encodeBus(busMsg{T: busRelay, S: l.id, C: h.Conn, R: s.req}, c)
			if err == nil {
				outs = append(outs, busOut{node: h.Node, msg: msg})
			}
		}
	}
	return r, outs, older
}

// publishReplay publishes a switch's replay, then what came live for the
// new holder meanwhile, in order, until nothing waits; then live messages
// are relayed directly again, and the attaches of that holder that came
// meanwhile are acked. Runs off l.mu (the bus goroutine, or the request's
// goroutine for a switch on the store's word).
func (b *bus) publishReplay(l *Record, r *remote, outs []busOut) {
	m := b.m
	for {
		if len(outs) > 0 {
			ctx, cancel := context.WithTimeout(b.ctx, m.opts.Redis.OpTimeout)
			for _, res := range b.t.send(ctx, outs) {
				if res.err != nil {
					m.log.Warn("session replay relay failed", slog.String("session", l.id), slog.Any("err", res.err))
					break
				}
			}
			cancel()
		}
		l.mu.Lock()
		q := r.q
		r.q = nil
		if len(q) == 0 {
			r.replaying = false
			acks := r.acks
			r.acks = nil
			l.mu.Unlock()
			for _, k := range acks {
				b.ack(r.Node, k, l.id)
			}
			return
		}
		l.mu.Unlock()
		outs = outs[:0]
		for _, o := range q {
			msg, err := encodeBus(busMsg{T: busRelay, S: l.id, C: r.Conn, R: o.req, P: o.pos}, o.msg)
			if err == nil {
				outs = append(outs, busOut{node: r.Node, msg: msg})
			}
		}
	}
}

func (b *bus) onAck(h busMsg) {
	b.acksMu.Lock()
	ch := b.acks[h.K]
	b.acksMu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// onRelay delivers a relayed message to the connection it was meant for.
// A terminal that connection cannot take is in the session's log already.
func (b *bus) onRelay(h busMsg, payload []byte) {
	m := b.m
	l := m.lockLocal(h.S, false)
	if l == nil {
		return // a chunk for a connection no longer here: the next attach replays it
	}
	if l.out != nil && l.conn == h.C {
		m.sendLocked(l, payload, h.P)
	} else if pb := l.binding(); pb != nil && pb.conn == h.C {
		// Relayed on the store's word before Bind bound the connection:
		// sent after the claim's replay.
		pb.q = append(pb.q, outMsg{slices.Clone(payload), h.P})
	}
	m.releaseLocked(l)
	l.mu.Unlock()
}

// close stops the subscription and the dispatcher and waits for them.
func (b *bus) close() {
	b.cancel()
	b.t.close()
	b.wg.Wait()
}
