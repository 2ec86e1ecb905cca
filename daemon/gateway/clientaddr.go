package gateway

import (
	"net/http"
	"net/netip"

	"github.com/orchestratord/orchestratord/daemon/traceparent"
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
	if len(vals) != 1 || !traceparent.Valid00(vals[0]) {
		return ""
	}
	return vals[0]
}
