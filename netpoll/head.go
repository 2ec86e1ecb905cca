package netpoll

import (
	"errors"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
)

var errBadHead = errors.New("netpoll: malformed request head")

// parseHead parses a complete HTTP/1.x request head (request line, header
// lines, empty line) into an http.Request with Header, Host, URL,
// ContentLength and TransferEncoding set, the way http.ReadRequest does for
// what the engine and its Gatekeeper use, without its bufio.Reader and
// per-line allocations: the head becomes one string and every value is a
// substring of it. Obsolete line folding, a header name with spaces,
// conflicting Content-Length values and a target that is not a request URI
// are refused (400).
func parseHead(b []byte) (*http.Request, error) {
	s := string(b)
	line, s, ok := cutLine(s)
	if !ok {
		return nil, errBadHead
	}
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || !validFieldName(method) || target == "" {
		return nil, errBadHead
	}
	major, minor, ok := http.ParseHTTPVersion(proto)
	if !ok || major != 1 {
		return nil, errBadHead
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, errBadHead
	}
	// One header line is one value: the map is sized for them (a map of up
	// to 8 entries is one group, without a table), and every key's first
	// value is a one-element window of one backing array (capped, so that a
	// repeated key's append copies instead of overwriting its neighbour):
	// one allocation for the values instead of one per header.
	lines := max(strings.Count(s, "\n")-1, 0)
	vals := make([]string, 0, lines)
	req := &http.Request{Method: method, URL: u, Proto: proto, ProtoMajor: major, ProtoMinor: minor,
		Header: make(http.Header, lines), RequestURI: target, Body: http.NoBody}
	for {
		line, s, ok = cutLine(s)
		if !ok {
			return nil, errBadHead
		}
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return nil, errBadHead // obsolete line folding
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || !validFieldName(k) || !validFieldValue(v) {
			return nil, errBadHead
		}
		key := canonicalKey(k)
		v = strings.Trim(v, " \t")
		if old, ok := req.Header[key]; ok {
			req.Header[key] = append(old, v)
			continue
		}
		vals = append(vals, v)
		req.Header[key] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	if h := req.Header["Host"]; len(h) > 0 {
		if len(h) > 1 {
			return nil, errBadHead
		}
		req.Host = h[0]
		delete(req.Header, "Host")
	} else {
		req.Host = u.Host
	}
	if cl := req.Header["Content-Length"]; len(cl) > 0 {
		for _, v := range cl[1:] {
			if v != cl[0] {
				return nil, errBadHead
			}
		}
		n, err := strconv.ParseInt(cl[0], 10, 64)
		if err != nil || n < 0 {
			return nil, errBadHead
		}
		req.ContentLength = n
	}
	if te := headerFirst(req.Header, hdrTE); te != "" {
		req.TransferEncoding = []string{te}
	}
	req.Close = true
	return req, nil
}

// Canonical header keys (textproto.CanonicalMIMEHeaderKey's form, the one
// parseHead stores) the handshake looks up directly: http.Header.Get
// canonicalizes its argument on every call, and the usual spelling of the
// WebSocket ones is not canonical, so each Get converted it again (an
// allocation; CanonicalMIMEHeaderKey was 14 % of the user-space
// instructions of a churn cycle). TestHeaderKeysCanonical checks them.
const (
	hdrUpgrade    = "Upgrade"
	hdrConnection = "Connection"
	hdrWSKey      = "Sec-Websocket-Key"
	hdrWSVersion  = "Sec-Websocket-Version"
	hdrWSProtocol = "Sec-Websocket-Protocol"
	hdrWSExt      = "Sec-Websocket-Extensions"
	hdrTE         = "Transfer-Encoding"
)

// headerFirst returns h.Get(k) for a canonical key k, without
// canonicalizing k again.
func headerFirst(h http.Header, k string) string {
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// canonicalKey is textproto.CanonicalMIMEHeaderKey without its allocation
// for the WebSocket headers every handshake carries (their usual spelling,
// Sec-WebSocket-*, is not canonical, and textproto interns only common HTTP
// headers).
func canonicalKey(k string) string {
	for _, c := range [...]string{hdrWSKey, hdrWSVersion, hdrWSProtocol, hdrWSExt} {
		if len(k) == len(c) && strings.EqualFold(k, c) {
			return c
		}
	}
	return textproto.CanonicalMIMEHeaderKey(k)
}

// cutLine returns the first line of s without its CRLF or LF, and the rest.
func cutLine(s string) (line, rest string, ok bool) {
	i := strings.IndexByte(s, '\n')
	if i < 0 {
		return "", s, false
	}
	line = s[:i]
	if strings.HasSuffix(line, "\r") {
		line = line[:len(line)-1]
	}
	return line, s[i+1:], true
}

// validFieldName reports whether k is an RFC 9110 token (header names and
// methods).
func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validFieldValue reports whether v holds no control byte but HTAB.
func validFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7F {
			return false
		}
	}
	return true
}
