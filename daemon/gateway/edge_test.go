package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/orchestratord/orchestratord/daemon/auth"
	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/sessions"
	"github.com/orchestratord/orchestratord/netpoll"
)

// TestClientReadyzSaysOnlyAReason: on the client listener a failing
// /readyz body is exactly {"status":"not_ready","reason":"<code>"}; the
// detail stays in Ready's error (the admin listener's body).
func TestClientReadyzSaysOnlyAReason(t *testing.T) {
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	mgr, err := sessions.Open(context.Background(), config.Default().Sessions, "probe-test", log)
	if err != nil {
		t.Fatal(err)
	}
	router := &fakeRouter{}
	g := &Gateway{opts: Options{Path: "/ws"}, mgr: ManagerSessions(mgr), router: router}
	h := g.PlainHandler()
	get := func() (int, string) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "http://x/readyz", nil))
		return w.Code, w.Body.String()
	}
	if code, body := get(); code != 200 || body != `{"status":"ready"}`+"\n" {
		t.Fatalf("ready: %d %q", code, body)
	}
	router.SetDraining(true)
	if code, body := get(); code != 503 || body != `{"status":"not_ready","reason":"draining"}`+"\n" {
		t.Fatalf("draining: %d %q", code, body)
	}
	router.SetDraining(false)
	mgr.Close() // the store is gone
	code, body := get()
	if code != 503 || body != `{"status":"not_ready","reason":"store"}`+"\n" {
		t.Fatalf("store down: %d %q", code, body)
	}
	err = g.Ready(context.Background())
	if err == nil || !strings.Contains(err.Error(), "session store unreachable") {
		t.Fatalf("Ready() = %v, want the detail for the admin listener", err)
	}
}

// TestPlainRefusalsFromTheTable: the plain handler's 400 and 404 are the
// table's rows, body and all.
func TestPlainRefusalsFromTheTable(t *testing.T) {
	g := &Gateway{opts: Options{Path: "/ws"}}
	h := g.PlainHandler()
	for path, want := range map[string]string{"/ws": `{"error":"bad_request"}` + "\n", "/nope": `{"error":"not_found"}` + "\n"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "http://x"+path, nil))
		if w.Body.String() != want {
			t.Errorf("GET %s: body %q, want %q", path, w.Body.String(), want)
		}
	}
}

func TestHandshakeTraceparent(t *testing.T) {
	const good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, tc := range []struct {
		vals []string
		want string
	}{
		{[]string{good}, good},
		{nil, ""},
		{[]string{good, good}, ""},
		{[]string{strings.ToUpper(good)}, ""},
		{[]string{"00-00000000000000000000000000000000-00f067aa0ba902b7-01"}, ""},
		{[]string{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"}, ""},
		{[]string{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, ""},
		{[]string{good + "-extra"}, ""},
		{[]string{"junk"}, ""},
	} {
		h := http.Header{}
		for _, v := range tc.vals {
			h.Add("traceparent", v)
		}
		if got := handshakeTraceparent(h); got != tc.want {
			t.Errorf("handshakeTraceparent(%q) = %q, want %q", tc.vals, got, tc.want)
		}
	}
}

func TestClientString(t *testing.T) {
	for in, want := range map[string]string{"192.0.2.7:0": "192.0.2.7", "192.0.2.7:4711": "192.0.2.7:4711", "[2001:db8::1]:0": "2001:db8::1"} {
		if got := clientString(netip.MustParseAddrPort(in)); got != want {
			t.Errorf("clientString(%s) = %q, want %q", in, got, want)
		}
	}
}

// TestAdmitKeepsTrustedTraceparent: the handshake's traceparent is kept on
// the connection record only when the peer is a trusted proxy; the gate
// counts the client address netpoll reports, not the proxy's.
func TestAdmitKeepsTrustedTraceparent(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	cfg := config.Default()
	cfg.Auth.Anonymous = true
	cfg.Limits.PerIPConnections = 1
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	g := &Gateway{gate: auth.NewGate(cfg, nil, log), metrics: noMetrics{}, log: log, ctx: context.Background()}
	proxy := netip.MustParseAddrPort("10.0.0.1:5000")
	for i, tc := range []struct {
		trusted bool
		client  string
		want    string
	}{
		{true, "203.0.113.5:0", tp},
		{false, "203.0.113.6:0", ""},
	} {
		r := &netpoll.Request{Method: "GET", Path: "/ws", Header: http.Header{"Traceparent": {tp}},
			Remote: proxy, Client: netip.MustParseAddrPort(tc.client), Trusted: tc.trusted}
		d := g.Admit(r)
		if d.Refusal != nil {
			t.Fatalf("case %d refused: %v", i, d.Refusal)
		}
		if got := d.Value.(*conn).pre().traceparent; got != tc.want {
			t.Errorf("case %d: handshakeTraceparent %q, want %q", i, got, tc.want)
		}
	}
	// Both clients came through the same proxy but are counted apart: a
	// second one from 203.0.113.5 is over its limit of 1.
	d := g.Admit(&netpoll.Request{Method: "GET", Path: "/ws", Header: http.Header{}, Remote: proxy, Client: netip.MustParseAddrPort("203.0.113.5:0"), Trusted: true})
	if d.Refusal == nil || d.Refusal.Code != auth.CodeTooManyConnections {
		t.Fatalf("second client from 203.0.113.5: %+v, want too_many_connections", d.Refusal)
	}
}
