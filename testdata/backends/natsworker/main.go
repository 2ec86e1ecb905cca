// Command natsworker is an example worker for the daemon's nats backend
// kind. It serves requests published on a subject in a queue group (start
// several to share the load), streams one chunk per word of the request's
// data.text, then a final object with a context patch, and stops a request
// when {"cancel":"<id>"} arrives on <subject>.cancel.
//
//	go run ./testdata/backends/natsworker -url nats://127.0.0.1:4222 -subject orchestrator.rag
//
// It lives under testdata so that ./... builds and tests leave it out.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

// request is the body the daemon publishes (the http kind's body).
type request struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Session struct {
		ID      string          `json:"id"`
		User    string          `json:"user"`
		Context json.RawMessage `json:"context"`
	} `json:"session"`
	Data json.RawMessage `json:"data"`
}

// worker serves one subject and tracks its requests in flight for cancels.
type worker struct {
	nc    *nats.Conn
	log   *slog.Logger
	delay time.Duration

	mu       sync.Mutex
	inflight map[string]context.CancelFunc // request id -> cancel
	wg       sync.WaitGroup
}

func main() {
	url := flag.String("url", nats.DefaultURL, "NATS server URLs, comma separated")
	subject := flag.String("subject", "orchestrator.rag", "subject to serve (the backend's subject with {type} resolved)")
	queue := flag.String("queue", "workers", "queue group shared by the workers")
	delay := flag.Duration("delay", 100*time.Millisecond, "pause between two chunks")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	if err := run(*url, *subject, *queue, *delay, log); err != nil {
		log.Error("worker failed", slog.Any("err", err))
		os.Exit(1)
	}
}

func run(url, subject, queue string, delay time.Duration, log *slog.Logger) error {
	nc, err := nats.Connect(url, nats.Name("natsworker"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
	if err != nil {
		return err
	}
	defer nc.Close()
	w := &worker{nc: nc, log: log, delay: delay, inflight: map[string]context.CancelFunc{}}
	// Every worker hears every cancel (no queue group): only the one
	// running the request acts on it.
	if _, err := nc.Subscribe(subject+".cancel", w.onCancel); err != nil {
		return err
	}
	// Each request goes to one worker of the group; the handler runs the
	// request on its own goroutine so that one slow reply does not stall
	// the subscription.
	if _, err := nc.QueueSubscribe(subject, queue, func(m *nats.Msg) {
		w.wg.Add(1)
		go func() { defer w.wg.Done(); w.serve(m) }()
	}); err != nil {
		return err
	}
	log.Info("serving", slog.String("subject", subject), slog.String("queue", queue))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	// Drain: stop taking requests, let those in flight finish.
	if err := nc.Drain(); err != nil {
		return err
	}
	w.wg.Wait()
	return nil
}

func (w *worker) onCancel(m *nats.Msg) {
	var c struct {
		Cancel string `json:"cancel"`
	}
	if json.Unmarshal(m.Data, &c) != nil {
		return
	}
	w.mu.Lock()
	cancel := w.inflight[c.Cancel]
	w.mu.Unlock()
	if cancel != nil {
		w.log.Info("canceled", slog.String("request", c.Cancel))
		cancel()
	}
}

// serve answers one request: a chunk per word, then the final object.
func (w *worker) serve(m *nats.Msg) {
	var req request
	if err := json.Unmarshal(m.Data, &req); err != nil {
		w.send(m.Reply, map[string]any{"error": map[string]string{"message": "malformed request"}})
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.mu.Lock()
	w.inflight[req.ID] = cancel
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.inflight, req.ID)
		w.mu.Unlock()
		cancel()
	}()

	var data struct {
		Text string `json:"text"`
	}
	_ = json.Unmarshal(req.Data, &data)
	words := strings.Fields(data.Text)
	for i, word := range words {
		select {
		case <-ctx.Done():
			return // the daemon has stopped listening
		case <-time.After(w.delay):
		}
		w.send(m.Reply, map[string]any{"chunk": map[string]any{"i": i, "word": word}})
	}
	w.send(m.Reply, map[string]any{
		"data":    map[string]any{"words": len(words), "user": req.Session.User},
		"context": map[string]any{"last_type": req.Type},
	})
}

func (w *worker) send(reply string, v any) {
	b, _ := json.Marshal(v)
	if err := w.nc.Publish(reply, b); err != nil {
		w.log.Warn("reply failed", slog.Any("err", err))
	}
}
