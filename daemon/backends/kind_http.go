package backends

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/encoding/json"
)

// Timeouts of the shared transports. The call's own deadline comes from ctx;
// these only bound what ctx would otherwise leave to the kernel.
const (
	dialTimeout     = 2 * time.Second
	idleConnTimeout = 90 * time.Second
	tlsTimeout      = 5 * time.Second
)

// newTransport returns the one HTTP/1.1 transport of a backend, its pools
// sized to the bulkhead so that max_concurrent calls never wait for a
// connection.
func newTransport(maxConcurrent int) *http.Transport {
	t := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        maxConcurrent,
		MaxIdleConnsPerHost: maxConcurrent,
		MaxConnsPerHost:     maxConcurrent,
		IdleConnTimeout:     idleConnTimeout,
		TLSHandshakeTimeout: tlsTimeout,
		DisableCompression:  true, // streams must not sit in a gzip buffer
		ForceAttemptHTTP2:   false,
	}
	t.Protocols = new(http.Protocols)
	t.Protocols.SetHTTP1(true)
	return t
}

// newClient returns a client on t that never follows redirects (a 3xx is a
// malformed answer) and has no timeout of its own (ctx has it).
func newClient(t *http.Transport) *http.Client {
	return &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// httpBackend is one endpoint of an http backend.
type httpBackend struct {
	url     string
	client  *http.Client
	headers http.Header // static headers, resolved at New
}

// Call posts the request body and reads a JSON, SSE or NDJSON answer.
func (b *httpBackend) Call(ctx context.Context, req *Request, emit Emit) (Result, error) {
	// The body is not pooled: the transport may still read it after Do
	// returns (an early answer), so it must not be reused.
	body, err := encodeBody(make([]byte, 0, 256+len(req.Data)+len(req.Context)), req)
	if err != nil {
		return Result{}, &Error{Status: 500, Message: "request could not be encoded", Err: err}
	}
	hr, err := newPost(ctx, b.url, body, b.headers, "application/json, text/event-stream, application/x-ndjson", req)
	if err != nil {
		return Result{}, err
	}
	return doStream(ctx, b.client, hr, emit, readAnswer)
}

// newPost builds the POST of a call with the contract's headers: the
// static ones, then Content-Type, Accept, X-Request-Id, X-Session-Id,
// X-User-Id and traceparent.
func newPost(ctx context.Context, url string, body []byte, static http.Header, accept string, req *Request) (*http.Request, error) {
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, &Error{Status: 500, Message: "request could not be built", Err: err}
	}
	h := hr.Header
	for k, v := range static {
		h[k] = v
	}
	h["Content-Type"] = []string{"application/json"}
	h["Accept"] = []string{accept}
	h["X-Request-Id"] = []string{req.ID}
	h["X-Session-Id"] = []string{req.SessionID}
	h["X-User-Id"] = []string{req.UserID}
	h["Traceparent"] = []string{traceParent(req)}
	return hr, nil
}

// answerFunc reads a 2xx answer of the given media type.
type answerFunc func(ctx context.Context, mediaType string, body io.Reader, emit Emit) (Result, error)

// doStream sends hr and hands a 2xx answer to read; other statuses become
// *Error. A done ctx always wins over whatever error the transport saw.
func doStream(ctx context.Context, c *http.Client, hr *http.Request, emit Emit, read answerFunc) (Result, error) {
	resp, err := c.Do(hr)
	if err != nil {
		if ctx.Err() != nil {
			return Result{}, ctxErr(ctx)
		}
		if isDialError(err) {
			return Result{}, connectFailed(err)
		}
		return Result{}, badGateway("backend connection failed", err)
	}
	// Close without draining: after a final object the backend may keep the
	// stream open, and reading on would block. A body read to its end (JSON
	// answers, finished streams) still lets the connection be reused.
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		err := statusError(resp)
		if ctx.Err() != nil { // the error body was cut by the deadline
			return Result{}, ctxErr(ctx)
		}
		return Result{}, err
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	res, err := read(ctx, mt, resp.Body, emit)
	if err != nil && ctx.Err() != nil {
		return Result{}, ctxErr(ctx)
	}
	return res, err
}

// statusError turns a non-2xx answer into *Error: a 4xx carries the
// backend's message, a 5xx (or anything else) a generic one.
func statusError(resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	cause := fmt.Errorf("status %d: %q", resp.StatusCode, truncate(raw, 512))
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		msg := rejectionMessage(raw)
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return &Error{Status: resp.StatusCode, Message: msg, Err: cause}
	}
	status := resp.StatusCode
	if status < 500 {
		status = 502 // 1xx leftovers, 3xx: not an answer we can use
	}
	return &Error{Status: status, Message: "backend answered " + strconv.Itoa(resp.StatusCode), Err: cause}
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// Media types of the http kind's answers.
const (
	mediaJSON   = "application/json"
	mediaSSE    = "text/event-stream"
	mediaNDJSON = "application/x-ndjson"
)

// readAnswer reads an http kind answer: one JSON object, or a stream of
// objects as SSE events or NDJSON lines.
func readAnswer(ctx context.Context, mediaType string, body io.Reader, emit Emit) (Result, error) {
	switch mediaType {
	case mediaSSE:
		return readObjects(&sseReader{lr: newLineReader(body)}, emit)
	case mediaNDJSON, "application/jsonl", "application/x-jsonlines":
		return readObjects(&ndjsonReader{lr: newLineReader(body)}, emit)
	case mediaJSON, "":
		return readJSON(body)
	}
	if strings.HasSuffix(mediaType, "+json") { // application/vnd.x+json
		return readJSON(body)
	}
	return Result{}, badGateway("malformed answer from the backend", fmt.Errorf("unsupported content type %q", mediaType))
}

// readJSON reads a whole {"data":..,"context":..} answer.
func readJSON(body io.Reader) (Result, error) {
	raw, err := io.ReadAll(io.LimitReader(body, maxObjectBytes+1))
	if err != nil {
		return Result{}, badGateway("backend connection failed", err)
	}
	if len(raw) > maxObjectBytes {
		return Result{}, badGateway("malformed answer from the backend", errTooLong)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return Result{}, nil // 204 or an empty 200: a null result
	}
	var f frame
	rest, perr := json.Parse(raw, &f, json.ZeroCopy)
	if perr != nil || firstByte(raw) != '{' || len(bytes.TrimSpace(rest)) != 0 {
		return Result{}, badGateway("malformed answer from the backend", errors.Join(errors.New("answer is not one JSON object"), perr))
	}
	if f.Error != nil && !isNull(f.Error) {
		return Result{}, badGateway(errorMessage(f.Error), errors.New("backend sent an error object"))
	}
	return finalResult(&f)
}

// readObjects applies stream objects until a final or error object, or
// the end of the stream (a null result).
func readObjects(r objectReader, emit Emit) (Result, error) {
	var f frame
	for {
		obj, err := r.next()
		if err == io.EOF {
			return Result{}, nil
		}
		if err != nil {
			if errors.Is(err, errTooLong) {
				return Result{}, badGateway("malformed answer from the backend", err)
			}
			return Result{}, badGateway("backend connection failed", err)
		}
		if isDone(obj) {
			return Result{}, nil
		}
		res, done, err := applyFrame(obj, emit, &f)
		if done {
			return res, err
		}
	}
}
