package sessions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// natsTransport is the bus over NATS core subjects (sessions.bus: nats):
// node N listens on <prefix>.node.<N>, where prefix is the key prefix
// ("orch:" gives "orch"). A message is sent as a request that the
// receiving node answers as soon as its subscription takes it in, so the
// sender knows whether it was received (NATS answers "no responders" at
// once when nobody listens), as Redis's PUBLISH count tells it. NATS keeps
// the order of one connection's messages on one subject.
type natsTransport struct {
	urls    []string
	prefix  string
	timeout time.Duration
	log     *slog.Logger

	mu  sync.Mutex
	nc  *nats.Conn // guarded by mu
	sub *nats.Subscription
}

func newNatsTransport(urls []string, opts RedisOptions, log *slog.Logger) *natsTransport {
	return &natsTransport{urls: urls, prefix: natsToken(strings.TrimSuffix(opts.Prefix, ":")),
		timeout: opts.OpTimeout, log: log}
}

// natsToken makes s one subject token: letters, digits, '-', '_' and ':'
// stay; anything else ('.', '*', '>', spaces...) becomes %XX.
func natsToken(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == ':' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}

func (t *natsTransport) subject(node string) string { return t.prefix + ".node." + natsToken(node) }

// start connects (reconnecting forever afterwards), subscribes and
// flushes, so that the server has the subscription when start returns.
func (t *natsTransport) start(ctx context.Context, self string, deliver func([]byte), up func(bool)) error {
	subj := t.subject(self)
	nc, err := nats.Connect(strings.Join(t.urls, ","),
		nats.Name("orchestratord session bus "+self),
		nats.Timeout(t.timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond),
		nats.ReconnectJitter(50*time.Millisecond, 50*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			up(false)
			if err != nil { // nil: our own Close
				t.log.Warn("session bus: NATS connection lost, reconnecting", slog.String("subject", subj), slog.Any("err", err))
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			up(true)
			t.log.Info("session bus: NATS reconnected", slog.String("subject", subj), slog.String("server", c.ConnectedUrlRedacted()))
		}),
		nats.ClosedHandler(func(*nats.Conn) { up(false) }),
	)
	if err != nil {
		return fmt.Errorf("connect to NATS %s: %w", strings.Join(t.urls, ","), err)
	}
	sub, err := nc.Subscribe(subj, func(m *nats.Msg) {
		if m.Reply != "" {
			_ = m.Respond(nil) // received: the sender may stop worrying
		}
		deliver(m.Data)
	})
	if err == nil {
		// Slow consumers lose messages: let the subscription hold what
		// the dispatcher has not taken yet (it blocks when its inbox is full).
		err = sub.SetPendingLimits(-1, 256<<20)
	}
	if err == nil {
		err = nc.FlushWithContext(ctx)
	}
	if err != nil {
		nc.Close()
		return fmt.Errorf("subscribe %s: %w", subj, err)
	}
	t.mu.Lock()
	t.nc, t.sub = nc, sub
	t.mu.Unlock()
	up(true)
	return nil
}

func (t *natsTransport) conn() *nats.Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nc
}

// send: one message is one request; several are published in order with
// reply subjects under one inbox, and their answers collected: one round
// trip for the batch.
func (t *natsTransport) send(ctx context.Context, outs []busOut) []busSent {
	res := make([]busSent, len(outs))
	nc := t.conn()
	if nc == nil {
		for i := range res {
			res[i].err = errors.New("session bus: NATS not connected")
		}
		return res
	}
	if len(outs) == 1 {
		_, err := nc.RequestWithContext(ctx, t.subject(outs[0].node), outs[0].msg)
		switch {
		case err == nil:
			res[0].received = true
		case errors.Is(err, nats.ErrNoResponders):
		default:
			res[0].err = fmt.Errorf("nats request: %w", err)
		}
		return res
	}
	inbox := nc.NewInbox()
	answers := make(chan *nats.Msg, len(outs)) // a channel subscription hands over 503 statuses as messages
	sub, err := nc.ChanSubscribe(inbox+".*", answers)
	if err != nil {
		for i := range res {
			res[i].err = fmt.Errorf("nats reply subscription: %w", err)
		}
		return res
	}
	defer func() { _ = sub.Unsubscribe() }()
	answered := make([]bool, len(outs))
	for i, o := range outs {
		if err := nc.PublishMsg(&nats.Msg{Subject: t.subject(o.node), Reply: inbox + "." + strconv.Itoa(i), Data: o.msg}); err != nil {
			res[i].err = fmt.Errorf("nats publish: %w", err)
			answered[i] = true
		}
	}
	for left := countFalse(answered); left > 0; left-- {
		var m *nats.Msg
		select {
		case m = <-answers:
		case <-ctx.Done():
		}
		if m == nil {
			for i, a := range answered {
				if !a {
					res[i].err = fmt.Errorf("nats: no answer: %w", ctx.Err())
				}
			}
			break
		}
		i, err := strconv.Atoi(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:])
		if err != nil || i < 0 || i >= len(outs) || answered[i] {
			left++ // not one of ours, or a duplicate
			continue
		}
		answered[i] = true
		res[i].received = m.Header.Get("Status") != "503" // 503: no responders
	}
	return res
}

func countFalse(v []bool) int {
	n := 0
	for _, b := range v {
		if !b {
			n++
		}
	}
	return n
}

// close closes the connection. A callback still running delivers to a
// bus whose context is cancelled already: it returns at once.
func (t *natsTransport) close() {
	t.mu.Lock()
	nc := t.nc
	t.nc = nil
	t.mu.Unlock()
	if nc != nil {
		nc.Close()
	}
}
