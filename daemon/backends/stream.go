package backends

import (
	"bufio"
	"bytes"
	"errors"
	"io"

	"github.com/segmentio/encoding/json"
)

// maxObjectBytes bounds one answer object (a JSON answer, an NDJSON line, an
// SSE event's data, a NATS message). Larger is a malformed answer: a
// backend that streams without newlines must not make the daemon buffer
// without limit.
const maxObjectBytes = 8 << 20

var (
	errTooLong   = errors.New("answer object larger than 8 MiB")
	errEmptyObj  = errors.New("object has none of chunk, data, context or error")
	errNotObject = errors.New("context patch is not a JSON object")
)

// frame is one object of a streamed answer. Presence of a key is told by a
// non-nil RawMessage (a JSON null decodes to "null", not nil).
type frame struct {
	Chunk   json.RawMessage `json:"chunk"`
	Data    json.RawMessage `json:"data"`
	Context json.RawMessage `json:"context"`
	Error   json.RawMessage `json:"error"`
}

// errorObject is the {"message":".."} inside an error key.
type errorObject struct {
	Message string `json:"message"`
}

// applyFrame handles one object of a stream: a chunk goes to emit; a final
// object or an error object ends the call (done). obj is valid only for the
// call: Result fields are copied out of it. f is scratch space, reused
// across the objects of a stream so that decoding does not allocate.
func applyFrame(obj []byte, emit Emit, f *frame) (res Result, done bool, err error) {
	*f = frame{}
	rest, perr := json.Parse(obj, f, json.ZeroCopy)
	if perr != nil || len(bytes.TrimSpace(rest)) != 0 || firstByte(obj) != '{' {
		return Result{}, true, badGateway("malformed answer from the backend", errors.Join(errors.New("stream object is not one JSON object"), perr))
	}
	switch {
	case f.Error != nil && !isNull(f.Error):
		return Result{}, true, badGateway(errorMessage(f.Error), errors.New("backend sent an error object"))
	case f.Chunk != nil:
		emit(f.Chunk)
		return Result{}, false, nil
	case f.Data != nil || f.Context != nil:
		res, err = finalResult(f)
		return res, true, err
	}
	return Result{}, true, badGateway("malformed answer from the backend", errEmptyObj)
}

// finalResult copies a final object's data and context patch.
func finalResult(f *frame) (Result, error) {
	var res Result
	if f.Data != nil && !isNull(f.Data) {
		res.Data = bytes.Clone(f.Data)
	}
	if f.Context != nil && !isNull(f.Context) {
		if firstByte(f.Context) != '{' {
			return Result{}, badGateway("malformed answer from the backend", errNotObject)
		}
		res.ContextPatch = bytes.Clone(f.Context)
	}
	return res, nil
}

// errorMessage reads {"message":".."} or a bare string out of an error key.
func errorMessage(raw []byte) string {
	var eo errorObject
	if firstByte(raw) == '{' {
		if json.Unmarshal(raw, &eo) == nil && eo.Message != "" {
			return safeMessage([]byte(eo.Message))
		}
	}
	var s string
	if firstByte(raw) == '"' && json.Unmarshal(raw, &s) == nil && s != "" {
		return safeMessage([]byte(s))
	}
	return "backend error"
}

func firstByte(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}

func isNull(b []byte) bool { return string(bytes.TrimSpace(b)) == "null" }

// lineReader reads lines ending in \n or \r\n, of at most maxObjectBytes.
type lineReader struct {
	br  *bufio.Reader
	acc []byte // a line longer than the bufio buffer is gathered here
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 32<<10)}
}

// next returns the next line without its end of line. The line is valid
// until the next call. A last line without a newline is returned with
// io.EOF; a clean end is ("", io.EOF).
func (lr *lineReader) next() ([]byte, error) {
	line, err := lr.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		lr.acc = append(lr.acc[:0], line...)
		for err == bufio.ErrBufferFull {
			line, err = lr.br.ReadSlice('\n')
			lr.acc = append(lr.acc, line...)
			if len(lr.acc) > maxObjectBytes {
				return nil, errTooLong
			}
		}
		line = lr.acc
	}
	if err != nil && err != io.EOF {
		return nil, err
	}
	line = bytes.TrimSuffix(line, []byte{'\n'})
	line = bytes.TrimSuffix(line, []byte{'\r'})
	return line, err
}

// objectReader yields the JSON objects of a streamed answer, one at a time.
// An object is valid until the next call; io.EOF ends a clean stream.
type objectReader interface {
	next() ([]byte, error)
}

// ndjsonReader yields one object per non-blank line.
type ndjsonReader struct{ lr *lineReader }

func (r *ndjsonReader) next() ([]byte, error) {
	for {
		line, err := r.lr.next()
		if len(bytes.TrimSpace(line)) > 0 {
			if len(line) > maxObjectBytes {
				return nil, errTooLong
			}
			// A last line without a newline still counts; the EOF comes
			// with the next call.
			return line, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// sseReader yields the data of each server-sent event: data lines joined by
// "\n", comments and other fields ignored, an event ended by a blank line
// (or by the end of the stream).
type sseReader struct {
	lr   *lineReader
	data []byte
	eof  bool
}

func (r *sseReader) next() ([]byte, error) {
	if r.eof {
		return nil, io.EOF
	}
	r.data = r.data[:0]
	has := false
	for {
		line, err := r.lr.next()
		if err != nil && err != io.EOF {
			return nil, err
		}
		if len(line) == 0 {
			if has {
				if err == io.EOF {
					r.eof = true
				}
				return r.data, nil
			}
			if err == io.EOF {
				r.eof = true
				return nil, io.EOF
			}
			continue
		}
		if line[0] != ':' {
			name, value := line, []byte(nil)
			if i := bytes.IndexByte(line, ':'); i >= 0 {
				name, value = line[:i], line[i+1:]
				value = bytes.TrimPrefix(value, []byte{' '})
			}
			if string(name) == "data" {
				if has {
					r.data = append(r.data, '\n')
				}
				r.data = append(r.data, value...)
				has = true
				if len(r.data) > maxObjectBytes {
					return nil, errTooLong
				}
			}
		}
		if err == io.EOF {
			// The stream ended inside an event: deliver what it had.
			r.eof = true
			if has {
				return r.data, nil
			}
			return nil, io.EOF
		}
	}
}

// isDone reports the OpenAI end-of-stream marker.
func isDone(data []byte) bool { return string(bytes.TrimSpace(data)) == "[DONE]" }
