package chaos

// A misbehaving HTTP backend in the test process: each request's data
// says how to (mis)behave, and a global fault overrides it for bursts.

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Behaviours of the fake backend, chosen by the request's data.mode.
const (
	modeJSON      = "json"       // {"data":{"from":"backend"}}
	modeSSE       = "sse"        // chunks then a final object, as SSE
	modeNDJSON    = "ndjson"     // chunks then a final object, as NDJSON
	mode5xx       = "5xx"        // 503
	modeHang      = "hang"       // never answers (until the caller gives up)
	modeReset     = "reset"      // two SSE chunks then a TCP reset
	modeBadSSE    = "bad_sse"    // one chunk then an event that is not JSON
	modeBadNDJSON = "bad_ndjson" // one chunk then a line that is not JSON
	modeNotObject = "not_object" // an SSE event that is a JSON array
)

// wantOutcome is the terminal each mode must end with (route timeout
// shorter than the hang).
var wantOutcome = map[string]string{
	modeJSON: "result", modeSSE: "result", modeNDJSON: "result",
	mode5xx: "backend_error", modeHang: "timeout", modeReset: "backend_error",
	modeBadSSE: "backend_error", modeBadNDJSON: "backend_error", modeNotObject: "backend_error",
}

// job is what clients put in data.
type job struct {
	Mode   string `json:"mode"`
	Chunks int    `json:"chunks,omitempty"`
	GapMS  int    `json:"gap_ms,omitempty"`
	Hold   bool   `json:"hold,omitempty"` // SSE: wait after the first chunk until the hold in force is released
}

// fakeBackend is an httptest server with fault injection.
type fakeBackend struct {
	srv   *httptest.Server
	fault atomic.Value // string: a mode forced on every request ("" none)
	calls atomic.Int64

	holdMu sync.Mutex
	held   chan struct{} // closed by the release of the hold in force; nil: none
}

// hold makes the SSE streams of requests with job.Hold that start from now
// on stop after their first chunk until release is called (or the caller
// gives up): their terminals are produced only after release.
func (b *fakeBackend) hold() (release func()) {
	ch := make(chan struct{})
	b.holdMu.Lock()
	b.held = ch
	b.holdMu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func newFakeBackend(t *testing.T) *fakeBackend {
	t.Helper()
	b := &fakeBackend{}
	b.fault.Store("")
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.kill)
	return b
}

// url is the endpoint for the config.
func (b *fakeBackend) url() string { return b.srv.URL + "/call" }

// kill closes every connection, including those mid-answer, and the
// listener: the backend dies.
func (b *fakeBackend) kill() {
	b.srv.CloseClientConnections()
	b.srv.Close()
}

func (b *fakeBackend) serve(w http.ResponseWriter, r *http.Request) {
	b.calls.Add(1)
	var body struct {
		ID   string `json:"id"`
		Data job    `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, "bad body", 400)
		return
	}
	j := body.Data
	if f := b.fault.Load().(string); f != "" {
		j.Mode = f
	}
	if j.Chunks == 0 {
		j.Chunks = 3
	}
	var held chan struct{}
	if j.Hold {
		b.holdMu.Lock()
		held = b.held
		b.holdMu.Unlock()
	}
	gap := time.Duration(j.GapMS) * time.Millisecond
	fl, _ := w.(http.Flusher)
	wait := func() bool {
		if gap == 0 {
			return true
		}
		select {
		case <-r.Context().Done():
			return false
		case <-time.After(gap):
			return true
		}
	}
	switch j.Mode {
	case modeJSON, "":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"data":{"from":"backend","id":%q}}`, body.ID)
	case modeSSE, modeReset:
		w.Header().Set("Content-Type", "text/event-stream")
		n := j.Chunks
		if j.Mode == modeReset {
			n = 2
		}
		for i := 0; i < n; i++ {
			fmt.Fprintf(w, "data: {\"chunk\":%d}\n\n", i)
			fl.Flush()
			if i == 0 && held != nil {
				select {
				case <-r.Context().Done():
					return
				case <-held:
				}
			}
			if !wait() {
				return
			}
		}
		if j.Mode == modeReset {
			reset(w)
			return
		}
		fmt.Fprintf(w, "data: {\"data\":{\"from\":\"backend\",\"id\":%q}}\n\ndata: [DONE]\n\n", body.ID)
	case modeNDJSON:
		w.Header().Set("Content-Type", "application/x-ndjson")
		for i := 0; i < j.Chunks; i++ {
			fmt.Fprintf(w, "{\"chunk\":%d}\n", i)
			fl.Flush()
			if !wait() {
				return
			}
		}
		fmt.Fprintf(w, "{\"data\":{\"from\":\"backend\",\"id\":%q}}\n", body.ID)
	case mode5xx:
		http.Error(w, `{"error":{"message":"internal: db password is hunter2"}}`, http.StatusServiceUnavailable)
	case modeHang:
		<-r.Context().Done()
	case modeBadSSE:
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"chunk\":0}\n\ndata: {not json at all\n\n")
	case modeBadNDJSON:
		w.Header().Set("Content-Type", "application/x-ndjson")
		fmt.Fprint(w, "{\"chunk\":0}\n\x00\xff garbage\n")
	case modeNotObject:
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: [1,2,3]\n\n")
	default:
		http.Error(w, "unknown mode", 400)
	}
}

// reset aborts the connection with a TCP RST.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("no hijacker")
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	conn.Close()
}
