package netpoll

import (
	"net/http"
	"net/netip"
	"strings"
)

// Client returns the client's address: the address a trusted proxy reported
// (PROXY protocol header, or X-Forwarded-For / X-Real-IP), else the TCP
// peer's (Remote). Set before the Gatekeeper runs and never changed after.
// An address learnt from a header has port 0: the header does not carry it.
func (c *Conn) Client() netip.AddrPort {
	if c.addrs != nil && c.addrs.client.IsValid() {
		return c.addrs.client
	}
	return c.Remote()
}

// forwardedClient returns the client address that a trusted proxy reported
// in h: the right-most X-Forwarded-For entry that is not itself a trusted
// proxy, else X-Real-IP. Walking from the right, every entry up to the
// first untrusted one was appended by a trusted proxy; what lies to the left
// of it was written by the client and is not believed. An entry that does
// not parse ends the walk (nothing to its left can be believed either), and
// the answer falls back to X-Real-IP. ok is false when neither header gives
// an address.
func forwardedClient(h http.Header, trusted func(netip.Addr) bool) (a netip.Addr, ok bool) {
	vals := h.Values("X-Forwarded-For")
walk:
	for i := len(vals) - 1; i >= 0; i-- {
		v := vals[i]
		for v != "" {
			var entry string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				entry, v = v[j+1:], v[:j]
			} else {
				entry, v = v, ""
			}
			ip, good := parseForwardedAddr(entry)
			if !good {
				break walk
			}
			if !trusted(ip) {
				return ip, true
			}
		}
	}
	if ip, good := parseForwardedAddr(h.Get("X-Real-IP")); good {
		return ip, true
	}
	return netip.Addr{}, false
}

// parseForwardedAddr parses one X-Forwarded-For or X-Real-IP entry: an IP
// address, optionally with a port ("192.0.2.1:4711", "[2001:db8::1]:4711")
// as some proxies write, surrounded by optional spaces. IPv4-mapped IPv6
// addresses are unmapped; a zone is refused.
func parseForwardedAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Addr{}, false
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// resolveClient sets the client address from the request headers when the TCP peer is
// a trusted proxy and the address does not come from a PROXY header. It
// runs on the admit goroutine before the Gatekeeper.
func (c *Conn) resolveClient(h http.Header) {
	e := c.e
	if e.cfg.ProxyProtocol || len(e.cfg.TrustedProxies) == 0 || !e.trusted(c.Remote().Addr()) {
		return
	}
	if a, ok := forwardedClient(h, e.trusted); ok {
		ap := netip.AddrPortFrom(a, 0)
		c.setClient(ap)
	}
}
