package sessions

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// redisTransport is the bus over the store's Redis. One server or
// Sentinel: PUBLISH / SUBSCRIBE on prefix+"node:"+name. Cluster: sharded
// pub/sub (SPUBLISH / SSUBSCRIBE, Redis 7) on prefix+"{node:"+name+"}", so
// that a node's channel lives in one hash slot and a relay touches the one
// shard that owns it instead of being broadcast to every shard.
type redisTransport struct {
	pub     rueidis.Client // the store's client
	sub     rueidis.Client // a client of its own for the subscription, no retries
	prefix  string
	sharded bool
	log     *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newRedisTransport(cfg config.Sessions, pub rueidis.Client, opts RedisOptions, log *slog.Logger) (*redisTransport, error) {
	sub, err := newRedisClient(cfg, opts.OpTimeout, true)
	if err != nil {
		return nil, err
	}
	t := &redisTransport{pub: pub, sub: sub, prefix: opts.Prefix, log: log}
	if pub.Mode() == rueidis.ClientModeCluster {
		// Sharded pub/sub needs Redis 7; a Redis 6 Cluster (or a server
		// that only pretends to be one) gets the broadcast kind.
		ctx, cancel := context.WithTimeout(context.Background(), opts.OpTimeout)
		err := pub.Do(ctx, pub.B().Spublish().Channel(t.prefix+"{node:}").Message("").Build()).Error()
		cancel()
		t.sharded = err == nil
		if err != nil {
			log.Warn("session bus: Redis Cluster without sharded pub/sub (Redis < 7?): every relay is broadcast to all shards", slog.Any("err", err))
		}
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t, nil
}

// channel is node's channel name.
func (t *redisTransport) channel(node string) string {
	if t.sharded {
		return t.prefix + "{node:" + node + "}"
	}
	return t.prefix + "node:" + node
}

func (t *redisTransport) publishCmd(node string, msg []byte) rueidis.Completed {
	if t.sharded {
		return t.pub.B().Spublish().Channel(t.channel(node)).Message(rueidis.BinaryString(msg)).Build()
	}
	return t.pub.B().Publish().Channel(t.channel(node)).Message(rueidis.BinaryString(msg)).Build()
}

// send pipelines the PUBLISHes in one DoMulti (per shard on a Cluster);
// Redis answers each with its receiver count.
func (t *redisTransport) send(ctx context.Context, outs []busOut) []busSent {
	cmds := make(rueidis.Commands, len(outs))
	for i, o := range outs {
		cmds[i] = t.publishCmd(o.node, o.msg)
	}
	res := make([]busSent, len(outs))
	for i, r := range t.pub.DoMulti(ctx, cmds...) {
		n, err := r.AsInt64()
		res[i] = busSent{received: n > 0, err: err}
	}
	return res
}

// start runs the subscription loop and waits for its first confirmation.
func (t *redisTransport) start(ctx context.Context, self string, deliver func([]byte), up func(bool)) error {
	first := make(chan struct{})
	var once sync.Once
	t.wg.Add(1)
	go t.receive(t.channel(self), deliver, up, func() { once.Do(func() { close(first) }) })
	select {
	case <-first:
		return nil
	case <-ctx.Done():
		return errors.Join(errors.New("subscribe "+t.channel(self)+": no confirmation"), ctx.Err())
	}
}

// receive keeps the subscription up: rueidis's Receive returns when the
// connection breaks (a Redis restart, a Sentinel or Cluster failover, the
// slot moving); it is called again, with a backoff up to 1 s, until the
// transport closes.
func (t *redisTransport) receive(ch string, deliver func([]byte), up func(bool), subscribed func()) {
	defer t.wg.Done()
	var isUp, once atomic.Bool
	ctx := rueidis.WithOnSubscriptionHook(t.ctx, func(s rueidis.PubSubSubscription) {
		if s.Kind == "subscribe" || s.Kind == "ssubscribe" {
			if !isUp.Swap(true) {
				if once.Load() {
					t.log.Info("session bus subscribed again", slog.String("channel", ch))
				}
				up(true)
			}
			once.Store(true)
			subscribed()
		}
	})
	backoff := 50 * time.Millisecond
	for {
		cmd := t.sub.B().Subscribe().Channel(ch).Build()
		if t.sharded {
			cmd = t.sub.B().Ssubscribe().Channel(ch).Build()
		}
		err := t.sub.Receive(ctx, cmd, func(msg rueidis.PubSubMessage) { deliver([]byte(msg.Message)) })
		wasUp := isUp.Swap(false)
		if wasUp {
			up(false)
		}
		if t.ctx.Err() != nil {
			return
		}
		if wasUp {
			t.log.Warn("session bus subscription lost, reconnecting", slog.String("channel", ch), slog.Any("err", err))
			backoff = 50 * time.Millisecond
		} else {
			t.log.Debug("session bus resubscribe failed", slog.String("channel", ch), slog.Any("err", err))
		}
		timer := time.NewTimer(backoff)
		select {
		case <-t.ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		backoff = min(backoff*2, time.Second)
	}
}

// close stops the loop and closes the subscription client (the store owns
// pub).
func (t *redisTransport) close() {
	t.cancel()
	t.sub.Close()
	t.wg.Wait()
}
