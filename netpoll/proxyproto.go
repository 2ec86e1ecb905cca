package netpoll

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// PROXY protocol (HAProxy's spec, versions 1 and 2): a trusted proxy in
// front of the daemon writes one header before the client's bytes, giving
// the client's address. readHead parses it on readiness, like the request
// head and within the same handshake deadline, when Config.ProxyProtocol is
// on and the TCP peer is in Config.TrustedProxies.

// proxyV2Sig starts every version 2 header.
var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

const (
	// proxyV1Max is the longest version 1 header, CRLF included.
	proxyV1Max = 107
	// proxyV2Fixed is the fixed part of a version 2 header.
	proxyV2Fixed = 16
)

// errProxyHeader is the cause reported when a trusted peer's connection does
// not start with a valid PROXY header.
var errProxyHeader = errors.New("netpoll: no valid PROXY protocol header from a trusted proxy")

// parseProxyHeader parses a PROXY protocol header (v1 or v2) at the start of
// b. A complete header returns its length n > 0 and the client's address
// (invalid for LOCAL, UNKNOWN and non-TCP families: the connection then
// stands for itself). A valid but incomplete prefix returns 0 and no error.
// Anything else is an error, as is a version 2 header longer than limit.
func parseProxyHeader(b []byte, limit int) (n int, src netip.AddrPort, err error) {
	if len(b) == 0 {
		return 0, netip.AddrPort{}, nil
	}
	if b[0] == proxyV2Sig[0] {
		return parseProxyV2(b, limit)
	}
	return parseProxyV1(b)
}

// parseProxyV1 parses "PROXY TCP4|TCP6 src dst sport dport\r\n" or
// "PROXY UNKNOWN ...\r\n".
func parseProxyV1(b []byte) (int, netip.AddrPort, error) {
	const pre = "PROXY "
	if k := min(len(b), len(pre)); string(b[:k]) != pre[:k] {
		return 0, netip.AddrPort{}, fmt.Errorf("%w: does not start with %q", errProxyHeader, pre)
	}
	end := bytes.IndexByte(b[:min(len(b), proxyV1Max)], '\n')
	if end < 0 {
		if len(b) >= proxyV1Max {
			return 0, netip.AddrPort{}, fmt.Errorf("%w: v1 header longer than %d bytes", errProxyHeader, proxyV1Max)
		}
		for _, ch := range b {
			if ch != '\r' && (ch < ' ' || ch > '~') {
				return 0, netip.AddrPort{}, fmt.Errorf("%w: v1 header holds byte %#x", errProxyHeader, ch)
			}
		}
		return 0, netip.AddrPort{}, nil
	}
	if end == 0 || b[end-1] != '\r' {
		return 0, netip.AddrPort{}, fmt.Errorf("%w: v1 header does not end with CRLF", errProxyHeader)
	}
	for _, ch := range b[:end-1] {
		if ch < ' ' || ch > '~' {
			return 0, netip.AddrPort{}, fmt.Errorf("%w: v1 header holds byte %#x", errProxyHeader, ch)
		}
	}
	line := string(b[len(pre) : end-1])
	n := end + 1
	if line == "UNKNOWN" || strings.HasPrefix(line, "UNKNOWN ") {
		return n, netip.AddrPort{}, nil
	}
	var fields [5]string
	nf := splitSpaces(line, fields[:])
	if nf != 5 {
		return 0, netip.AddrPort{}, fmt.Errorf("%w: v1 header has %d fields, want 5", errProxyHeader, nf)
	}
	src, err1 := netip.ParseAddr(fields[1])
	dst, err2 := netip.ParseAddr(fields[2])
	sport, ok1 := parsePort(fields[3])
	_, ok2 := parsePort(fields[4])
	if err1 != nil || err2 != nil || !ok1 || !ok2 || src.Zone() != "" || dst.Zone() != "" {
		return 0, netip.AddrPort{}, fmt.Errorf("%w: v1 addresses or ports malformed", errProxyHeader)
	}
	switch fields[0] {
	case "TCP4":
		if !src.Is4() || !dst.Is4() {
			return 0, netip.AddrPort{}, fmt.Errorf("%w: TCP4 with a non-IPv4 address", errProxyHeader)
		}
	case "TCP6":
		if !src.Is6() || !dst.Is6() {
			return 0, netip.AddrPort{}, fmt.Errorf("%w: TCP6 with a non-IPv6 address", errProxyHeader)
		}
	default:
		return 0, netip.AddrPort{}, fmt.Errorf("%w: v1 protocol %q", errProxyHeader, fields[0])
	}
	return n, netip.AddrPortFrom(src.Unmap(), sport), nil
}

// splitSpaces splits s at single spaces into out and returns the number of
// fields, which is len(out)+1 when there are more than out holds. An empty
// field (two spaces in a row, a leading or trailing space) makes the header
// invalid, which the caller sees as a parse error.
func splitSpaces(s string, out []string) int {
	n := 0
	for {
		i := strings.IndexByte(s, ' ')
		if n == len(out) {
			return n + 1
		}
		if i < 0 {
			out[n] = s
			return n + 1
		}
		out[n] = s[:i]
		n++
		s = s[i+1:]
	}
}

// parsePort parses a decimal port without sign or leading zeros.
func parsePort(s string) (uint16, bool) {
	if s == "" || len(s) > 5 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	p, err := strconv.ParseUint(s, 10, 16)
	return uint16(p), err == nil
}

// parseProxyV2 parses the binary version 2 header.
func parseProxyV2(b []byte, limit int) (int, netip.AddrPort, error) {
	if k := min(len(b), len(proxyV2Sig)); !bytes.Equal(b[:k], proxyV2Sig[:k]) {
		return 0, netip.AddrPort{}, fmt.Errorf("%w: bad v2 signature", errProxyHeader)
	}
	if len(b) > 12 && b[12]>>4 != 2 {
		return 0, netip.AddrPort{}, fmt.Errorf("%w: v2 version %d", errProxyHeader, b[12]>>4)
	}
	if len(b) > 12 && b[12]&0x0F > 1 {
		return 0, netip.AddrPort{}, fmt.Errorf("%w: v2 command %d", errProxyHeader, b[12]&0x0F)
	}
	if len(b) > 13 {
		switch b[13] {
		case 0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32:
		default:
			return 0, netip.AddrPort{}, fmt.Errorf("%w: v2 family/protocol %#x", errProxyHeader, b[13])
		}
	}
	if len(b) < proxyV2Fixed {
		return 0, netip.AddrPort{}, nil
	}
	n := proxyV2Fixed + int(binary.BigEndian.Uint16(b[14:16]))
	if n > limit {
		return 0, netip.AddrPort{}, fmt.Errorf("%w: v2 header of %d bytes, over the %d limit", errProxyHeader, n, limit)
	}
	need := 0
	switch b[13] >> 4 {
	case 1:
		need = 12
	case 2:
		need = 36
	case 3:
		need = 216
	}
	if n-proxyV2Fixed < need {
		return 0, netip.AddrPort{}, fmt.Errorf("%w: v2 address block of %d bytes, want %d", errProxyHeader, n-proxyV2Fixed, need)
	}
	if len(b) < n {
		return 0, netip.AddrPort{}, nil
	}
	if b[12]&0x0F == 0 { // LOCAL: the proxy's own connection (a health check)
		return n, netip.AddrPort{}, nil
	}
	a := b[proxyV2Fixed:]
	switch b[13] {
	case 0x11: // TCP over IPv4
		return n, netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[0:4])), binary.BigEndian.Uint16(a[8:10])), nil
	case 0x21: // TCP over IPv6
		return n, netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[0:16])).Unmap(), binary.BigEndian.Uint16(a[32:34])), nil
	}
	// UNSPEC, UDP or AF_UNIX: no TCP client address to believe.
	return n, netip.AddrPort{}, nil
}

// expectsProxy reports whether a connection from peer must start with a
// PROXY header.
func (e *Engine) expectsProxy(peer netip.AddrPort) bool {
	return e.cfg.ProxyProtocol && e.trusted(peer.Addr())
}

// trusted reports whether a is in Config.TrustedProxies.
func (e *Engine) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range e.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// proxyLogEvery bounds the "no PROXY header" warnings to one per interval:
// a misconfigured proxy fails every connection.
const proxyLogEvery = int64(1e9)

// refuseProxy closes a trusted peer's connection that did not start with a
// valid PROXY header, without writing anything: no HTTP response, since the
// bytes that came are not known to be HTTP, and the proxy or its client
// would take a response for the daemon's answer to a request that was never
// read. The owner calls it; the warning is rate-limited.
func (c *Conn) refuseProxy(err error) {
	e := c.e
	if t, last := time.Now().UnixNano(), e.proxyLogAt.Load(); t-last >= proxyLogEvery && e.proxyLogAt.CompareAndSwap(last, t) {
		e.log.Warn("connection from a trusted proxy closed: no valid PROXY protocol header (check listen.proxy_protocol and the proxy's config)",
			"remote", c.Remote().String(), "err", err)
	}
	c.finalize(CloseAbnormal, err)
}
