package dispatch

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/backends"
	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/traceparent"
	"github.com/orchestratord/orchestratord/internal/logbuf"
)

// syncBuffer is a log sink safe for the request goroutines.
type syncBuffer struct{ logbuf.Buffer }

// lines returns the JSON log lines written so far.
func (s *syncBuffer) lines() []map[string]any {
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(s.Bytes()), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(l, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// TestTraceAndAccessLog: the traceparent sent to the backend carries the
// trace id of the session's trusted handshake (or a new one per request),
// and the access line and the failure line about the request carry the
// same id.
func TestTraceAndAccessLog(t *testing.T) {
	var (
		mu   sync.Mutex
		seen = map[string]string{} // request id -> traceparent
	)
	pool := &fakePool{fn: func(_ context.Context, req *backends.Request, emit backends.Emit) (backends.Result, error) {
		mu.Lock()
		seen[req.ID] = req.TraceParent
		mu.Unlock()
		emit(json.RawMessage(`"part"`))
		if string(req.Data) == `"fail"` {
			return backends.Result{}, &backends.Error{Status: 500, Message: "boom"}
		}
		return backends.Result{Data: req.Data}, nil
	}}
	var logs syncBuffer
	st := newFakeStore()
	rt := &route{name: "sql", backend: "db", pool: pool, timeout: time.Second}
	r := New(&Table{routes: map[string]*route{"sql": rt}, limits: config.Default().Limits}, st, nil,
		slog.New(slog.NewJSONHandler(&logs, nil)))
	r.SetAccessLog(true)
	s := st.session("s_1", "alice")
	var rp replies

	r.Handle(s, []byte(`{"type":"sql","id":"a","data":1}`), ReplyFunc(rp.reply))
	r.Handle(s, []byte(`{"type":"sql","id":"b","data":2}`), ReplyFunc(rp.reply))
	st.waitEnd(t, "a")
	st.waitEnd(t, "b")
	const trusted = "4bf92f3577b34da6a3ce929d0e0e4736"
	s.setTraceID(trusted)
	r.Handle(s, []byte(`{"type":"sql","id":"c","data":"fail"}`), ReplyFunc(rp.reply))
	st.waitEnd(t, "c")

	mu.Lock()
	ta, tb, tc := traceparent.TraceID(seen["a"]), traceparent.TraceID(seen["b"]), traceparent.TraceID(seen["c"])
	mu.Unlock()
	if ta == "" || tb == "" || ta == tb {
		t.Errorf("untrusted requests' trace ids = %q, %q; want two distinct valid ids", ta, tb)
	}
	if tc != trusted {
		t.Errorf("trusted session's trace id = %q, want %q", tc, trusted)
	}
	// The access line is written just after the terminal: wait for the
	// requests' goroutines to end.
	if err := r.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": ta, "b": tb, "c": trusted}
	access := 0
	failed := false
	for _, l := range logs.lines() {
		id, _ := l["request"].(string)
		if l["trace"] != want[id] {
			t.Errorf("log line %v: trace %v, want %q", l, l["trace"], want[id])
		}
		switch l["msg"] {
		case "request":
			access++
			if l["route"] != "sql" || l["backend"] != "db" || l["duration_ms"] == nil || l["bytes_in"] == nil || l["bytes_out"].(float64) <= 0 {
				t.Errorf("access line %v lacks a field", l)
			}
			if id == "c" && l["outcome"] != "backend_error" || id != "c" && l["outcome"] != "result" {
				t.Errorf("access line %v: wrong outcome", l)
			}
		case "request failed":
			failed = id == "c"
		}
	}
	if access != 3 || !failed {
		t.Errorf("access lines = %d (want 3), failure line for c = %v:\n%v", access, failed, logs.lines())
	}

	// Off by default: no access line.
	logs.Reset()
	r.SetAccessLog(false)
	r.Handle(s, []byte(`{"type":"sql","id":"d","data":1}`), ReplyFunc(rp.reply))
	st.waitEnd(t, "d")
	if err := r.Wait(context.Background()); err != nil { // the request's goroutine has ended
		t.Fatal(err)
	}
	if n := len(logs.lines()); n != 0 {
		t.Errorf("with the access log off got %d lines", n)
	}
}
