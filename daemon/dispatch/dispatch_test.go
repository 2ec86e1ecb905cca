package dispatch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/backends"
	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/events"
)

// fakeStore records what each request wrote, in order.
type fakeStore struct {
	mu       sync.Mutex
	out      map[string][]string // request id -> messages
	ends     chan string         // request ids as their terminal arrives
	ended    map[string]bool
	patches  []string
	turns    []events.Turn
	acks     []uint64
	loadErr  error
	sessions []*testSession
}

func newFakeStore() *fakeStore {
	return &fakeStore{out: map[string][]string{}, ends: make(chan string, 1024), ended: map[string]bool{}}
}

type fakeOutput struct {
	s  *fakeStore
	id string
}

func (o fakeOutput) Chunk(msg []byte) {
	o.s.mu.Lock()
	o.s.out[o.id] = append(o.s.out[o.id], string(msg))
	o.s.mu.Unlock()
}

func (o fakeOutput) End(msg []byte) {
	o.s.mu.Lock()
	o.s.out[o.id] = append(o.s.out[o.id], string(msg))
	o.s.ended[o.id] = true
	o.s.mu.Unlock()
	o.s.ends <- o.id
}

func (s *fakeStore) Begin(_, reqID string) Output { return fakeOutput{s, reqID} }
func (s *fakeStore) Load(context.Context, string, string) (json.RawMessage, []events.Turn, error) {
	return json.RawMessage(`{"k":1}`), nil, s.loadErr
}
func (s *fakeStore) PatchContext(_ context.Context, _ string, p json.RawMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.patches = append(s.patches, string(p))
	return nil
}
func (s *fakeStore) AppendHistory(_ context.Context, _ string, t []events.Turn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.turns = append(s.turns, t...)
	return nil
}

// Terminal records an inline terminal as its request's End.
func (s *fakeStore) Terminal(_ context.Context, _, reqID string, msg []byte) (uint64, error) {
	fakeOutput{s, strings.Clone(reqID)}.End(msg)
	return 1, nil
}

func (s *fakeStore) Ack(_ string, pos uint64) {
	s.mu.Lock()
	s.acks = append(s.acks, pos)
	s.mu.Unlock()
}

func (s *fakeStore) InlineTerminals() bool { return true }

func (s *fakeStore) messages(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.out[id]...)
}

func (s *fakeStore) waitEnd(t *testing.T, id string) []string {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		s.mu.Lock()
		done := s.ended[id]
		s.mu.Unlock()
		if done {
			return s.messages(id)
		}
		select {
		case <-s.ends:
		case <-deadline:
			t.Fatalf("no terminal for %q within 5s; have %v", id, s.messages(id))
		}
	}
}

// fakePool is a scripted backend.
type fakePool struct {
	calls int
	mu    sync.Mutex
	fn    func(ctx context.Context, req *backends.Request, emit backends.Emit) (backends.Result, error)
}

func (p *fakePool) Call(ctx context.Context, req *backends.Request, emit backends.Emit) (backends.Result, error) {
	p.mu.Lock()
	p.calls++
	p.mu.Unlock()
	return p.fn(ctx, req, emit)
}

func (p *fakePool) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

type replies struct {
	mu   sync.Mutex
	msgs []string
}

func (r *replies) reply(msg []byte) error {
	r.mu.Lock()
	r.msgs = append(r.msgs, string(msg))
	r.mu.Unlock()
	return nil
}

func (r *replies) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.msgs) == 0 {
		return ""
	}
	return r.msgs[len(r.msgs)-1]
}

func testRouter(t *testing.T, routes map[string]*route, limits config.Limits) (*Router, *fakeStore, *testSession) {
	t.Helper()
	if limits.MaxInflight == 0 {
		limits = config.Default().Limits
	}
	st := newFakeStore()
	r := New(&Table{routes: routes, limits: limits}, st, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s := st.session("s_1", "alice")
	return r, st, s
}

func echoPool() *fakePool {
	return &fakePool{fn: func(_ context.Context, req *backends.Request, _ backends.Emit) (backends.Result, error) {
		return backends.Result{Data: req.Data}, nil
	}}
}

func TestImmediateRefusals(t *testing.T) {
	pool := echoPool()
	routes := map[string]*route{"slow": {name: "slow", pool: pool, timeout: time.Second}}
	tests := []struct {
		name, in, want string
	}{
		{"not json", `hello`, `{"type":"error","id":"","code":"bad_request","message":"message must be a JSON object"}`},
		{"missing id", `{"type":"x"}`, `"code":"bad_request"`},
		{"bad type keeps id", `{"type":5,"id":"7"}`, `{"type":"error","id":"7","code":"bad_request"`},
		{"unknown route", `{"type":"nope","id":"8"}`, `{"type":"error","id":"8","code":"unknown_type"`},
		{"ping", `{"type":"ping","id":"p1"}`, `{"type":"pong","id":"p1"}`},
		{"cancel unknown", `{"type":"cancel","id":"c1","data":{"id":"zz"}}`, `{"type":"result","id":"c1","data":{"canceled":false}}`},
		{"cancel without target", `{"type":"cancel","id":"c2"}`, `{"type":"error","id":"c2","code":"bad_request"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _, s := testRouter(t, routes, config.Limits{})
			var rp replies
			r.Handle(s, []byte(tc.in), ReplyFunc(rp.reply))
			if got := rp.last(); !strings.Contains(got, tc.want) {
				t.Fatalf("reply = %s, want it to contain %s", got, tc.want)
			}
		})
	}
	if pool.count() != 0 {
		t.Fatalf("backend called %d times by refused messages, want 0", pool.count())
	}
}

func TestStreamThenOneTerminal(t *testing.T) {
	pool := &fakePool{fn: func(_ context.Context, _ *backends.Request, emit backends.Emit) (backends.Result, error) {
		for i := 0; i < 3; i++ {
			emit(json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)))
		}
		return backends.Result{Data: json.RawMessage(`"done"`), ContextPatch: json.RawMessage(`{"a":1}`),
			Turns: []events.Turn{{Role: "user", Content: "q"}}}, nil
	}}
	r, st, s := testRouter(t, map[string]*route{"rag": {name: "rag", pool: pool, timeout: time.Second, needsSession: true}}, config.Limits{})
	var rp replies
	r.Handle(s, []byte(`{"type":"rag","id":"42","data":{"q":1}}`), ReplyFunc(rp.reply))
	got := st.waitEnd(t, "42")
	want := []string{
		`{"type":"chunk","id":"42","seq":0,"data":{"n":0}}`,
		`{"type":"chunk","id":"42","seq":1,"data":{"n":1}}`,
		`{"type":"chunk","id":"42","seq":2,"data":{"n":2}}`,
		`{"type":"result","id":"42","data":"done"}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(st.patches) != 1 || len(st.turns) != 1 {
		t.Fatalf("patches %v turns %v, want one each saved before the terminal", st.patches, st.turns)
	}
	deadline := time.Now().Add(2 * time.Second)
	for r.InFlight() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("InFlight = %d after the terminal, want 0", r.InFlight())
		}
		time.Sleep(time.Millisecond)
	}
}

// orderStore records the router's in-flight count when each terminal is
// written.
type orderStore struct {
	*fakeStore
	r     *Router
	atEnd chan int
}

type orderOutput struct {
	Output
	s *orderStore
}

func (o orderOutput) End(msg []byte) {
	o.s.atEnd <- o.s.r.InFlight()
	o.Output.End(msg)
}

func (s *orderStore) Begin(sid, rid string) Output {
	return orderOutput{s.fakeStore.Begin(sid, rid), s}
}

// TestInFlightCoversTheTerminal pins the order found by the replica
// failover test: a request counts as in flight until its terminal is
// written or stored, so "nothing in flight" means nothing left to deliver.
func TestInFlightCoversTheTerminal(t *testing.T) {
	st := &orderStore{fakeStore: newFakeStore(), atEnd: make(chan int, 1)}
	r := New(&Table{routes: map[string]*route{"x": {name: "x", pool: echoPool(), timeout: time.Second}}, limits: config.Default().Limits},
		st, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	st.r = r
	s := st.session("s", "u")
	r.Handle(s, []byte(`{"type":"x","id":"1"}`), ReplyFunc((&replies{}).reply))
	if n := <-st.atEnd; n != 1 {
		t.Fatalf("InFlight while the terminal was written = %d, want 1", n)
	}
}

func TestErrorCodes(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"rejected", &backends.Error{Status: 404, Message: "no such table"}, `"code":"backend_rejected","message":"no such table"`},
		{"5xx", &backends.Error{Status: 503, Message: "secret detail"}, `"code":"backend_error","message":"backend error"`},
		{"open", backends.ErrOpen, `"code":"backend_unavailable"`},
		{"overloaded", backends.ErrOverloaded, `"code":"overloaded"`},
		{"plain", errors.New("boom"), `"code":"backend_error"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pool := &fakePool{fn: func(context.Context, *backends.Request, backends.Emit) (backends.Result, error) {
				return backends.Result{}, tc.err
			}}
			r, st, s := testRouter(t, map[string]*route{"x": {name: "x", pool: pool, timeout: time.Second}}, config.Limits{})
			r.Handle(s, []byte(`{"type":"x","id":"1"}`), ReplyFunc((&replies{}).reply))
			got := st.waitEnd(t, "1")
			if len(got) != 1 || !strings.Contains(got[0], tc.want) {
				t.Fatalf("got %v, want one terminal containing %s", got, tc.want)
			}
		})
	}
}

func TestFallbackWhenOpen(t *testing.T) {
	primary := &fakePool{fn: func(context.Context, *backends.Request, backends.Emit) (backends.Result, error) {
		return backends.Result{}, backends.ErrOpen
	}}
	fb := &fakePool{fn: func(context.Context, *backends.Request, backends.Emit) (backends.Result, error) {
		return backends.Result{Data: json.RawMessage(`"from fallback"`)}, nil
	}}
	r, st, s := testRouter(t, map[string]*route{"x": {name: "x", pool: primary, fallback: fb, timeout: time.Second}}, config.Limits{})
	r.Handle(s, []byte(`{"type":"x","id":"1"}`), ReplyFunc((&replies{}).reply))
	if got := st.waitEnd(t, "1"); len(got) != 1 || got[0] != `{"type":"result","id":"1","data":"from fallback"}` {
		t.Fatalf("got %v", got)
	}
}

// blockingPool blocks until its context ends and reports the cause it saw.
func blockingPool(started chan<- struct{}, seen chan<- error) *fakePool {
	return &fakePool{fn: func(ctx context.Context, _ *backends.Request, emit backends.Emit) (backends.Result, error) {
		started <- struct{}{}
		<-ctx.Done()
		seen <- context.Cause(ctx)
		return backends.Result{}, ctx.Err()
	}}
}

func TestCancelDuplicateAndCaps(t *testing.T) {
	started, seen := make(chan struct{}, 8), make(chan error, 8)
	pool := blockingPool(started, seen)
	lim := config.Default().Limits
	lim.SessionInflight = 2
	r, st, s := testRouter(t, map[string]*route{"x": {name: "x", pool: pool, timeout: time.Minute}}, lim)
	var rp replies
	r.Handle(s, []byte(`{"type":"x","id":"a"}`), ReplyFunc(rp.reply))
	<-started
	r.Handle(s, []byte(`{"type":"x","id":"a"}`), ReplyFunc(rp.reply))
	if got := rp.last(); !strings.Contains(got, `"id":"a","code":"duplicate_id"`) {
		t.Fatalf("second a: %s, want duplicate_id", got)
	}
	r.Handle(s, []byte(`{"type":"x","id":"b"}`), ReplyFunc(rp.reply))
	<-started
	r.Handle(s, []byte(`{"type":"x","id":"c"}`), ReplyFunc(rp.reply))
	if got := rp.last(); !strings.Contains(got, `"id":"c","code":"overloaded"`) {
		t.Fatalf("third request: %s, want overloaded", got)
	}
	r.Handle(s, []byte(`{"type":"cancel","id":"k","data":{"id":"a"}}`), ReplyFunc(rp.reply))
	if got := rp.last(); got != `{"type":"result","id":"k","data":{"canceled":true}}` {
		t.Fatalf("cancel reply %s", got)
	}
	if cause := <-seen; !errors.Is(cause, ErrCanceled) {
		t.Fatalf("backend saw cause %v, want ErrCanceled", cause)
	}
	if got := st.waitEnd(t, "a"); len(got) != 1 || !strings.Contains(got[0], `"code":"canceled"`) {
		t.Fatalf("a ended with %v, want one canceled", got)
	}
	// The id is free again once its terminal is out.
	st.mu.Lock()
	delete(st.ended, "a")
	st.mu.Unlock()
	r.Handle(s, []byte(`{"type":"x","id":"a"}`), ReplyFunc(rp.reply))
	<-started
	r.CancelAll(ErrDraining)
	for _, id := range []string{"b", "a"} {
		if got := st.waitEnd(t, id); !strings.Contains(got[len(got)-1], `"code":"draining"`) {
			t.Fatalf("%s ended with %v, want draining", id, got)
		}
	}
}

func TestDeadlines(t *testing.T) {
	tests := []struct {
		name  string
		rt    *route
		emits int // chunks the backend sends before stalling
	}{
		{"total", &route{timeout: 50 * time.Millisecond}, 0},
		{"first chunk", &route{timeout: time.Minute, firstChunk: 50 * time.Millisecond}, 0},
		{"idle", &route{timeout: time.Minute, idle: 50 * time.Millisecond}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seen := make(chan error, 1)
			pool := &fakePool{fn: func(ctx context.Context, _ *backends.Request, emit backends.Emit) (backends.Result, error) {
				for i := 0; i < tc.emits; i++ {
					emit(json.RawMessage(`1`))
				}
				<-ctx.Done()
				seen <- context.Cause(ctx)
				return backends.Result{}, ctx.Err()
			}}
			rt := tc.rt
			rt.name, rt.pool = "x", pool
			r, st, s := testRouter(t, map[string]*route{"x": rt}, config.Limits{})
			start := time.Now()
			r.Handle(s, []byte(`{"type":"x","id":"1"}`), ReplyFunc((&replies{}).reply))
			got := st.waitEnd(t, "1")
			if len(got) != tc.emits+1 || !strings.Contains(got[tc.emits], `"code":"timeout"`) {
				t.Fatalf("got %v, want %d chunks then timeout", got, tc.emits)
			}
			if cause := <-seen; !errors.Is(cause, ErrTimeout) {
				t.Fatalf("backend saw %v, want ErrTimeout", cause)
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Fatalf("timeout took %s", el)
			}
		})
	}
}

func TestRateLimitAndDraining(t *testing.T) {
	pool := echoPool()
	lim := config.Default().Limits
	lim.SessionRate, lim.SessionBurst = 0.001, 2
	r, st, s := testRouter(t, map[string]*route{"x": {name: "x", pool: pool, timeout: time.Second}}, lim)
	var rp replies
	for i := 0; i < 3; i++ {
		r.Handle(s, []byte(fmt.Sprintf(`{"type":"x","id":"%d"}`, i)), ReplyFunc(rp.reply))
	}
	st.waitEnd(t, "0")
	st.waitEnd(t, "1")
	if got := rp.last(); !strings.Contains(got, `"id":"2","code":"rate_limited"`) {
		t.Fatalf("third message: %s, want rate_limited", got)
	}
	r2, _, s2 := testRouter(t, map[string]*route{"x": {name: "x", pool: pool, timeout: time.Second}}, config.Limits{})
	r2.SetDraining(true)
	r2.Handle(s2, []byte(`{"type":"x","id":"d"}`), ReplyFunc(rp.reply))
	if got := rp.last(); !strings.Contains(got, `"id":"d","code":"draining"`) {
		t.Fatalf("while draining: %s", got)
	}
	if pool.count() != 2 {
		t.Fatalf("backend calls = %d, want 2", pool.count())
	}
}

func TestStoreFailureIsClearError(t *testing.T) {
	pool := echoPool()
	r, st, s := testRouter(t, map[string]*route{"x": {name: "x", pool: pool, timeout: time.Second, needsSession: true}}, config.Limits{})
	st.loadErr = errors.New("connection refused")
	r.Handle(s, []byte(`{"type":"x","id":"1"}`), ReplyFunc((&replies{}).reply))
	got := st.waitEnd(t, "1")
	if len(got) != 1 || !strings.Contains(got[0], `"message":"session store unavailable"`) || pool.count() != 0 {
		t.Fatalf("got %v (backend calls %d), want one store error and no call", got, pool.count())
	}
}

// TestInlineEchoNoGoroutine: with a store that numbers terminals in
// memory, an inline echo's result goes through Sessions.Terminal before
// Handle returns.
func TestInlineEchoNoGoroutine(t *testing.T) {
	r, st, s := testRouter(t, map[string]*route{"echo": {name: "echo", inline: true}}, config.Limits{})
	var rp replies
	r.Handle(s, []byte(`{"type":"echo","id":"e","data":{"x":[1]}}`), ReplyFunc(rp.reply))
	if got := st.messages("e"); len(got) != 1 || got[0] != `{"type":"result","id":"e","data":{"x":[1]}}` {
		t.Fatalf("inline echo terminal %q", got)
	}
}

// TestAck: a valid ack reaches the store with no answer; a bad one is a
// bad_request.
func TestAck(t *testing.T) {
	r, st, s := testRouter(t, map[string]*route{}, config.Limits{})
	var rp replies
	r.Handle(s, []byte(`{"type":"ack","pos":12}`), ReplyFunc(rp.reply))
	if got := rp.last(); got != "" {
		t.Fatalf("ack answered %s", got)
	}
	st.mu.Lock()
	acks := slices.Clone(st.acks)
	st.mu.Unlock()
	if !slices.Equal(acks, []uint64{12}) {
		t.Fatalf("acks = %v, want [12]", acks)
	}
	for _, bad := range []string{`{"type":"ack"}`, `{"type":"ack","pos":-1}`, `{"type":"ack","pos":"3"}`, `{"type":"ack","pos":1.5}`, `{"type":"ack","pos":9007199254740992}`} {
		r.Handle(s, []byte(bad), ReplyFunc(rp.reply))
		if got := rp.last(); !strings.Contains(got, `"code":"bad_request"`) {
			t.Errorf("%s answered %q, want bad_request", bad, got)
		}
	}
}

// discardTerminals is a fakeStore whose inline terminals go nowhere: a
// benchmark measures dispatch, not the fake's bookkeeping (whose channel
// of ended requests fills up after 1024 terminals and then blocks).
type discardTerminals struct{ *fakeStore }

func (discardTerminals) Terminal(context.Context, string, string, []byte) (uint64, error) {
	return 1, nil
}

func BenchmarkHandleInlineEcho(b *testing.B) {
	st := newFakeStore()
	r := New(&Table{routes: map[string]*route{"echo": {name: "echo", inline: true}}, limits: config.Limits{MaxInflight: 10, SessionInflight: 10, SessionRate: 1e12, SessionBurst: 1 << 30}},
		discardTerminals{st}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s := st.session("s", "u")
	msg := []byte(`{"type":"echo","id":"42","data":{"text":"hello world"}}`)
	reply := ReplyFunc(func([]byte) error { return nil })
	b.ReportAllocs()
	for b.Loop() {
		r.Handle(s, msg, reply)
	}
}

// TestIDSurvivesBufferReuse pins a bug: the decoded id aliases the frame
// buffer, so a request that outlives Handle must own a copy. The caller
// reuses the buffer right after Handle returns, as netpoll does.
func TestIDSurvivesBufferReuse(t *testing.T) {
	started, release := make(chan string, 1), make(chan struct{})
	pool := &fakePool{fn: func(_ context.Context, req *backends.Request, _ backends.Emit) (backends.Result, error) {
		started <- req.ID
		<-release
		return backends.Result{Data: json.RawMessage(`1`)}, nil
	}}
	r, st, s := testRouter(t, map[string]*route{"x": {name: "x", pool: pool, timeout: time.Second}}, config.Limits{})
	buf := []byte(`{"type":"x","id":"orig-id","data":null}`)
	r.Handle(s, buf, ReplyFunc((&replies{}).reply))
	<-started
	copy(buf, []byte(`{"type":"x","id":"XXXXXXX","data":null}`))
	close(release)
	got := st.waitEnd(t, "orig-id")
	if len(got) != 1 || got[0] != `{"type":"result","id":"orig-id","data":1}` {
		t.Fatalf("terminal %v, want the original id after the buffer was reused", got)
	}
	if n := s.InFlight(); n != 0 {
		t.Fatalf("in flight %d after the terminal: the registry key was corrupted", n)
	}
}

// recordingMetrics keeps the route labels it was given.
type recordingMetrics struct {
	mu     sync.Mutex
	routes map[string]int
}

func (m *recordingMetrics) Request(route, _ string, _ time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.routes[route]++
}

// observerMetrics also resolves recorders (RequestObservers): the inline
// echo records through them.
type observerMetrics struct {
	recordingMetrics
	resolved map[string]int // RequestObserver calls by route and outcome
	observed map[string]int // recorder calls by route and outcome
}

func (m *observerMetrics) RequestObserver(route, outcome string) func(time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := route + "/" + outcome
	m.resolved[k]++
	return func(time.Duration) {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.observed[k]++
	}
}

// TestInlineEchoRecorder: inline results are recorded through the
// route's resolved recorder, once per request, resolved once per route.
func TestInlineEchoRecorder(t *testing.T) {
	m := &observerMetrics{recordingMetrics: recordingMetrics{routes: map[string]int{}},
		resolved: map[string]int{}, observed: map[string]int{}}
	st := newFakeStore()
	r := New(&Table{routes: map[string]*route{"echo": {name: "echo", inline: true}, "echo2": {name: "echo2", inline: true}},
		limits: config.Default().Limits}, st, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s := st.session("s", "u")
	for i := 0; i < 20; i++ {
		r.Handle(s, fmt.Appendf(nil, `{"type":"echo","id":"e%d","data":%d}`, i, i), ReplyFunc((&replies{}).reply))
		if i%4 == 0 {
			r.Handle(s, fmt.Appendf(nil, `{"type":"echo2","id":"f%d"}`, i), ReplyFunc((&replies{}).reply))
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.observed["echo/result"] != 20 || m.observed["echo2/result"] != 5 || len(m.observed) != 2 {
		t.Errorf("recorded %v, want echo/result 20 and echo2/result 5", m.observed)
	}
	if m.resolved["echo/result"] != 1 || m.resolved["echo2/result"] != 1 || len(m.resolved) != 2 {
		t.Errorf("resolved %v, want each route's result once", m.resolved)
	}
	if len(m.routes) != 0 {
		t.Errorf("Request called for %v, want the recorders only", m.routes)
	}
}

// TestMetricLabelsAreRouteNames pins a chaos finding: labels must be the
// configured route names (or "_unknown"), never bytes of the frame, which
// the caller reuses and a client controls.
func TestMetricLabelsAreRouteNames(t *testing.T) {
	m := &recordingMetrics{routes: map[string]int{}}
	st := newFakeStore()
	r := New(&Table{routes: map[string]*route{"echo": {name: "echo", inline: true}}, limits: config.Default().Limits},
		st, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s := st.session("s", "u")
	buf := make([]byte, 0, 128)
	for i := 0; i < 50; i++ {
		buf = fmt.Appendf(buf[:0], `{"type":"made-up-%d","id":"%d"}`, i, i)
		r.Handle(s, buf, ReplyFunc((&replies{}).reply))
		buf = fmt.Appendf(buf[:0], `{"type":"echo","id":"e%d"}`, i)
		r.Handle(s, buf, ReplyFunc((&replies{}).reply))
	}
	copy(buf, bytes.Repeat([]byte("X"), len(buf)))
	if len(m.routes) != 2 || m.routes[unknownRoute] != 50 || m.routes["echo"] != 50 {
		t.Fatalf("route labels %v, want only echo and %s, 50 each", m.routes, unknownRoute)
	}
}
