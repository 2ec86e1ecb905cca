package backends

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/segmentio/encoding/json"
)

// natsReconnectWait is the pause between reconnect attempts; the client
// reconnects forever.
const natsReconnectWait = time.Second

// openNATS connects a backend's NATS client. A server that is down at start
// is not an error: the client keeps retrying in the background and calls
// fail with backend_error until it is connected.
func openNATS(name string, urls []string, credentials string, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("orchestratord backend " + name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(natsReconnectWait),
		nats.ReconnectBufSize(-1), // publish fails at once while disconnected
		nats.Timeout(dialTimeout),
		nats.NoCallbacksAfterClientClose(),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("nats connected", slog.String("backend", name), slog.String("endpoint", nc.ConnectedUrlRedacted()))
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected", slog.String("backend", name), slog.Any("err", err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", slog.String("backend", name), slog.String("endpoint", nc.ConnectedUrlRedacted()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("nats error", slog.String("backend", name), slog.Any("err", err))
		}),
	}
	if credentials != "" {
		opts = append(opts, nats.UserCredentials(credentials))
	}
	nc, err := nats.Connect(strings.Join(urls, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("connect NATS for backend %s: %w", name, err)
	}
	return nc, nil
}

// natsBackend sends requests to workers over NATS request/reply with a
// streamed reply: one object per message on a unique inbox.
type natsBackend struct {
	nc      *nats.Conn
	subject string // may contain {type}
}

// Call publishes the request body to the subject and reads the replies on
// a fresh inbox until a final or error object. A done ctx publishes
// {"cancel":"<id>"} to <subject>.cancel.
func (b *natsBackend) Call(ctx context.Context, req *Request, emit Emit) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, ctxErr(ctx)
	}
	if !b.nc.IsConnected() {
		return Result{}, connectFailed(fmt.Errorf("nats: %s", b.nc.Status()))
	}
	subject := strings.ReplaceAll(b.subject, "{type}", req.Type)
	body, err := encodeBody(make([]byte, 0, 256+len(req.Data)+len(req.Context)), req)
	if err != nil {
		return Result{}, &Error{Status: 500, Message: "request could not be encoded", Err: err}
	}
	// NewInbox, not NewRespInbox: its nuid sequence is unique by
	// construction, where NewRespInbox's 8 random characters only make a
	// collision (one call reading another's replies) unlikely.
	inbox := b.nc.NewInbox()
	// Subscribe before publishing: the SUB precedes the PUB on the
	// connection, so no reply can arrive unseen.
	sub, err := b.nc.SubscribeSync(inbox)
	if err != nil {
		return Result{}, badGateway("backend connection failed", fmt.Errorf("nats subscribe: %w", err))
	}
	defer func() { _ = sub.Unsubscribe() }()
	msg := &nats.Msg{
		Subject: subject,
		Reply:   inbox,
		Data:    body,
		Header: nats.Header{
			"X-Request-Id": []string{req.ID},
			"X-Session-Id": []string{req.SessionID},
			"X-User-Id":    []string{req.UserID},
			"traceparent":  []string{traceParent(req)},
		},
	}
	if err := b.nc.PublishMsg(msg); err != nil {
		return Result{}, badGateway("backend connection failed", fmt.Errorf("nats publish: %w", err))
	}
	var f frame
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if ctx.Err() != nil {
				b.cancel(subject, req.ID)
				return Result{}, ctxErr(ctx)
			}
			if errors.Is(err, nats.ErrNoResponders) {
				return Result{}, fmt.Errorf("subject %s: %w", subject, ErrNoResponders)
			}
			return Result{}, badGateway("backend connection failed", fmt.Errorf("nats reply: %w", err))
		}
		if len(m.Data) == 0 && m.Header != nil {
			if st := m.Header.Get("Status"); st != "" {
				if st == "503" {
					return Result{}, fmt.Errorf("subject %s: %w", subject, ErrNoResponders)
				}
				return Result{}, badGateway("backend connection failed", fmt.Errorf("nats status %s %s", st, m.Header.Get("Description")))
			}
		}
		res, done, err := applyFrame(m.Data, emit, &f)
		if done {
			return res, err
		}
	}
}

// cancel tells the workers to stop working on request id. Best effort: the
// call is over either way.
func (b *natsBackend) cancel(subject, id string) {
	data := json.AppendEscape([]byte(`{"cancel":`), id, 0)
	data = append(data, '}')
	_ = b.nc.PublishMsg(&nats.Msg{
		Subject: subject + ".cancel",
		Data:    data,
		Header:  nats.Header{"X-Request-Id": []string{id}},
	})
}
