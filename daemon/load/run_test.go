package load

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// TestMain lets the test binary serve as a shard process for Procs > 1.
func TestMain(m *testing.M) {
	if os.Getenv(ChildEnv) != "" {
		if err := RunChild(context.Background(), os.Stdin, os.Stdout, slog.New(slog.DiscardHandler)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testServer is an echo server with a goroutine per connection. In protocol
// mode it sends a welcome and answers {"type":"echo","id":…,"data":…} with
// chunks then a result; misbehave adds a second terminal to every answer.
type testServer struct {
	ln        net.Listener
	protocol  bool
	chunks    int
	misbehave bool
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     map[net.Conn]bool
	tokens    []string
}

func startServer(t *testing.T, protocol bool, chunks int, misbehave bool) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{ln: ln, protocol: protocol, chunks: chunks, misbehave: misbehave, conns: map[net.Conn]bool{}}
	s.wg.Go(s.accept)
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *testServer) url() string { return "ws://" + s.ln.Addr().String() + "/ws" }

func (s *testServer) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Go(func() { s.serve(c) })
	}
}

func (s *testServer) serve(c net.Conn) {
	defer func() {
		_ = c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	u := ws.Upgrader{OnHeader: func(k, v []byte) error {
		if strings.EqualFold(string(k), "Authorization") {
			s.mu.Lock()
			s.tokens = append(s.tokens, string(v))
			s.mu.Unlock()
		}
		return nil
	}}
	if _, err := u.Upgrade(c); err != nil {
		return
	}
	if s.protocol {
		if wsutil.WriteServerText(c, []byte(`{"type":"welcome","session":"s1","resumed":false}`)) != nil {
			return
		}
	}
	for {
		msg, op, err := wsutil.ReadClientData(c)
		if err != nil {
			return
		}
		if !s.protocol {
			if wsutil.WriteServerMessage(c, op, msg) != nil {
				return
			}
			continue
		}
		var req struct {
			ID   string          `json:"id"`
			Data json.RawMessage `json:"data"`
		}
		if json.Unmarshal(msg, &req) != nil {
			return
		}
		for i := range s.chunks {
			_ = wsutil.WriteServerText(c, fmt.Appendf(nil, `{"type":"chunk","id":%q,"seq":%d,"data":%d}`, req.ID, i, i))
		}
		res := fmt.Appendf(nil, `{"type":"result","id":%q,"data":%s}`, req.ID, req.Data)
		if wsutil.WriteServerText(c, res) != nil {
			return
		}
		if s.misbehave {
			_ = wsutil.WriteServerText(c, res)
		}
	}
}

func runShort(t *testing.T, o Options) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o.Settle = 10 * time.Millisecond
	o.ServerPIDs = []int{os.Getpid()}
	res, err := Run(ctx, o, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Log("\n" + res.Summary())
	return res
}

func TestRunAgainstEchoServers(t *testing.T) {
	if testing.Short() {
		t.Skip("integration run")
	}
	raw := startServer(t, false, 0, false)
	proto := startServer(t, true, 2, false)
	bad := startServer(t, true, 0, true)
	src := []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}
	tests := []struct {
		name  string
		o     Options
		check func(t *testing.T, r *Result)
	}{
		{"raw echo", Options{Mode: ModeEcho, URL: raw.url(), Raw: true, Conns: 100, Workers: 20, Duration: 400 * time.Millisecond, Sources: src},
			func(t *testing.T, r *Result) {
				if r.Received == 0 || int64(r.Received) != r.Latency.Count || r.ErrorCount != 0 || r.Alive != 100 {
					t.Errorf("received %d, latency count %d, errors %d, alive %d: want answers, no errors, 100 alive", r.Received, r.Latency.Count, r.ErrorCount, r.Alive)
				}
			}},
		{"protocol echo with chunks", Options{Mode: ModeEcho, URL: proto.url(), Token: "tok", Conns: 50, Workers: 10, Payload: 200, Duration: 300 * time.Millisecond},
			func(t *testing.T, r *Result) {
				if r.Received == 0 || r.ErrorCount != 0 || r.Connect.Welcomed != 50 {
					t.Errorf("received %d, errors %v, welcomed %d: want answers, no errors, 50 welcomed", r.Received, r.Errors, r.Connect.Welcomed)
				}
				proto.mu.Lock()
				defer proto.mu.Unlock()
				if len(proto.tokens) == 0 || proto.tokens[0] != "Bearer tok" {
					t.Errorf("server saw Authorization %v, want Bearer tok", proto.tokens)
				}
			}},
		{"second terminal detected", Options{Mode: ModeEcho, URL: bad.url(), Conns: 10, Workers: 5, Payload: 100, Duration: 200 * time.Millisecond},
			func(t *testing.T, r *Result) {
				if r.Errors[ErrUnknownID.Error()] == 0 {
					t.Errorf("errors %v: want %q counted", r.Errors, ErrUnknownID)
				}
			}},
		{"open-loop rate", Options{Mode: ModeRate, URL: raw.url(), Raw: true, Conns: 20, Rate: 2000, Duration: 500 * time.Millisecond},
			func(t *testing.T, r *Result) {
				if r.Sent < 800 || r.Sent > 1100 || r.Received != r.Sent || r.ErrorCount != 0 {
					t.Errorf("sent %d received %d errors %d: want about 1000 sent, all answered", r.Sent, r.Received, r.ErrorCount)
				}
			}},
		{"hold samples the server", Options{Mode: ModeHold, URL: raw.url(), Raw: true, Conns: 200, Duration: 100 * time.Millisecond},
			func(t *testing.T, r *Result) {
				s := r.Server
				// The test server is this process: it holds both ends.
				// Its RSS is read before and after connecting, but the
				// delta is not asserted positive: RSS is the whole
				// process's, and the runtime returning pages freed by
				// the earlier subtests can outweigh 200 connections
				// (seen: -1782 B per conn under load). The fds are exact.
				if r.Alive != 200 || s.FDsPerConn < 1.5 {
					t.Errorf("alive %d, fds/conn %.2f: want 200 alive, about 2 fds per conn", r.Alive, s.FDsPerConn)
				}
				if s.Before.RSSBytes <= 0 || s.Connected.RSSBytes <= 0 || s.Conns != 200 ||
					s.RSSPerConn != float64(s.Connected.RSSBytes-s.Before.RSSBytes)/200 {
					t.Errorf("RSS %d -> %d B over %d conns, %.1f B per conn: want both sampled and the delta divided by 200",
						s.Before.RSSBytes, s.Connected.RSSBytes, s.Conns, s.RSSPerConn)
				}
			}},
		{"paced hold", Options{Mode: ModeHold, URL: proto.url(), Conns: 40, ConnectRate: 400, Procs: 2, Duration: 50 * time.Millisecond, Sources: src},
			func(t *testing.T, r *Result) {
				// 400/s over two shards: each starts its 20 handshakes
				// at least 5 ms apart, so the last one starts >= 95 ms in.
				if r.Alive != 40 || r.Connect.Welcomed != 40 || r.ErrorCount != 0 || r.Connect.Seconds < 0.095 {
					t.Errorf("alive %d, welcomed %d, errors %d, connected in %.3f s: want 40, 40, 0, >= 0.095 s", r.Alive, r.Connect.Welcomed, r.ErrorCount, r.Connect.Seconds)
				}
				if r.Options.ConnectRate != 400 {
					t.Errorf("result options connect rate %v, want 400", r.Options.ConnectRate)
				}
			}},
		{"slow peers", Options{Mode: ModeSlow, URL: raw.url(), Raw: true, Conns: 20, Workers: 10, SlowPeers: 30, Duration: 300 * time.Millisecond},
			func(t *testing.T, r *Result) {
				s := r.Slow
				if s == nil || s.PeersConnected != 30 || s.BaseMsgs == 0 || s.SlowMsgs == 0 || s.LateOK != lateProbes {
					t.Errorf("slow report %+v: want 30 peers, echoes in both phases, every late client in", s)
				}
			}},
		{"churn", Options{Mode: ModeChurn, URL: proto.url(), ChurnWorkers: 4, Duration: 300 * time.Millisecond, Sources: src},
			func(t *testing.T, r *Result) {
				if r.Churn == nil || r.Churn.Cycles == 0 || r.Churn.Failed != 0 {
					t.Errorf("churn %+v: want cycles and no failures", r.Churn)
				}
			}},
		{"two processes", Options{Mode: ModeEcho, URL: raw.url(), Raw: true, Conns: 40, Workers: 10, Duration: 300 * time.Millisecond, Procs: 2, Sources: src},
			func(t *testing.T, r *Result) {
				if r.Alive != 40 || r.Received == 0 || r.ErrorCount != 0 || r.Latency.Count != int64(r.Received) {
					t.Errorf("alive %d received %d errors %d hist %d: want both shards merged", r.Alive, r.Received, r.ErrorCount, r.Latency.Count)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, runShort(t, tc.o)) })
	}
}

func TestRunRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "ws://" + ln.Addr().String() + "/ws"
	_ = ln.Close()
	_, err = Run(context.Background(), Options{Mode: ModeEcho, URL: url, Conns: 3, Duration: time.Millisecond, Settle: time.Millisecond},
		slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("Run against a closed port succeeded, want an error")
	}
}
