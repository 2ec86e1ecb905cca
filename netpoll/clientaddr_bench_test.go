package netpoll

import (
	"net/http"
	"net/netip"
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
