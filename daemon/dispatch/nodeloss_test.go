package dispatch

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/backends"
	"github.com/orchestratord/orchestratord/daemon/config"
)

// routeRecorder is a fakeStore that also records what BeginRoute was given.
type routeRecorder struct {
	*fakeStore
	begun map[string][]byte // request id -> retry data
}

func (r *routeRecorder) BeginRoute(sid, req, route string, retry []byte) Output {
	r.mu.Lock()
	r.begun[req] = retry
	r.mu.Unlock()
	return r.Begin(sid, req)
}

// TestRerun: a request taken over from a lost replica runs again on a
// route with retry_on_node_loss: restart notice, chunks from seq 0, one
// terminal. Routes without it, unknown routes and an id already in flight
// are refused (the caller then writes node_lost).
func TestRerun(t *testing.T) {
	pool := &fakePool{fn: func(_ context.Context, req *backends.Request, emit backends.Emit) (backends.Result, error) {
		emit(json.RawMessage(`"a"`))
		emit(json.RawMessage(`"b"`))
		return backends.Result{Data: req.Data}, nil
	}}
	block := make(chan struct{})
	slow := &fakePool{fn: func(ctx context.Context, _ *backends.Request, _ backends.Emit) (backends.Result, error) {
		<-block
		return backends.Result{Data: json.RawMessage(`1`)}, nil
	}}
	routes := map[string]*route{
		"again": {name: "again", pool: pool, timeout: time.Second, retry: true},
		"once":  {name: "once", pool: pool, timeout: time.Second},
		"slow":  {name: "slow", pool: slow, timeout: 5 * time.Second, retry: true},
	}
	r, st, s := testRouter(t, routes, config.Limits{})
	rec := &routeRecorder{fakeStore: st, begun: map[string][]byte{}}
	r.store = rec

	if !r.Rerun("s_1", "alice", "x1", "again", []byte(`{"q":1}`)) {
		t.Fatal("Rerun refused a route with retry_on_node_loss")
	}
	got := st.waitEnd(t, "x1")
	want := []string{
		`{"type":"restart","id":"x1"}`,
		`{"type":"chunk","id":"x1","seq":0,"data":"a"}`,
		`{"type":"chunk","id":"x1","seq":1,"data":"b"}`,
		`{"type":"result","id":"x1","data":{"q":1}}`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("rerun output\n got %q\nwant %q", got, want)
	}
	if d := rec.begun["x1"]; string(d) != `{"q":1}` {
		t.Fatalf("rerun recorded retry data %q, want the request's data (it can be run again)", d)
	}
	for _, tc := range []struct{ name, route, id string }{
		{"route without retry", "once", "x2"},
		{"unknown route", "gone", "x3"},
	} {
		if r.Rerun("s_1", "alice", tc.id, tc.route, nil) {
			t.Fatalf("%s: Rerun accepted", tc.name)
		}
	}
	// An id in flight in the session is not run twice.
	var rp replies
	r.Handle(s, []byte(`{"type":"slow","id":"dup","data":2}`), ReplyFunc(rp.reply))
	if r.Rerun("s_1", "alice", "dup", "slow", []byte(`2`)) {
		t.Fatal("Rerun accepted an id already in flight")
	}
	close(block)
	st.waitEnd(t, "dup")
	if d := rec.begun["dup"]; string(d) != `2` {
		t.Fatalf("a request of a retrying route recorded %q, want its data", d)
	}
	// Without data the record still says "retry" (JSON null).
	r.Handle(s, []byte(`{"type":"again","id":"nodata"}`), ReplyFunc(rp.reply))
	st.waitEnd(t, "nodata")
	if d := rec.begun["nodata"]; string(d) != `null` {
		t.Fatalf("retry data of a request without data = %q, want null", d)
	}
	r.Handle(s, []byte(`{"type":"once","id":"plain"}`), ReplyFunc(rp.reply))
	st.waitEnd(t, "plain")
	if d, ok := rec.begun["plain"]; !ok || d != nil {
		t.Fatalf("a route without retry recorded %q (begun %v), want nil", d, ok)
	}
	r.SetDraining(true)
	if r.Rerun("s_1", "alice", "late", "again", nil) {
		t.Fatal("Rerun accepted while draining")
	}
	// Counted out once the terminal is written: wait for the goroutines.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if n := r.InFlight(); n != 0 {
		t.Fatalf("%d requests counted in flight after the reruns ended", n)
	}
}
