package gateway

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"unsafe"

	"github.com/orchestratord/orchestratord/daemon/dispatch"
)

func TestQueryValue(t *testing.T) {
	tests := []struct{ q, key, want string }{
		{"session=s_1", "session", "s_1"},
		{"token=a&session=s%5F2", "session", "s_2"},
		{"sessions=x&session=", "session", ""},
		{"session=%zz", "session", ""},
		{"", "session", ""},
		{"a=1&&session=s_3&session=s_4", "session", "s_3"},
	}
	for _, tc := range tests {
		if got := queryValue(tc.q, tc.key); got != tc.want {
			t.Errorf("queryValue(%q, %q) = %q, want %q", tc.q, tc.key, got, tc.want)
		}
	}
}

func TestOffersSubprotocol(t *testing.T) {
	tests := []struct {
		values []string
		want   bool
	}{
		{[]string{"orchestrator.v1"}, true},
		{[]string{"chat, orchestrator.v1"}, true},
		{[]string{"chat", " orchestrator.v1 "}, true},
		{[]string{"orchestrator.v2"}, false},
		{nil, false},
	}
	for _, tc := range tests {
		if got := offersSubprotocol(tc.values, Subprotocol); got != tc.want {
			t.Errorf("offersSubprotocol(%q) = %v, want %v", tc.values, got, tc.want)
		}
	}
}

func TestPlainHandlerPaths(t *testing.T) {
	g := &Gateway{opts: Options{Path: "/ws"}}
	h := g.PlainHandler()
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/healthz", 200},
		{"/ws", 400},
		{"/nope", 404},
		{"/../../etc/passwd", 404},
		{"//healthz", 404},
		{"/a/./b", 404},
	} {
		r := httptest.NewRequest(http.MethodGet, "http://x"+tc.path, nil)
		r.URL.Path = tc.path // keep it unclean, as a raw request line would
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("GET %s = %d, want %d", tc.path, w.Code, tc.want)
		}
	}
}

// TestConnSize guards what the gateway keeps per idle connection: its
// conn, one 48-byte object that is also dispatch's Reply (no closure).
func TestConnSize(t *testing.T) {
	if sz := unsafe.Sizeof(conn{}); sz > 48 {
		t.Fatalf("conn is %d bytes, want at most 48 (idle connections)", sz)
	}
	var _ dispatch.Reply = (*conn)(nil)
}
