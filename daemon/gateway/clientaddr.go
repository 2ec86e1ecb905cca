package gateway

import (
	"net/http"
	"net/netip"
)

// clientString formats a client address for logs and the admin page: with
// its port when known, the bare address when a proxy's header gave none.
func clientString(a netip.AddrPort) string {
	if a.Port() == 0 {
		return a.Addr().String()
	}
	return a.String()
}

// handshakeTraceparent returns the handshake's traceparent header when it is
// a well-formed W3C trace context (version 00: 00-<32 hex trace id>-<16 hex
// parent id>-<2 hex flags>, ids not all zero), else "". Only asked for
// handshakes from trusted proxies: a client cannot choose its trace id.
func handshakeTraceparent(h http.Header) string {
	vals := h.Values("Traceparent")
	if len(vals) != 1 {
		return ""
	}
	v := vals[0]
	if len(v) != 55 || v[:3] != "00-" || v[35] != '-' || v[52] != '-' {
		return ""
	}
	if !lowerHex(v[3:35]) || !lowerHex(v[36:52]) || !lowerHex(v[53:55]) ||
		v[3:35] == "00000000000000000000000000000000" || v[36:52] == "0000000000000000" {
		return ""
	}
	return v
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
