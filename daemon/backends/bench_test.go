package backends

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/facebookgo/clock"
	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/telemetry"
)

// BenchmarkOpenRejection: a call refused because every endpoint's breaker
// is open (the path dispatch takes to the fallback).
func BenchmarkOpenRejection(b *testing.B) {
	s := newRealSet(b, poolCfg("round_robin", 8, 1, time.Hour, "http://127.0.0.1:1/a", "http://127.0.0.1:1/b", "http://127.0.0.1:1/c"))
	p := mustPool(b, withoutChecks(s), "b")
	tripAll(p)
	req := &Request{ID: "1"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Call(ctx, req, noEmit); err != ErrOpen {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenRejectionParallel: the same under contention.
func BenchmarkOpenRejectionParallel(b *testing.B) {
	s := newRealSet(b, poolCfg("least_inflight", 8, 1, time.Hour, "http://127.0.0.1:1/a", "http://127.0.0.1:1/b"))
	p := mustPool(b, withoutChecks(s), "b")
	tripAll(p)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := &Request{ID: "1"}
		for pb.Next() {
			if _, err := p.Call(context.Background(), req, noEmit); err != ErrOpen {
				b.Error(err)
				return
			}
		}
	})
}

// newRealSet builds a Set with New (the real clock, as in production).
func newRealSet(b *testing.B, cfg map[string]config.Backend) *Set {
	s, err := New(cfg, nil, testLogger(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	return s
}

func BenchmarkEcho(b *testing.B) {
	s, _ := newTestSet(b, map[string]config.Backend{"e": {Kind: config.KindEcho}}, nil)
	benchEchoCalls(b, s)
}

// benchEchoCalls measures calls of the echo pool "e" of s.
func benchEchoCalls(b *testing.B, s *Set) {
	p := mustPool(b, s, "e")
	req := &Request{ID: "1", Data: []byte(`{"hello":"world"}`)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Call(context.Background(), req, noEmit); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEchoMetered: BenchmarkEcho with the daemon's metrics recording
// the call (histogram and outcome counter), to compare with BenchmarkEcho.
func BenchmarkEchoMetered(b *testing.B) {
	s, err := newSet(map[string]config.Backend{"e": {Kind: config.KindEcho}}, nil, testLogger(b), clock.New(), WithMeter(telemetry.New("bench")))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	benchEchoCalls(b, s)
}

// BenchmarkHTTPJSON: one http kind call with a JSON answer on loopback
// (client and server share the machine's cores).
func BenchmarkHTTPJSON(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data":{"rows":[[1,"a"],[2,"b"]]},"context":{"last":"q"}}`)
	}))
	defer srv.Close()
	s, _ := newTestSet(b, poolCfg("", 64, 5, time.Second, srv.URL), nil)
	p := mustPool(b, s, "b")
	req := &Request{ID: "42", Type: "sql", SessionID: "s_1", UserID: "u1", Data: []byte(`{"q":"select 1"}`), Context: []byte(`{"db":"main"}`)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Call(context.Background(), req, noEmit); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSSEParse: reading a 100-chunk SSE answer from memory.
func BenchmarkSSEParse(b *testing.B) {
	var sb strings.Builder
	for range 100 {
		sb.WriteString("data: {\"chunk\":{\"text\":\"some words of a reply\"}}\n\n")
	}
	sb.WriteString("data: {\"data\":null}\n\n")
	body := sb.String()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := readAnswer(context.Background(), mediaSSE, strings.NewReader(body), noEmit); err != nil {
			b.Fatal(err)
		}
	}
}
