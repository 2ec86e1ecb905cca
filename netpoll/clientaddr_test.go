package netpoll

import (
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func TestForwardedClient(t *testing.T) {
	trusted := func(a netip.Addr) bool {
		return netip.MustParsePrefix("10.0.0.0/8").Contains(a) || a == netip.MustParseAddr("2001:db8::1")
	}
	tests := []struct {
		name   string
		xff    []string
		realIP string
		want   string // "" : none
	}{
		{"one entry", []string{"203.0.113.5"}, "", "203.0.113.5"},
		{"right-most untrusted", []string{"198.51.100.1, 203.0.113.5, 10.0.0.2"}, "", "203.0.113.5"},
		{"client-written entries to the left are ignored", []string{"1.2.3.4, 203.0.113.5"}, "", "203.0.113.5"},
		{"several headers in order", []string{"1.2.3.4", "203.0.113.5, 10.0.0.3", "10.0.0.2"}, "", "203.0.113.5"},
		{"no spaces", []string{"203.0.113.5,10.0.0.2"}, "", "203.0.113.5"},
		{"with port", []string{"203.0.113.5:4711"}, "", "203.0.113.5"},
		{"ipv6 with port", []string{"[2001:db8::7]:4711, 2001:db8::1"}, "", "2001:db8::7"},
		{"v4-mapped", []string{"::ffff:203.0.113.5"}, "", "203.0.113.5"},
		{"all trusted: X-Real-IP", []string{"10.0.0.5, 10.0.0.2"}, "203.0.113.9", "203.0.113.9"},
		{"all trusted, no X-Real-IP", []string{"10.0.0.5, 10.0.0.2"}, "", ""},
		{"garbage ends the walk", []string{"203.0.113.5, junk, 10.0.0.2"}, "", ""},
		{"garbage then X-Real-IP", []string{"203.0.113.5, junk"}, "203.0.113.9", "203.0.113.9"},
		{"empty entry", []string{"203.0.113.5,,10.0.0.2"}, "", ""},
		{"zone refused", []string{"fe80::1%eth0"}, "", ""},
		{"only X-Real-IP", nil, " 203.0.113.9 ", "203.0.113.9"},
		{"nothing", nil, "", ""},
		{"bad X-Real-IP", nil, "unknown", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tc.xff {
				h.Add("X-Forwarded-For", v)
			}
			if tc.realIP != "" {
				h.Set("X-Real-IP", tc.realIP)
			}
			a, ok := forwardedClient(h, trusted)
			got := ""
			if ok {
				got = a.String()
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// FuzzForwardedFor: never panics; an answer is a valid, unmapped address
// without zone that appears in one of the headers and, when it comes from
// X-Forwarded-For, is not trusted.
func FuzzForwardedFor(f *testing.F) {
	f.Add("198.51.100.1, 203.0.113.5, 10.0.0.2", "")
	f.Add("10.0.0.5, 10.0.0.2", "203.0.113.9")
	f.Add("[2001:db8::7]:4711,::ffff:10.1.2.3", "")
	f.Add("junk", "junk")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, xff, realIP string) {
		trusted := func(a netip.Addr) bool { return netip.MustParsePrefix("10.0.0.0/8").Contains(a) }
		h := http.Header{"X-Forwarded-For": {xff}, "X-Real-Ip": {realIP}}
		a, ok := forwardedClient(h, trusted)
		if !ok {
			return
		}
		if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
			t.Fatalf("address %v not normalised", a)
		}
		r, rok := parseForwardedAddr(realIP)
		if trusted(a) && !(rok && r == a) {
			t.Fatalf("trusted %v returned from X-Forwarded-For %q", a, xff)
		}
	})
}

// TestClientFromHeaders: X-Forwarded-For and X-Real-IP are believed from a
// trusted peer only, and never with ProxyProtocol.
func TestClientFromHeaders(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	req := func(extra string) string {
		return strings.Replace(upgradeRequest, "\r\n\r\n", "\r\n"+extra+"\r\n\r\n", 1)
	}
	tests := []struct {
		name    string
		cfg     Config
		from    string
		headers string
		want    string // address only; "" : the peer
	}{
		{"trusted peer, XFF", Config{TrustedProxies: trusted}, "127.0.0.1", "X-Forwarded-For: 9.9.9.9, 203.0.113.5", "203.0.113.5"},
		{"trusted peer, X-Real-IP", Config{TrustedProxies: trusted}, "127.0.0.1", "X-Real-IP: 203.0.113.6", "203.0.113.6"},
		{"trusted peer, no header", Config{TrustedProxies: trusted}, "127.0.0.1", "X-Other: 1", ""},
		{"untrusted peer cannot spoof XFF", Config{TrustedProxies: trusted}, "127.0.0.7", "X-Forwarded-For: 203.0.113.5", ""},
		{"untrusted peer cannot spoof X-Real-IP", Config{TrustedProxies: trusted}, "127.0.0.7", "X-Real-IP: 203.0.113.6", ""},
		{"no trusted proxies", Config{}, "127.0.0.1", "X-Forwarded-For: 203.0.113.5", ""},
		{"proxy protocol ignores XFF", Config{TrustedProxies: trusted, ProxyProtocol: true}, "127.0.0.1", "X-Forwarded-For: 203.0.113.5", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := recordGate{seen: make(chan Request, 1)}
			h := newEchoHandler()
			_, addr := startEngine(t, tc.cfg, h, g, nil)
			nc := dialFrom(t, tc.from, addr)
			send := req(tc.headers)
			if tc.cfg.ProxyProtocol {
				send = "PROXY UNKNOWN\r\n" + send
			}
			io.WriteString(nc, send)
			if line := readStatus(t, nc); !strings.HasPrefix(line, "HTTP/1.1 101 ") {
				t.Fatalf("status %q, want 101", line)
			}
			r := <-g.seen
			want := tc.want
			if want == "" {
				want = tc.from
			}
			if r.Client.Addr().String() != want {
				t.Fatalf("Request.Client = %v, want %s", r.Client, want)
			}
			if c := h.waitOpen(t); c.Client() != r.Client || c.Remote() != r.Remote {
				t.Fatalf("Conn.Client() = %v, Remote() = %v; want %v, %v", c.Client(), c.Remote(), r.Client, r.Remote)
			}
		})
	}
}
