package backends

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// writeParts writes each part and flushes after it, so an object can be
// split across TCP writes.
func writeParts(w http.ResponseWriter, ctype string, parts ...string) {
	w.Header().Set("Content-Type", ctype)
	f := w.(http.Flusher)
	for _, p := range parts {
		io.WriteString(w, p)
		f.Flush()
	}
}

func httpBackendCfg(urls ...string) map[string]config.Backend {
	return map[string]config.Backend{"b": {
		Kind:          config.KindHTTP,
		Endpoints:     urls,
		MaxConcurrent: 8,
		Breaker:       config.Breaker{Failures: 5, Cooldown: config.Duration(time.Second)},
	}}
}

func TestHTTPAnswers(t *testing.T) {
	tests := []struct {
		name        string
		handler     http.HandlerFunc
		wantChunks  []string
		wantData    string // "" with wantCode "" means a null result
		wantPatch   string
		wantCode    string
		wantMessage string // for backend_rejected
		wantFailure bool
	}{
		{
			name: "json",
			handler: func(w http.ResponseWriter, r *http.Request) {
				writeParts(w, "application/json; charset=utf-8", `{"data":{"rows":[1,2]},"context":{"db":"x"}}`)
			},
			wantData: `{"rows":[1,2]}`, wantPatch: `{"db":"x"}`,
		},
		{
			name: "vendor json type",
			handler: func(w http.ResponseWriter, r *http.Request) {
				writeParts(w, "application/vnd.sql+json", `{"data":[]}`)
			},
			wantData: `[]`,
		},
		{
			name: "json without context",
			handler: func(w http.ResponseWriter, r *http.Request) {
				writeParts(w, "application/json", `{"data":"ok"}`)
			},
			wantData: `"ok"`,
		},
		{
			name: "sse split across writes, multi-line data, comments",
			handler: func(w http.ResponseWriter, r *http.Request) {
				writeParts(w, "text/event-stream",
					": hello\n\n",
					"event: message\nid: 1\ndata: {\"chu", "nk\":\"a\"}\n\n",
					"data: {\"chunk\":\n", "data:  \"b\"}\r\n\r\n",
					"retry: 100\n",
					"data: {\"data\":{\"n\":2},\"context\":{\"k\":1}}\n\n",
					"data: {\"chunk\":\"after the end\"}\n\n")
			},
			wantChunks: []string{`"a"`, `"b"`}, wantData: `{"n":2}`, wantPatch: `{"k":1}`,
		},
		{
			name: "ndjson split mid-object",
			handler: func(w http.ResponseWriter, r *http.Request) {
				writeParts(w, "application/x-ndjson",
					`{"chunk":{"i":0}}`+"\n"+`{"chu`, `nk":{"i":1}}`+"\n\n",
					`{"data":[0,1]}`+"\n")
			},
			wantChunks: []string{`{"i":0}`, `{"i":1}`}, wantData: `[0,1]`,
		},
		{
			name: "final object, then the stream stays open",
			handler: func(w http.ResponseWriter, r *http.Request) {
				writeParts(w, "text/event-stream", "data: {\"chunk\":1}\n\ndata: {\"data\":2}\n\n")
				<-r.Context().Done() // until the client closes the connection
			},
			wantChunks: []string{"1"}, wantData: "2",
		},
		{
			name: "stream without final object",
			handler: func(w http.ResponseWriter, r *http.Request) {
				writeParts(w, "application/x-ndjson", `{"chunk":1}`+"\n", `{"chunk":2}`)
			},
			wantChunks: []string{`1`, `2`},
		},
		{
			name: "sse error object",
			handler: func(w http.ResponseWriter, r *http.Request) {
				writeParts(w, "text/event-stream", "data: {\"chunk\":1}\n\n", "data: {\"error\":{\"message\":\"index gone\"}}\n\n")
			},
			wantChunks: []string{`1`}, wantCode: "backend_error", wantFailure: true,
		},
		{
			name: "malformed ndjson line",
			handler: func(w http.ResponseWriter, r *http.Request) {
				writeParts(w, "application/x-ndjson", `{"chunk":1}`+"\n", "{not json\n", `{"data":1}`+"\n")
			},
			wantChunks: []string{`1`}, wantCode: "backend_error", wantFailure: true,
		},
		{
			name: "object with no known key",
			handler: func(w http.ResponseWriter, r *http.Request) {
				writeParts(w, "application/x-ndjson", `{"hello":1}`+"\n")
			},
			wantCode: "backend_error", wantFailure: true,
		},
		{
			name: "malformed json answer",
			handler: func(w http.ResponseWriter, r *http.Request) {
				writeParts(w, "application/json", `{"data":`)
			},
			wantCode: "backend_error", wantFailure: true,
		},
		{
			name: "unsupported content type",
			handler: func(w http.ResponseWriter, r *http.Request) {
				writeParts(w, "text/html", `<html>`)
			},
			wantCode: "backend_error", wantFailure: true,
		},
		{
			name: "400 with an error object",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(400)
				io.WriteString(w, `{"error":{"message":"unknown table \"users\""}}`)
			},
			wantCode: "backend_rejected", wantMessage: `unknown table "users"`,
		},
		{
			name: "422 with text, truncated and cleaned",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(422)
				io.WriteString(w, "bad\n\tinput "+strings.Repeat("x", 400))
			},
			wantCode: "backend_rejected", wantMessage: "bad input " + strings.Repeat("x", 246),
		},
		{
			name: "500",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "secret stack trace", 500)
			},
			wantCode: "backend_error", wantFailure: true,
		},
		{
			name: "redirect is not followed",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
			},
			wantCode: "backend_error", wantFailure: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			s, _ := newTestSet(t, httpBackendCfg(srv.URL), nil)
			var rec recorder
			res, err := mustPool(t, s, "b").Call(context.Background(), &Request{ID: "1", Type: "sql", Data: []byte(`{}`)}, rec.emit)
			if got := codeOf(err); got != tc.wantCode {
				t.Fatalf("code = %q (err %v), want %q", got, err, tc.wantCode)
			}
			if got := rec.got(); !slices.Equal(got, tc.wantChunks) {
				t.Errorf("chunks = %q, want %q", got, tc.wantChunks)
			}
			if err == nil {
				if !jsonEqual(t, string(res.Data), tc.wantData) {
					t.Errorf("data = %s, want %s", res.Data, tc.wantData)
				}
				if !jsonEqual(t, string(res.ContextPatch), tc.wantPatch) {
					t.Errorf("patch = %s, want %s", res.ContextPatch, tc.wantPatch)
				}
			}
			var be *Error
			errors.As(err, &be)
			if tc.wantMessage != "" && (be == nil || be.Message != tc.wantMessage) {
				t.Errorf("message of %v, want %q", err, tc.wantMessage)
			}
			if be != nil && strings.Contains(be.Message, "secret") {
				t.Errorf("5xx body leaked into the client message: %q", be.Message)
			}
			st := state(t, s, "b").Endpoints[0]
			if got := st.Failures == 1; got != tc.wantFailure {
				t.Errorf("breaker failures = %d, want failure %v", st.Failures, tc.wantFailure)
			}
		})
	}
}

func TestHTTPRequestShape(t *testing.T) {
	type seen struct {
		header http.Header
		body   string
		method string
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Header.Clone(), string(b), r.Method}
		writeParts(w, "application/json", `{"data":null}`)
	}))
	defer srv.Close()
	cfg := httpBackendCfg(srv.URL)
	b := cfg["b"]
	b.Headers = map[string]config.Header{"X-Api-Key": {Env: "SQL_KEY"}, "X-Static": {Value: "v"}}
	cfg["b"] = b
	s, _ := newTestSet(t, cfg, map[string]string{"SQL_KEY": "k123"})
	p := mustPool(t, s, "b")
	req := &Request{ID: "42", Type: "sql", SessionID: "s_1", UserID: "u1",
		Data: []byte(`{"q":"select 1"}`), Context: []byte(`{"db":"main"}`)}
	if _, err := p.Call(context.Background(), req, noEmit); err != nil {
		t.Fatal(err)
	}
	sn := recv(t, got, "request")
	want := `{"id":"42","type":"sql","session":{"id":"s_1","user":"u1","context":{"db":"main"}},"data":{"q":"select 1"}}`
	if !jsonEqual(t, sn.body, want) || sn.method != "POST" {
		t.Errorf("%s body = %s, want POST %s", sn.method, sn.body, want)
	}
	for k, v := range map[string]string{"Content-Type": "application/json", "X-Request-Id": "42",
		"X-Session-Id": "s_1", "X-User-Id": "u1", "X-Api-Key": "k123", "X-Static": "v"} {
		if g := sn.header.Get(k); g != v {
			t.Errorf("header %s = %q, want %q", k, g, v)
		}
	}
	if tp := sn.header.Get("Traceparent"); !regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-01$`).MatchString(tp) {
		t.Errorf("generated traceparent %q is not W3C", tp)
	}

	// A given traceparent is forwarded; nil context and data become {} and null.
	req = &Request{ID: "43", Type: "sql", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	if _, err := p.Call(context.Background(), req, noEmit); err != nil {
		t.Fatal(err)
	}
	sn = recv(t, got, "second request")
	if tp := sn.header.Get("Traceparent"); tp != req.TraceParent {
		t.Errorf("traceparent = %q, want %q", tp, req.TraceParent)
	}
	want = `{"id":"43","type":"sql","session":{"id":"","user":"","context":{}},"data":null}`
	if !jsonEqual(t, sn.body, want) {
		t.Errorf("body = %s, want %s", sn.body, want)
	}
}

// TestHTTPResetMidStream: the backend sends one chunk, then resets the
// connection: the chunk is emitted, then one backend_error.
func TestHTTPResetMidStream(t *testing.T) {
	emitted := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, bw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		line := `{"chunk":"first"}` + "\n"
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(line), line)
		bw.Flush()
		select { // reset only once the client has the chunk
		case <-emitted:
		case <-time.After(5 * time.Second):
		}
		conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
	}))
	defer srv.Close()
	s, _ := newTestSet(t, httpBackendCfg(srv.URL), nil)
	var rec recorder
	_, err := mustPool(t, s, "b").Call(context.Background(), &Request{ID: "1"}, func(p json.RawMessage) {
		rec.emit(p)
		emitted <- struct{}{}
	})
	if codeOf(err) != "backend_error" {
		t.Fatalf("err = %v, want backend_error", err)
	}
	if got := rec.got(); !slices.Equal(got, []string{`"first"`}) {
		t.Errorf("chunks = %q", got)
	}
	if f := state(t, s, "b").Endpoints[0].Failures; f != 1 {
		t.Errorf("failures = %d, want 1", f)
	}
}

func TestHTTPRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s, _ := newTestSet(t, httpBackendCfg("http://"+addr+"/q"), nil)
	_, err = mustPool(t, s, "b").Call(context.Background(), &Request{ID: "1"}, noEmit)
	if codeOf(err) != "backend_error" {
		t.Fatalf("err = %v, want backend_error", err)
	}
	if f := state(t, s, "b").Endpoints[0].Failures; f != 1 {
		t.Errorf("failures = %d, want 1", f)
	}
}

// TestHTTPContextReachesBackend: a stalled stream ends with the ctx's
// error; the handler sees its request context done. A deadline is a breaker
// failure, a client cancel is not.
func TestHTTPContextReachesBackend(t *testing.T) {
	errClient := errors.New("client cancel")
	tests := []struct {
		name        string
		ctx         func() (context.Context, func())
		wantCode    string
		wantIs      error
		wantFailure bool
	}{
		{"deadline", func() (context.Context, func()) {
			return context.WithTimeout(context.Background(), 300*time.Millisecond)
		}, "timeout", context.DeadlineExceeded, true},
		{"cancel with cause", func() (context.Context, func()) {
			ctx, cancel := context.WithCancelCause(context.Background())
			return ctx, func() { cancel(errClient) }
		}, "backend_error", errClient, false},
		{"cancel", func() (context.Context, func()) {
			return context.WithCancel(context.Background())
		}, "canceled", context.Canceled, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan struct{}, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				writeParts(w, "text/event-stream", "data: {\"chunk\":1}\n\n")
				<-r.Context().Done()
				done <- struct{}{}
			}))
			defer srv.Close()
			s, _ := newTestSet(t, httpBackendCfg(srv.URL), nil)
			ctx, cancel := tc.ctx()
			defer cancel()
			var rec recorder
			_, err := mustPool(t, s, "b").Call(ctx, &Request{ID: "1"}, func(p json.RawMessage) {
				rec.emit(p)
				if tc.name != "deadline" {
					cancel() // the client cancels once the stream has begun
				}
			})
			if !errors.Is(err, tc.wantIs) || codeOf(err) != tc.wantCode {
				t.Fatalf("err = %v (code %s), want %v (%s)", err, codeOf(err), tc.wantIs, tc.wantCode)
			}
			recv(t, done, "handler to see the request context done")
			if got := rec.got(); !slices.Equal(got, []string{"1"}) {
				t.Errorf("chunks = %q", got)
			}
			if f := state(t, s, "b").Endpoints[0].Failures; (f == 1) != tc.wantFailure {
				t.Errorf("failures = %d, want failure %v", f, tc.wantFailure)
			}
		})
	}
}
