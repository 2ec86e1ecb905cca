package netpoll

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/orchestratord/orchestratord/netpoll/refusal"
	"golang.org/x/sys/unix"
)

// Request is the handshake as the Gatekeeper sees it; valid only during
// Admit.
type Request struct {
	Method, Path, RawQuery string
	Header                 http.Header
	// Remote is the TCP peer's address.
	Remote netip.AddrPort
	// Client is the client's address: what a trusted proxy reported (PROXY
	// header, X-Forwarded-For, X-Real-IP), else Remote. Conn.Client returns
	// the same afterwards.
	Client netip.AddrPort
	// Trusted is true when Remote is in Config.TrustedProxies: the
	// forwarded headers of the request (traceparent...) may be believed.
	Trusted bool
}

// Decision is the Gatekeeper's answer to a handshake.
type Decision struct {
	// Refusal, when set, refuses the handshake with that row of the one
	// refusal table (netpoll/refusal); nil accepts it (101).
	Refusal     *refusal.Refusal
	Subprotocol string // echoed in Sec-WebSocket-Protocol when non-empty
	Value       any    // attached to the Conn before OnOpen (c.Value())
}

// Gatekeeper decides whether a WebSocket handshake gets in. Admit is called
// once the whole request head is read, on an admit goroutine (never the
// poller); it may block briefly.
type Gatekeeper interface {
	Admit(r *Request) Decision
}

// handshake holds a request head while it arrives and is admitted.
type handshake struct {
	buf     *[]byte // the bytes read so far (pooled)
	headLen int     // length of the complete head, 0 while incomplete
	proxy   bool    // a PROXY protocol header is still expected first
	rest    []byte  // bytes after the head, fed to the frame reader after 101
	// more is set when the read that completed the head may have left
	// bytes in the socket (it filled the scratch buffer, or the peer hung
	// up): no new edge would report them, so they are read after the 101.
	more bool
	hup  bool // the peer hung up before the head was complete: read to the end after the 101
}

func (h *handshake) release(bufs *bufPool) {
	bufs.put(h.buf)
	h.buf, h.rest = nil, nil
}

// readHead reads request head bytes into buf (the reading goroutine's
// scratch) on readiness, and once right after accept. From a trusted proxy
// with Config.ProxyProtocol, a PROXY header comes first: it is parsed and
// cut off, and a connection without a valid one is closed (refuseProxy). It
// answers garbage with 400 and an oversized head with 431 at once; once the
// head is complete it returns true: the caller hands the connection to an
// admit goroutine, unless the engine has neither a Gatekeeper nor a plain
// handler (nothing that may wait): then it admits here, on the poller or
// the accept loop, and returns false. A half header or head just waits,
// holding only its bytes, until HandshakeTimeout, which bounds the PROXY
// header and the head together.
func (c *Conn) readHead(buf []byte, hup bool) bool {
	e := c.e
	max := e.cfg.MaxHeaderBytes
	for c.oflags&ofEOF == 0 {
		n, err := readRaw(int(c.fd), buf)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return false
		}
		if err != nil || n <= 0 {
			c.oflags |= ofEOF
			return false
		}
		c.bytesIn.Add(uint64(n))
		if c.hs == nil {
			c.hs = &handshake{buf: e.bufs.get(n), proxy: e.expectsProxy(c.Remote())}
		}
		hs := c.hs
		prev := len(*hs.buf)
		hs.buf = e.bufs.grow(hs.buf, n)
		*hs.buf = append(*hs.buf, buf[:n]...)
		b := *hs.buf
		if hs.proxy {
			pn, src, err := parseProxyHeader(b, max)
			switch {
			case err != nil:
				c.refuseProxy(err)
				return false
			case pn == 0:
				if n < len(buf) && !hup {
					return false
				}
				continue
			}
			hs.proxy = false
			if src.IsValid() {
				c.setClient(src)
			}
			b = b[:copy(b, b[pn:])]
			*hs.buf = b
			prev = 0
			if len(b) == 0 {
				if n < len(buf) && !hup {
					return false
				}
				continue
			}
		}
		if badRequestLine(b) {
			c.refuse(refusal.Of(refusal.BadRequest))
			return false
		}
		end := headEnd(b, prev)
		if end < 0 {
			if len(b) > max {
				c.refuse(refusal.Of(refusal.HeadersTooLarge))
				return false
			}
			if n < len(buf) && !hup {
				return false
			}
			continue
		}
		if end > max {
			c.refuse(refusal.Of(refusal.HeadersTooLarge))
			return false
		}
		hs.headLen = end
		hs.rest = b[end:]
		hs.more = n == len(buf) || hup
		hs.hup = hup
		c.mu.Lock()
		c.state = stAdmitting
		c.mu.Unlock()
		e.wheel.clear(c, tmState)
		if e.g == nil && e.plain == nil {
			// Nothing in admission can wait: upgrade (or refuse) here,
			// without a hand-off.
			c.admit()
			return false
		}
		return true
	}
	return false
}

// headEnd returns the length of the request head in b (through the empty
// line), or -1 if it is not complete. from is where new bytes start.
func headEnd(b []byte, from int) int {
	from = max(from-3, 0)
	if i := bytes.Index(b[from:], []byte("\r\n\r\n")); i >= 0 {
		return from + i + 4
	}
	if i := bytes.Index(b[from:], []byte("\n\n")); i >= 0 {
		return from + i + 2
	}
	return -1
}

// badRequestLine reports whether b cannot start an HTTP/1.x request line:
// garbage is refused as soon as it shows, without waiting for a full head.
func badRequestLine(b []byte) bool {
	i := 0
	for i < len(b) && b[i] >= 'A' && b[i] <= 'Z' {
		i++
	}
	if i == len(b) {
		return i > 16
	}
	if i == 0 || i > 16 || b[i] != ' ' {
		return true
	}
	j := i + 1
	for j < len(b) && b[j] > ' ' && b[j] < 0x7F {
		j++
	}
	if j == len(b) {
		return false
	}
	if j == i+1 || b[j] != ' ' {
		return true
	}
	v, want := b[j+1:], "HTTP/1."
	k := min(len(v), len(want))
	return string(v[:k]) != want[:k]
}

// admit runs on an admit goroutine that owns the connection: it parses the
// head, serves plain requests, asks the Gatekeeper and writes the refusal or
// the 101.
func (c *Conn) admit() {
	e := c.e
	hs := c.hs
	req, err := parseHead((*hs.buf)[:hs.headLen])
	if err != nil {
		c.refuse(refusal.Of(refusal.BadRequest))
		return
	}
	c.resolveClient(req.Header)
	if !headerHasToken(req.Header, hdrUpgrade, "websocket") {
		c.servePlain(req)
		return
	}
	key := headerFirst(req.Header, hdrWSKey)
	switch {
	case req.Method != http.MethodGet || !req.ProtoAtLeast(1, 1) ||
		!headerHasToken(req.Header, hdrConnection, "upgrade") || !validKey(key):
		c.refuse(refusal.Of(refusal.BadRequest))
		return
	case headerFirst(req.Header, hdrWSVersion) != "13":
		c.refuse(refusal.Of(refusal.UnsupportedVersion))
		return
	}
	d := Decision{}
	if e.g != nil {
		d = e.g.Admit(&Request{
			Method: req.Method, Path: req.URL.Path, RawQuery: req.URL.RawQuery,
			Header: req.Header, Remote: c.Remote(), Client: c.Client(),
			Trusted: e.trusted(c.Remote().Addr()),
		})
	}
	if r := d.Refusal; r != nil {
		if r.Status < 400 || r.Status > 599 {
			// Never let a refusal look like an upgrade or a success.
			e.log.Error("gatekeeper refused with a non-error status", "status", r.Status, "code", r.Code)
			r = refusal.Of(refusal.Internal)
		}
		c.refuse(r)
		return
	}
	var rb [192]byte
	resp := append(rb[:0], "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	resp = appendAcceptKey(resp, key)
	if d.Subprotocol != "" {
		resp = append(resp, "\r\nSec-WebSocket-Protocol: "...)
		resp = append(resp, d.Subprotocol...)
	}
	resp = append(resp, "\r\n\r\n"...)
	c.mu.Lock()
	if c.state != stAdmitting {
		c.mu.Unlock()
		return
	}
	c.value = d.Value
	if err := c.writeLocked(resp, nil, false); err != nil {
		c.mu.Unlock()
		return
	}
	c.state = stOpen
	c.mflags |= mfOpened
	c.mu.Unlock()
	e.open.Add(1)
	now := e.wheel.now.Load()
	c.lastRead, c.lastPing = now, now
	e.wheel.set(c, tmBeat, now+e.beatTicks)
	more, hup := len(hs.rest) > 0 || hs.more, hs.hup
	if len(hs.rest) == 0 {
		c.hs = nil
		hs.release(&e.bufs)
	}
	e.h.OnOpen(c)
	// Bytes that arrived after the head's last read raised a new edge,
	// which the poller turned into pending work (onEvent: with an admit
	// goroutine owning the connection, release hands it back). Only bytes
	// already read after the head (hs.rest) or possibly left behind by a
	// full read or a hang-up need a read now: an unconditional one was an
	// extra read(2) and EAGAIN per handshake, and with a Gatekeeper a trip
	// through the poller's inbox too.
	if more {
		bits := evRead
		if hup {
			// That hang-up raises no new edge.
			bits |= evHup
		}
		c.pending.Or(bits)
	}
}

// acceptKey computes Sec-WebSocket-Accept for key (RFC 6455 section 4.2.2).
func acceptKey(key string) string { return string(appendAcceptKey(nil, key)) }

// appendAcceptKey appends Sec-WebSocket-Accept for key, without allocating
// when dst has room.
func appendAcceptKey(dst []byte, key string) []byte {
	const guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
	var in [64 + len(guid)]byte
	var sum [sha1.Size]byte
	if len(key) <= 64 {
		n := copy(in[:], key)
		n += copy(in[n:], guid)
		sum = sha1.Sum(in[:n])
	} else {
		sum = sha1.Sum([]byte(key + guid))
	}
	return base64.StdEncoding.AppendEncode(dst, sum[:])
}

// validKey reports whether key is base64 of 16 bytes.
func validKey(key string) bool {
	key = strings.TrimSpace(key)
	if len(key) != 24 {
		return false
	}
	var b [18]byte
	n, err := base64.StdEncoding.Decode(b[:], []byte(key))
	return err == nil && n == 16
}

// headerHasToken reports whether the comma-separated header name (a
// canonical key, see headerFirst) contains token, case-insensitively.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h[name] {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// refuse answers the handshake with a row of the refusal table and closes
// the connection once it is sent.
func (c *Conn) refuse(r *refusal.Refusal) {
	var extra []string
	if r.Header != "" {
		extra = []string{r.Header}
	}
	c.respond(r.Status, "application/json", r.Body(), extra)
}

// respond queues a complete HTTP response and closes the connection once it
// is sent (bounded by CloseWait). The connection never becomes a WebSocket.
func (c *Conn) respond(status int, contentType string, body []byte, extra []string) {
	var b bytes.Buffer
	b.Grow(128 + len(body))
	b.WriteString("HTTP/1.1 ")
	b.WriteString(strconv.Itoa(status))
	b.WriteByte(' ')
	b.WriteString(http.StatusText(status))
	b.WriteString("\r\nContent-Type: ")
	b.WriteString(contentType)
	b.WriteString("\r\nContent-Length: ")
	b.WriteString(strconv.Itoa(len(body)))
	b.WriteString("\r\nConnection: close\r\n")
	for _, h := range extra {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	c.respondRaw(b.Bytes())
}

// respondRaw queues a serialized HTTP response and moves to stHTTPDone.
func (c *Conn) respondRaw(resp []byte) {
	e := c.e
	if c.hs != nil {
		c.hs.release(&e.bufs)
		c.hs = nil
	}
	c.mu.Lock()
	if c.state == stHandshake || c.state == stAdmitting {
		c.state = stHTTPDone
		_ = c.writeLocked(resp, nil, false)
	}
	c.mu.Unlock()
	e.wheel.set(c, tmState, e.wheel.after(e.cfg.CloseWait))
}
