package netpoll

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func BenchmarkParseProxyHeader(b *testing.B) {
	for _, bc := range []struct {
		name string
		in   []byte
	}{
		{"v1", []byte("PROXY TCP4 192.0.2.7 10.0.0.1 51000 8080\r\nGET /ws HTTP/1.1\r\n")},
		{"v2", proxyV2(1, 0x11, v2Addr4("198.51.100.9", "10.0.0.1", 40000, 8080), nil)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if n, _, err := parseProxyHeader(bc.in, 8192); n == 0 || err != nil {
					b.Fatal(n, err)
				}
			}
		})
	}
}

func BenchmarkForwardedClient(b *testing.B) {
	trusted := func(a netip.Addr) bool { return netip.MustParsePrefix("10.0.0.0/8").Contains(a) }
	h := http.Header{"X-Forwarded-For": {"198.51.100.1, 203.0.113.5, 10.0.0.2"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := forwardedClient(h, trusted); !ok {
			b.Fatal("no address")
		}
	}
}

// BenchmarkHandshakeClientAddress compares a handshake from a direct
// client with one through a trusted proxy that reports the client with
// X-Forwarded-For, or with a PROXY v1 header: the cost of finding the
// client's address, measured in the same run.
func BenchmarkHandshakeClientAddress(b *testing.B) {
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	xff := strings.Replace(upgradeRequest, "\r\n\r\n", "\r\nX-Forwarded-For: 198.51.100.1, 203.0.113.5\r\n\r\n", 1)
	for _, bc := range []struct {
		name string
		cfg  Config
		send string
	}{
		{"direct", Config{}, upgradeRequest},
		{"xff", Config{TrustedProxies: trusted}, xff},
		{"proxy_v1", Config{TrustedProxies: trusted, ProxyProtocol: true}, "PROXY TCP4 203.0.113.5 127.0.0.1 51000 8080\r\n" + upgradeRequest},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e, err := New(bc.cfg, newEchoHandler(), nil, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			ln := listenForBench(b)
			go e.Serve(ln)
			buf := make([]byte, 512)
			b.ReportAllocs()
			for b.Loop() {
				nc, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.WriteString(nc, bc.send); err != nil {
					b.Fatal(err)
				}
				n, err := nc.Read(buf)
				if err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 101 ") {
					b.Fatalf("%q %v", buf[:n], err)
				}
				nc.Close()
			}
		})
	}
}
