package netpoll

import (
	"errors"
	"net/netip"
	"runtime"
	"strconv"
	"time"
)

// CloseCode is a WebSocket close status code (RFC 6455 section 7.4).
type CloseCode uint16

// Close codes used by the engine and the wire contract.
const (
	CloseNormal          CloseCode = 1000 // normal closure
	CloseGoingAway       CloseCode = 1001 // server shutting down
	CloseProtocolError   CloseCode = 1002 // the peer broke RFC 6455
	CloseUnsupportedData CloseCode = 1003 // binary frames
	CloseNoStatus        CloseCode = 1005 // reported only: close frame without a code
	CloseAbnormal        CloseCode = 1006 // reported only: no close frame (reset, EOF, silent peer)
	CloseInvalidPayload  CloseCode = 1007 // text that is not UTF-8
	ClosePolicyViolation CloseCode = 1008 // policy violation
	CloseMessageTooBig   CloseCode = 1009 // message over MaxMessageBytes
	CloseInternalError   CloseCode = 1011 // server error
	CloseServiceRestart  CloseCode = 1012 // orderly drain
	CloseTokenExpired    CloseCode = 4001 // the token's exp passed
	CloseSlowConsumer    CloseCode = 4008 // outbound queue over its bound
	CloseTakenOver       CloseCode = 4009 // session taken over by a newer connection
)

// String returns the code as a decimal number.
func (c CloseCode) String() string { return strconv.Itoa(int(c)) }

// validOnWire reports whether c may appear in a close frame: 1000-1003,
// 1007-1014 and 3000-4999. 1004-1006 and 1015 are reserved for reporting,
// the rest of 0-2999 is unassigned.
func (c CloseCode) validOnWire() bool {
	switch {
	case c >= 1000 && c <= 1003:
		return true
	case c >= 1007 && c <= 1014:
		return true
	case c >= 3000 && c <= 4999:
		return true
	}
	return false
}

var (
	// ErrClosed is returned by Send once the connection is closing or closed,
	// and by Serve after Close.
	ErrClosed = errors.New("netpoll: connection closed")
	// ErrSlowConsumer is returned by Send when the outbound queue would pass
	// OutboundQueueBytes; the connection is then closed with 4008.
	ErrSlowConsumer = errors.New("netpoll: outbound queue over its bound")
	// ErrHeartbeatTimeout is reported to OnClose (code 1006) when nothing was
	// read from the peer for two heartbeats.
	ErrHeartbeatTimeout = errors.New("netpoll: peer silent for two heartbeats")
	// ErrPeerGone is reported to OnClose (code 1006) when the peer closed the
	// TCP connection without a close frame.
	ErrPeerGone = errors.New("netpoll: connection lost without a close frame")
	// ErrCloseTimeout is reported to OnClose when the peer did not answer a
	// close frame within Config.CloseWait.
	ErrCloseTimeout = errors.New("netpoll: peer did not complete the close handshake")
)

// Config tunes an Engine. The zero value of each field selects its default.
type Config struct {
	MaxMessageBytes    int           // default 65536; a larger message closes 1009
	MaxHeaderBytes     int           // default 8192; a larger request head gets 431 and is closed
	HandshakeTimeout   time.Duration // default 5s; the whole request head must arrive within it
	Heartbeat          time.Duration // default 25s; ping every Heartbeat, drop (1006) a peer silent for 2x
	OutboundQueueBytes int           // default 1 MiB; over it the conn closes 4008
	// Pollers is the number of poller goroutines, each with its own epoll
	// instance; default GOMAXPROCS (one per P). Connections are spread
	// over them by fd.
	Pollers int
	// Workers is ignored: reads, frames and Handler calls run inline on the
	// pollers since there is no read worker pool any more. It is kept so
	// that configurations that set it still build.
	Workers int
	// AdmitWorkers is the number of goroutines that run Gatekeeper.Admit and
	// the plain handler; default 8.
	AdmitWorkers int
	// CloseWait bounds how long a closing connection waits for its queued
	// bytes to drain and for the peer's close frame; default 2s.
	CloseWait time.Duration
	// TrustedProxies are the peers whose report of the client's address is
	// believed (clientaddr.go, proxyproto.go); default none.
	TrustedProxies []netip.Prefix
	// ProxyProtocol makes a connection from a trusted proxy start with a
	// PROXY protocol v1 or v2 header, read within HandshakeTimeout;
	// X-Forwarded-For is then ignored. Default false.
	ProxyProtocol bool
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 65536
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = 8192
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 5 * time.Second
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 25 * time.Second
	}
	if c.OutboundQueueBytes <= 0 {
		c.OutboundQueueBytes = 1 << 20
	}
	if c.Pollers <= 0 {
		c.Pollers = runtime.GOMAXPROCS(0)
	}
	if c.AdmitWorkers <= 0 {
		c.AdmitWorkers = 8
	}
	if c.CloseWait <= 0 {
		c.CloseWait = 2 * time.Second
	}
	return c
}

// tick returns the timing wheel's resolution: fine enough for the shortest
// deadline it drives, never finer than 5ms nor coarser than 500ms.
func (c Config) tick() time.Duration {
	t := min(c.Heartbeat/8, c.HandshakeTimeout/8, c.CloseWait/4)
	return min(max(t, 5*time.Millisecond), 500*time.Millisecond)
}
