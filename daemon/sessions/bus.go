package sessions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"github.com/segmentio/encoding/json"
)

// The bus connects the Managers of the replicas sharing a Redis store over
// Redis pub/sub: each node subscribes to its own channel, prefix+"node:"+name,
// and the others PUBLISH to it. PUBLISH answers with the number of receivers,
// so a relay nobody received falls back to the outbox. Messages from one node
// to another are published in order, each waiting for its reply, and Redis
// delivers a channel's messages in order; the receiving node handles them in
// order on one goroutine. docs/sessions.md gives the ordering argument.

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

func encodeBus(h busMsg, payload []byte) (string, error) {
	b, err := json.Marshal(h)
	if err != nil {
		return "", fmt.Errorf("encode bus message: %w", err)
	}
	b = append(b, '\n')
	b = append(b, payload...)
	return string(b), nil
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
	m      *Manager
	pub    rueidis.Client // the store's client: PUBLISH
	sub    rueidis.Client // a client of its own for the subscription
	prefix string
	self   string // this node's channel
	in     chan []byte

	subscribed atomic.Bool

	acksMu sync.Mutex
	acks   map[uint64]chan struct{} // guarded by acksMu
	nonce  atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func openBus(ctx context.Context, m *Manager, url string, pub rueidis.Client, opts RedisOptions) (*bus, error) {
	sub, err := newRedisClient(url, opts.OpTimeout, true)
	if err != nil {
		return nil, err
	}
	b := &bus{m: m, pub: pub, sub: sub, prefix: opts.Prefix, in: make(chan []byte, 4096),
		acks: make(map[uint64]chan struct{})}
	b.self = b.channel(m.node)
	b.ctx, b.cancel = context.WithCancel(context.Background())
	first := make(chan struct{})
	var once sync.Once
	b.wg.Add(2)
	go b.receive(func() { once.Do(func() { close(first) }) })
	go b.dispatch()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-first:
		return b, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-t.C:
		err = errors.New("no subscription confirmation within 5s")
	}
	b.close()
	return nil, fmt.Errorf("subscribe %s: %w", b.self, err)
}

func (b *bus) channel(node string) string { return b.prefix + "node:" + node }

// receive keeps the subscription up: rueidis's Receive returns when the
// connection breaks; it is called again until the bus closes.
func (b *bus) receive(subscribed func()) {
	defer b.wg.Done()
	var first atomic.Bool // subscribed once already
	ctx := rueidis.WithOnSubscriptionHook(b.ctx, func(s rueidis.PubSubSubscription) {
		if s.Kind == "subscribe" {
			if resubscribed := !b.subscribed.Swap(true) && first.Load(); resubscribed {
				b.m.log.Info("session bus subscribed again", slog.String("channel", b.self))
			}
			first.Store(true)
			subscribed()
		}
	})
	backoff := 50 * time.Millisecond
	for {
		err := b.sub.Receive(ctx, b.sub.B().Subscribe().Channel(b.self).Build(), func(msg rueidis.PubSubMessage) {
			select {
			case b.in <- []byte(msg.Message):
			case <-b.ctx.Done():
			}
		})
		wasUp := b.subscribed.Swap(false)
		if b.ctx.Err() != nil {
			return
		}
		if wasUp {
			b.m.log.Warn("session bus subscription lost, reconnecting", slog.Any("err", err))
			backoff = 50 * time.Millisecond
		} else {
			b.m.log.Debug("session bus resubscribe failed", slog.Any("err", err))
		}
		t := time.NewTimer(backoff)
		select {
		case <-b.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, time.Second)
	}
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

func (b *bus) publish(ctx context.Context, node string, h busMsg, payload []byte) (int64, error) {
	msg, err := encodeBus(h, payload)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.m.opts.Redis.OpTimeout)
	defer cancel()
	return b.pub.Do(ctx, b.pub.B().Publish().Channel(b.channel(node)).Message(msg).Build()).AsInt64()
}

// relay publishes one message of request req (a terminal: pos > 0) to the
// holder's node and reports whether that node received it. A terminal it
// did not receive is in the session's log for the next resume.
func (b *bus) relay(to Holder, id, req string, pos uint64, msg []byte) bool {
	n, err := b.publish(b.ctx, to.Node, busMsg{T: busRelay, S: id, C: to.Conn, R: req, P: pos}, msg)
	if err != nil {
		b.m.warn("session relay failed", slog.String("session", id), slog.String("request", req), slog.Any("err", err))
		return false
	}
	return n > 0
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
	cmds := make(rueidis.Commands, len(nodes))
	for i, n := range nodes {
		cmds[i] = b.pub.B().Publish().Channel(b.channel(n)).Message(msg).Build()
	}
	pctx, cancel := context.WithTimeout(ctx, b.m.opts.Redis.OpTimeout)
	res := b.pub.DoMulti(pctx, cmds...)
	cancel()
	want := 0
	for i, r := range res {
		n, err := r.AsInt64()
		if err != nil {
			b.m.log.Warn("session attach announce failed", slog.String("session", id),
				slog.String("node", nodes[i]), slog.Any("err", err))
		}
		if n > 0 {
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
// they produced so far, then ack.
func (b *bus) onAttach(h busMsg) {
	m := b.m
	var (
		older Outlet // kicked once the lock is released
		r     *remote
		cmds  rueidis.Commands
	)
	if l := m.lockLocal(h.S, false); l != nil {
		if h.E > l.epoch {
			l.epoch = h.E
			older = l.out
			l.out, l.conn, l.detached = nil, 0, 0
			// Live output of these streams from now on waits behind the
			// replay (relayLocked) until it is published: no chunk
			// overtakes it, and nothing is published under l.mu.
			r = &remote{Holder: Holder{Node: h.N, Conn: h.C, Epoch: h.E}, replaying: true}
			l.remote = r
			for _, s := range l.sortedStreams() {
				for _, c := range s.replay() {
					msg, err := encodeBus(busMsg{T: busRelay, S: h.S, C: h.C, R: s.req}, c)
					if err == nil {
						cmds = append(cmds, b.pub.B().Publish().Channel(b.channel(h.N)).Message(msg).Build())
					}
				}
			}
		}
		m.releaseLocked(l)
		l.mu.Unlock()
		if r != nil {
			b.publishReplay(l, r, h, cmds)
		}
	}
	if older != nil {
		older.Kick()
	}
	if _, err := b.publish(b.ctx, h.N, busMsg{T: busAck, K: h.K, N: m.node}, nil); err != nil {
		m.log.Warn("session attach ack failed", slog.String("session", h.S), slog.Any("err", err))
	}
}

// publishReplay publishes an attach's replay, then what came live for the
// new holder meanwhile, in order, until nothing waits; then live messages
// are relayed directly again. Runs on the bus goroutine, off l.mu.
func (b *bus) publishReplay(l *Record, r *remote, h busMsg, cmds rueidis.Commands) {
	m := b.m
	for {
		if len(cmds) > 0 {
			ctx, cancel := context.WithTimeout(b.ctx, m.opts.Redis.OpTimeout)
			for _, res := range b.pub.DoMulti(ctx, cmds...) {
				if err := res.Error(); err != nil {
					m.log.Warn("session replay relay failed", slog.String("session", h.S), slog.Any("err", err))
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
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		cmds = cmds[:0]
		for _, o := range q {
			msg, err := encodeBus(busMsg{T: busRelay, S: h.S, C: h.C, R: o.req, P: o.pos}, o.msg)
			if err == nil {
				cmds = append(cmds, b.pub.B().Publish().Channel(b.channel(h.N)).Message(msg).Build())
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
	}
	m.releaseLocked(l)
	l.mu.Unlock()
}

// close stops the subscription and the dispatcher and waits for them.
func (b *bus) close() {
	b.cancel()
	b.sub.Close()
	b.wg.Wait()
}
