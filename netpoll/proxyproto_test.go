package netpoll

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// proxyV2 builds a version 2 header: cmd 0 (LOCAL) or 1 (PROXY), fam the
// family/protocol byte, addr the address block, tlv appended after it.
func proxyV2(cmd, fam byte, addr, tlv []byte) []byte {
	b := append([]byte(nil), proxyV2Sig...)
	b = append(b, 0x20|cmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(addr)+len(tlv)))
	return append(append(b, addr...), tlv...)
}

// v2Addr4 is the address block of a TCP4 header.
func v2Addr4(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

// v2Addr6 is the address block of a TCP6 header.
func v2Addr6(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

func TestParseProxyHeader(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		n       int    // 0: incomplete or error
		src     string // "" : invalid address
		wantErr bool
	}{
		{"v1 tcp4", []byte("PROXY TCP4 192.0.2.7 10.0.0.1 51000 8080\r\nGET"), 42, "192.0.2.7:51000", false},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\n"), 45, "[2001:db8::7]:4711", false},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), 15, "", false},
		{"v1 unknown with addresses", []byte("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"), 59, "", false},
		{"v1 prefix", []byte("PRO"), 0, "", false},
		{"v1 no line end yet", []byte("PROXY TCP4 192.0.2.7 10.0"), 0, "", false},
		{"v1 LF only", []byte("PROXY TCP4 192.0.2.7 10.0.0.1 51000 8080\n"), 0, "", true},
		{"v1 tcp4 with v6", []byte("PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n"), 0, "", true},
		{"v1 tcp6 with v4", []byte("PROXY TCP6 192.0.2.7 10.0.0.1 1 2\r\n"), 0, "", true},
		{"v1 port too big", []byte("PROXY TCP4 192.0.2.7 10.0.0.1 65536 2\r\n"), 0, "", true},
		{"v1 port leading zero", []byte("PROXY TCP4 192.0.2.7 10.0.0.1 080 2\r\n"), 0, "", true},
		{"v1 double space", []byte("PROXY TCP4  192.0.2.7 10.0.0.1 1 2\r\n"), 0, "", true},
		{"v1 too few fields", []byte("PROXY TCP4 192.0.2.7 10.0.0.1 1\r\n"), 0, "", true},
		{"v1 udp", []byte("PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n"), 0, "", true},
		{"v1 too long", []byte("PROXY TCP4 " + strings.Repeat("1", 120)), 0, "", true},
		{"v1 control byte", []byte("PROXY TCP4 \x00"), 0, "", true},
		{"http instead", []byte("GET /ws HTTP/1.1\r\n"), 0, "", true},
		{"v2 tcp4", proxyV2(1, 0x11, v2Addr4("198.51.100.9", "10.0.0.1", 40000, 8080), nil), 28, "198.51.100.9:40000", false},
		{"v2 tcp6", proxyV2(1, 0x21, v2Addr6("2001:db8::9", "2001:db8::1", 40000, 8080), nil), 52, "[2001:db8::9]:40000", false},
		{"v2 tcp6 v4-mapped", proxyV2(1, 0x21, v2Addr6("::ffff:192.0.2.9", "::1", 5, 6), nil), 52, "192.0.2.9:5", false},
		{"v2 tcp4 with TLVs", proxyV2(1, 0x11, v2Addr4("198.51.100.9", "10.0.0.1", 1, 2), []byte{0x04, 0, 3, 'a', 'b', 'c'}), 34, "198.51.100.9:1", false},
		{"v2 local", proxyV2(0, 0x00, nil, nil), 16, "", false},
		{"v2 local with addresses", proxyV2(0, 0x11, v2Addr4("198.51.100.9", "10.0.0.1", 1, 2), nil), 28, "", false},
		{"v2 udp4", proxyV2(1, 0x12, v2Addr4("198.51.100.9", "10.0.0.1", 1, 2), nil), 28, "", false},
		{"v2 unspec proxy", proxyV2(1, 0x00, nil, nil), 16, "", false},
		{"v2 prefix of signature", proxyV2Sig[:5], 0, "", false},
		{"v2 incomplete addresses", proxyV2(1, 0x11, v2Addr4("198.51.100.9", "10.0.0.1", 1, 2), nil)[:20], 0, "", false},
		{"v2 bad signature", append([]byte("\r\n\r\n\x00\r\nQUIX\n"), 0x21, 0x11, 0, 12), 0, "", true},
		{"v2 version 1", append(append([]byte(nil), proxyV2Sig...), 0x11, 0x11, 0, 12), 0, "", true},
		{"v2 command 2", append(append([]byte(nil), proxyV2Sig...), 0x22, 0x11, 0, 12), 0, "", true},
		{"v2 bad family", append(append([]byte(nil), proxyV2Sig...), 0x21, 0x41, 0, 12), 0, "", true},
		{"v2 short address block", proxyV2(1, 0x21, v2Addr4("198.51.100.9", "10.0.0.1", 1, 2), nil), 0, "", true},
		{"v2 over the limit", proxyV2(1, 0x11, v2Addr4("198.51.100.9", "10.0.0.1", 1, 2), make([]byte, 300)), 0, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, src, err := parseProxyHeader(tc.in, 256)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if n != tc.n {
				t.Fatalf("n = %d, want %d", n, tc.n)
			}
			got := ""
			if src.IsValid() {
				got = src.String()
			}
			if got != tc.src {
				t.Fatalf("src = %q, want %q", got, tc.src)
			}
		})
	}
}

// FuzzProxyHeader: the parser never panics; a header it accepts is accepted
// at the same length with anything after it, and every strict prefix of it
// is incomplete (not an error), so reading byte by byte gives the same
// answer as reading at once.
func FuzzProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.7 10.0.0.1 51000 8080\r\n"))
	f.Add([]byte("PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\nGET / HTTP/1.1\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(proxyV2(1, 0x11, v2Addr4("198.51.100.9", "10.0.0.1", 40000, 8080), nil))
	f.Add(proxyV2(1, 0x21, v2Addr6("2001:db8::9", "2001:db8::1", 40000, 8080), []byte{1, 0, 2, 'h', '2'}))
	f.Add(proxyV2(0, 0x00, nil, nil))
	f.Add([]byte("GET /ws HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, src, err := parseProxyHeader(b, 512)
		if err != nil {
			if n != 0 || src.IsValid() {
				t.Fatalf("error %v with n=%d src=%v", err, n, src)
			}
			return
		}
		if n < 0 || n > len(b) {
			t.Fatalf("n = %d for %d bytes", n, len(b))
		}
		if n == 0 {
			if src.IsValid() {
				t.Fatalf("incomplete with src %v", src)
			}
			return
		}
		if src.IsValid() && (src.Addr().Is4In6() || src.Addr().Zone() != "") {
			t.Fatalf("src %v not normalised", src)
		}
		for k := 0; k < n; k++ {
			if pn, _, perr := parseProxyHeader(b[:k], 512); pn != 0 || perr != nil {
				t.Fatalf("prefix of %d of a %d-byte header: n=%d err=%v, want incomplete", k, n, pn, perr)
			}
		}
		n2, src2, err2 := parseProxyHeader(append(b[:n:n], "trailing"...), 512)
		if n2 != n || src2 != src || err2 != nil {
			t.Fatalf("with trailing bytes: %d %v %v, want %d %v", n2, src2, err2, n, src)
		}
	})
}

// recordGate admits every handshake and records what it saw.
type recordGate struct{ seen chan Request }

func (g recordGate) Admit(r *Request) Decision {
	g.seen <- Request{Remote: r.Remote, Client: r.Client, Trusted: r.Trusted}
	return Decision{}
}

// dialFrom connects to addr from the loopback address local.
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", local, err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	return nc
}

// readStatus reads one response status line.
func readStatus(t *testing.T, nc net.Conn) string {
	t.Helper()
	line, err := readLine(nc)
	if err != nil {
		t.Fatalf("read status: %v", err)
	}
	return line
}

func readLine(nc net.Conn) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for {
		if _, err := nc.Read(one); err != nil {
			return string(b), err
		}
		b = append(b, one[0])
		if one[0] == '\n' {
			return string(b), nil
		}
	}
}

// TestProxyProtocol: behind a trusted proxy with ProxyProtocol, the client
// address is the PROXY header's, whichever version, however the bytes are
// split; a trusted peer without a valid header is closed without a
// response; an untrusted peer's PROXY header is a 400.
func TestProxyProtocol(t *testing.T) {
	g := recordGate{seen: make(chan Request, 16)}
	cfg := Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, ProxyProtocol: true, HandshakeTimeout: 2 * time.Second}
	_, addr := startEngine(t, cfg, newEchoHandler(), g, nil)
	v1 := "PROXY TCP4 192.0.2.7 10.0.0.1 51000 8080\r\n"
	v2 := string(proxyV2(1, 0x21, v2Addr6("2001:db8::9", "2001:db8::1", 40000, 8080), []byte{0x04, 0, 1, 'x'}))
	local := string(proxyV2(0, 0x00, nil, nil))
	accepted := []struct {
		name   string
		chunks []string
		client string // "" : the TCP peer
	}{
		{"v1 with the head", []string{v1 + upgradeRequest}, "192.0.2.7:51000"},
		{"v1 byte by byte", append(strings.Split(v1, ""), upgradeRequest), "192.0.2.7:51000"},
		{"v1 then head", []string{v1, upgradeRequest}, "192.0.2.7:51000"},
		{"v2 split in the signature", []string{v2[:5], v2[5:20], v2[20:] + upgradeRequest[:10], upgradeRequest[10:]}, "[2001:db8::9]:40000"},
		{"v2 local", []string{local + upgradeRequest}, ""},
		{"v1 unknown", []string{"PROXY UNKNOWN\r\n" + upgradeRequest}, ""},
	}
	for _, tc := range accepted {
		t.Run(tc.name, func(t *testing.T) {
			nc := dialFrom(t, "127.0.0.1", addr)
			for i, c := range tc.chunks {
				if _, err := io.WriteString(nc, c); err != nil {
					t.Fatal(err)
				}
				if len(tc.chunks) > 1 && i < len(tc.chunks)-1 {
					time.Sleep(2 * time.Millisecond) // separate segments; not synchronisation
				}
			}
			if line := readStatus(t, nc); !strings.HasPrefix(line, "HTTP/1.1 101 ") {
				t.Fatalf("status %q, want 101", line)
			}
			r := <-g.seen
			want := tc.client
			if want == "" {
				want = r.Remote.String()
			}
			if r.Client.String() != want || !r.Trusted {
				t.Fatalf("Admit saw client %v trusted %v, want %s trusted", r.Client, r.Trusted, want)
			}
		})
	}

	// A trusted peer that sends no valid header is closed without a byte.
	for _, tc := range []struct{ name, send string }{
		{"http without header", upgradeRequest},
		{"broken v1", "PROXY TCP4 192.0.2.7\r\n" + upgradeRequest},
		{"v2 bad version", "\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc := dialFrom(t, "127.0.0.1", addr)
			io.WriteString(nc, tc.send)
			raw, err := io.ReadAll(nc)
			if len(raw) != 0 {
				t.Fatalf("got %q (err %v), want the connection closed without a response", raw, err)
			}
		})
	}

	// An untrusted peer's PROXY header is a bad request: it cannot set its
	// address.
	for _, tc := range []struct{ name, send string }{
		{"v1", v1 + upgradeRequest},
		{"v2", v2 + upgradeRequest},
	} {
		t.Run("untrusted "+tc.name, func(t *testing.T) {
			nc := dialFrom(t, "127.0.0.7", addr)
			io.WriteString(nc, tc.send)
			raw, _ := io.ReadAll(nc)
			if !bytes.HasPrefix(raw, []byte("HTTP/1.1 400 ")) || !bytes.HasSuffix(raw, []byte("\r\n\r\n{\"error\":\"bad_request\"}\n")) {
				t.Fatalf("response %q, want 400 bad_request", raw)
			}
		})
	}
	// An untrusted peer without a header is served as usual, as itself.
	t.Run("untrusted plain", func(t *testing.T) {
		nc := dialFrom(t, "127.0.0.7", addr)
		io.WriteString(nc, upgradeRequest)
		if line := readStatus(t, nc); !strings.HasPrefix(line, "HTTP/1.1 101 ") {
			t.Fatalf("status %q, want 101", line)
		}
		r := <-g.seen
		if r.Client != r.Remote || r.Client.Addr().String() != "127.0.0.7" || r.Trusted {
			t.Fatalf("Admit saw %+v, want the peer 127.0.0.7 untrusted", r)
		}
	})
}

// TestProxyProtocolDeadline: a trusted peer that sends half a PROXY header
// is closed at the handshake deadline.
func TestProxyProtocolDeadline(t *testing.T) {
	cfg := Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, ProxyProtocol: true, HandshakeTimeout: 300 * time.Millisecond}
	_, addr := startEngine(t, cfg, newEchoHandler(), acceptAll{}, nil)
	nc := dialFrom(t, "127.0.0.1", addr)
	start := time.Now()
	io.WriteString(nc, "PROXY TCP4 192.0.2.7 ")
	raw, _ := io.ReadAll(nc)
	if len(raw) != 0 {
		t.Fatalf("got %q, want nothing", raw)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Fatalf("closed after %v, want about the 300ms handshake timeout", d)
	}
}

// TestProxyProtocolPlain: a plain request (a probe) through the proxy sees
// the client address as RemoteAddr.
func TestProxyProtocolPlain(t *testing.T) {
	cfg := Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, ProxyProtocol: true}
	plain := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.RemoteAddr) })
	_, addr := startEngine(t, cfg, newEchoHandler(), acceptAll{}, plain)
	nc := dialFrom(t, "127.0.0.1", addr)
	io.WriteString(nc, "PROXY TCP4 192.0.2.7 10.0.0.1 51000 8080\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	raw, _ := io.ReadAll(nc)
	if !bytes.HasPrefix(raw, []byte("HTTP/1.1 200 ")) || !bytes.HasSuffix(raw, []byte("\r\n\r\n192.0.2.7:51000")) {
		t.Fatalf("response %q, want 200 with the client address", raw)
	}
}
