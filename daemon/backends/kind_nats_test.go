package backends

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/orchestratord/orchestratord/daemon/config"
)

// natsFixture is a real NATS connection for a worker and a backend Set
// publishing to a subject unique to the test.
type natsFixture struct {
	worker  *nats.Conn
	subject string // with {type}
	prefix  string // subject with {type} replaced by "rag"
	pool    *Pool
	set     *Set
}

func newNATSFixture(t *testing.T) *natsFixture {
	url := natsURL(t)
	wc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("worker connect: %v", err)
	}
	t.Cleanup(wc.Close)
	base := fmt.Sprintf("test.backends.%d", rand.Uint64())
	s, _ := newTestSet(t, map[string]config.Backend{"rag": {
		Kind:    config.KindNATS,
		URLs:    []string{url},
		Subject: base + ".{type}",
		Breaker: config.Breaker{Failures: 5, Cooldown: config.Duration(time.Second)},
	}}, nil)
	return &natsFixture{worker: wc, subject: base + ".{type}", prefix: base + ".rag", pool: mustPool(t, s, "rag"), set: s}
}

// serve runs handler for every request in queue group "workers" and flushes
// the subscription before returning, so the server knows of it.
func (f *natsFixture) serve(t *testing.T, handler func(m *nats.Msg)) {
	t.Helper()
	sub, err := f.worker.QueueSubscribe(f.prefix, "workers", handler)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	if err := f.worker.Flush(); err != nil {
		t.Fatal(err)
	}
}

func reply(t *testing.T, nc *nats.Conn, m *nats.Msg, objs ...string) {
	for _, o := range objs {
		if err := nc.Publish(m.Reply, []byte(o)); err != nil {
			t.Errorf("reply: %v", err)
		}
	}
}

func TestNATSStream(t *testing.T) {
	f := newNATSFixture(t)
	type seen struct {
		header nats.Header
		body   string
	}
	got := make(chan seen, 1)
	f.serve(t, func(m *nats.Msg) {
		got <- seen{m.Header, string(m.Data)}
		reply(t, f.worker, m, `{"chunk":{"doc":1}}`, `{"chunk":{"doc":2}}`, `{"data":{"answer":42},"context":{"topic":"x"}}`, `{"chunk":"late"}`)
	})
	var rec recorder
	req := &Request{ID: "7", Type: "rag", SessionID: "s_1", UserID: "u1", Data: []byte(`{"q":"?"}`)}
	res, err := f.pool.Call(context.Background(), req, rec.emit)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rec.got(), []string{`{"doc":1}`, `{"doc":2}`}; !slices.Equal(got, want) {
		t.Errorf("chunks = %q, want %q", got, want)
	}
	if string(res.Data) != `{"answer":42}` || string(res.ContextPatch) != `{"topic":"x"}` {
		t.Errorf("result = %s, patch %s", res.Data, res.ContextPatch)
	}
	sn := recv(t, got, "the worker's request")
	want := `{"id":"7","type":"rag","session":{"id":"s_1","user":"u1","context":{}},"data":{"q":"?"}}`
	if !jsonEqual(t, sn.body, want) {
		t.Errorf("body = %s, want %s", sn.body, want)
	}
	for k, v := range map[string]string{"X-Request-Id": "7", "X-Session-Id": "s_1", "X-User-Id": "u1"} {
		if sn.header.Get(k) != v {
			t.Errorf("header %s = %q, want %q", k, sn.header.Get(k), v)
		}
	}
	if len(sn.header.Get("traceparent")) != 55 {
		t.Errorf("traceparent = %q", sn.header.Get("traceparent"))
	}
}

func TestNATSErrorObject(t *testing.T) {
	f := newNATSFixture(t)
	f.serve(t, func(m *nats.Msg) { reply(t, f.worker, m, `{"chunk":1}`, `{"error":{"message":"index missing"}}`) })
	var rec recorder
	_, err := f.pool.Call(context.Background(), &Request{ID: "1", Type: "rag"}, rec.emit)
	var be *Error
	if codeOf(err) != "backend_error" || !errors.As(err, &be) || be.Message != "index missing" {
		t.Fatalf("err = %v, want backend_error with the worker's message", err)
	}
	if got := rec.got(); !slices.Equal(got, []string{"1"}) {
		t.Errorf("chunks = %q", got)
	}
}

func TestNATSNoResponders(t *testing.T) {
	f := newNATSFixture(t)
	_, err := f.pool.Call(context.Background(), &Request{ID: "1", Type: "nobody-here"}, noEmit)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrNoResponders) || errors.Is(err, ErrOpen) {
		t.Fatalf("err = %v, want ErrNoResponders (ErrUnavailable, not ErrOpen)", err)
	}
	if st := state(t, f.set, "rag").Endpoints[0]; st.Failures != 1 {
		t.Errorf("failures = %d, want 1", st.Failures)
	}
}

// TestNATSCancel: on a deadline and on a client cancel, the worker gets
// {"cancel":"<id>"} on <subject>.cancel and the call returns the ctx error.
func TestNATSCancel(t *testing.T) {
	tests := []struct {
		name        string
		deadline    bool
		wantCode    string
		wantFailure bool
	}{
		{"deadline", true, "timeout", true},
		{"client cancel", false, "canceled", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newNATSFixture(t)
			cancels := make(chan string, 1)
			csub, err := f.worker.Subscribe(f.prefix+".cancel", func(m *nats.Msg) {
				var c struct{ Cancel string }
				json.Unmarshal(m.Data, &c)
				cancels <- c.Cancel
			})
			if err != nil {
				t.Fatal(err)
			}
			defer csub.Unsubscribe()
			f.serve(t, func(m *nats.Msg) { reply(t, f.worker, m, `{"chunk":"working"}`) }) // and never ends

			ctx, cancel := context.WithCancel(context.Background())
			if tc.deadline {
				ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
			}
			defer cancel()
			var rec recorder
			_, err = f.pool.Call(ctx, &Request{ID: "req-9", Type: "rag"}, func(p json.RawMessage) {
				rec.emit(p)
				if !tc.deadline {
					cancel()
				}
			})
			if codeOf(err) != tc.wantCode {
				t.Fatalf("err = %v (%s), want %s", err, codeOf(err), tc.wantCode)
			}
			if id := recv(t, cancels, "the cancel message"); id != "req-9" {
				t.Errorf("cancel id = %q, want req-9", id)
			}
			if got := rec.got(); !slices.Equal(got, []string{`"working"`}) {
				t.Errorf("chunks = %q", got)
			}
			if st := state(t, f.set, "rag").Endpoints[0]; (st.Failures == 1) != tc.wantFailure {
				t.Errorf("failures = %d, want failure %v", st.Failures, tc.wantFailure)
			}
		})
	}
}

// TestNATSQueueGroup: two workers in one queue group share the requests and
// each request is answered once.
func TestNATSQueueGroup(t *testing.T) {
	f := newNATSFixture(t)
	wc2, err := nats.Connect(natsURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer wc2.Close()
	var n1, n2 int
	counts := make(chan int, 64)
	f.serve(t, func(m *nats.Msg) { counts <- 1; reply(t, f.worker, m, `{"data":1}`) })
	sub, err := wc2.QueueSubscribe(f.prefix, "workers", func(m *nats.Msg) { counts <- 2; reply(t, wc2, m, `{"data":2}`) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	wc2.Flush()
	for i := range 40 {
		res, err := f.pool.Call(context.Background(), &Request{ID: fmt.Sprint(i), Type: "rag"}, noEmit)
		if err != nil {
			t.Fatal(err)
		}
		switch recv(t, counts, "a worker") {
		case 1:
			n1++
		case 2:
			n2++
		}
		if s := string(res.Data); s != "1" && s != "2" {
			t.Fatalf("result %s", s)
		}
	}
	if n1 == 0 || n2 == 0 || n1+n2 != 40 {
		t.Errorf("queue group split %d/%d, want both workers used, 40 in all", n1, n2)
	}
}

// TestNATSServerDown: a backend whose NATS server is unreachable is built
// without error, is unhealthy from the start, and its calls fail fast with
// backend_unavailable without trying; a call that gets past the health
// gate (the check not answered yet) is a connect failure, backend_error.
func TestNATSServerDown(t *testing.T) {
	s, _ := newTestSet(t, map[string]config.Backend{"rag": {
		Kind: config.KindNATS, URLs: []string{"nats://127.0.0.1:1"}, Subject: "x",
	}}, nil)
	start := time.Now()
	p := mustPool(t, s, "rag")
	_, err := p.Call(context.Background(), &Request{ID: "1", Type: "x"}, noEmit)
	if codeOf(err) != "backend_unavailable" || !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("err = %v, want backend_unavailable (unhealthy)", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("call took %v, want a fast failure", d)
	}
	p.eps[0].health.state.Store(healthUnknown)
	_, err = p.Call(context.Background(), &Request{ID: "2", Type: "x"}, noEmit)
	if codeOf(err) != "backend_error" || !errors.Is(err, ErrConnect) {
		t.Fatalf("err = %v, want backend_error, a connect failure", err)
	}
}
