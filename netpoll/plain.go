package netpoll

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/orchestratord/orchestratord/netpoll/refusal"
)

// maxPlainBody bounds the response a plain handler may produce.
const maxPlainBody = 4 << 20

// plainResponse buffers what the plain handler writes.
type plainResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

// Header returns the response header.
func (r *plainResponse) Header() http.Header { return r.header }

// WriteHeader records the status once.
func (r *plainResponse) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

// Write buffers body bytes.
func (r *plainResponse) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	if r.body.Len()+len(p) > maxPlainBody {
		return 0, fmt.Errorf("netpoll: plain response over %d bytes", maxPlainBody)
	}
	return r.body.Write(p)
}

// servePlain serves a non-upgrade request with the plain handler: the
// response is buffered and written with Connection: close, then the
// connection is closed. Request bodies are served only when they arrived
// with the head.
func (c *Conn) servePlain(req *http.Request) {
	e := c.e
	if e.plain == nil {
		c.refuse(refusal.Of(refusal.NotFound))
		return
	}
	rest := c.hs.rest
	switch {
	case len(req.TransferEncoding) > 0 || req.ContentLength > int64(len(rest)):
		c.refuse(refusal.Of(refusal.BodyNotSupported))
		return
	case req.ContentLength > 0:
		req.Body = io.NopCloser(bytes.NewReader(rest[:req.ContentLength]))
	default:
		req.Body = http.NoBody
	}
	if a := c.Client(); a.IsValid() {
		req.RemoteAddr = a.String()
	}
	rw := &plainResponse{header: make(http.Header)}
	if !c.runPlain(rw, req) {
		c.refuse(refusal.Of(refusal.Internal))
		return
	}
	if rw.status == 0 {
		rw.status = http.StatusOK
	}
	h := rw.header
	if h.Get("Content-Type") == "" && rw.body.Len() > 0 {
		h.Set("Content-Type", http.DetectContentType(rw.body.Bytes()))
	}
	h.Set("Content-Length", strconv.Itoa(rw.body.Len()))
	h.Set("Connection", "close")
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", rw.status, http.StatusText(rw.status))
	_ = h.Write(&b)
	b.WriteString("\r\n")
	if req.Method != http.MethodHead {
		b.Write(rw.body.Bytes())
	}
	c.respondRaw(b.Bytes())
}

// runPlain calls the plain handler, turning a panic into false.
func (c *Conn) runPlain(rw *plainResponse, req *http.Request) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			c.e.log.Error("plain handler panicked", "remote", c.Remote().String(), "err", fmt.Sprint(p))
			ok = false
		}
	}()
	c.e.plain.ServeHTTP(rw, req)
	return true
}
