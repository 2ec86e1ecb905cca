package backends

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/orchestratord/orchestratord/daemon/events"
	"github.com/segmentio/encoding/json"
)

// errInvalidInput marks a request refused before any backend was called: it
// says nothing about the endpoint's health.
var errInvalidInput = errors.New("invalid client data")

// openaiBackend is one endpoint of an OpenAI-compatible chat completions
// service.
type openaiBackend struct {
	url     string // <base>/chat/completions
	client  *http.Client
	headers http.Header // static headers and Authorization, resolved at New
	model   string
	system  string
}

// chatRequest is the body of POST /chat/completions.
type chatRequest struct {
	Model         string        `json:"model"`
	Stream        bool          `json:"stream"`
	StreamOptions streamOptions `json:"stream_options"`
	Messages      []events.Turn `json:"messages"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// chatChunk is one streamed completion object (or a whole non-streamed
// completion: then Message holds the reply).
type chatChunk struct {
	Choices []struct {
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage json.RawMessage `json:"usage"`
	Error json.RawMessage `json:"error"`
}

// chatResult is the result data the client gets.
type chatResult struct {
	Text         string          `json:"text"`
	FinishReason string          `json:"finish_reason"`
	Usage        json.RawMessage `json:"usage,omitempty"`
}

// userText reads {"text":"..."} from client data.
func userText(data []byte) (string, error) {
	var d struct {
		Text *string `json:"text"`
	}
	if firstByte(data) != '{' || json.Unmarshal(data, &d) != nil || d.Text == nil || *d.Text == "" {
		return "", &Error{Status: 400, Message: "data.text is required", Err: errInvalidInput}
	}
	return *d.Text, nil
}

// Call streams a chat completion for the user's text after the session's
// history.
func (b *openaiBackend) Call(ctx context.Context, req *Request, emit Emit) (Result, error) {
	text, err := userText(req.Data)
	if err != nil {
		return Result{}, err
	}
	msgs := make([]events.Turn, 0, len(req.History)+2)
	if b.system != "" {
		msgs = append(msgs, events.Turn{Role: "system", Content: b.system})
	}
	msgs = append(msgs, req.History...)
	msgs = append(msgs, events.Turn{Role: "user", Content: text})
	body, err := json.Marshal(&chatRequest{
		Model:         b.model,
		Stream:        true,
		StreamOptions: streamOptions{IncludeUsage: true},
		Messages:      msgs,
	})
	if err != nil {
		return Result{}, &Error{Status: 500, Message: "request could not be encoded", Err: err}
	}
	hr, err := newPost(ctx, b.url, body, b.headers, "text/event-stream", req)
	if err != nil {
		return Result{}, err
	}
	read := func(ctx context.Context, mediaType string, body io.Reader, emit Emit) (Result, error) {
		return readCompletion(mediaType, body, text, emit)
	}
	return doStream(ctx, b.client, hr, emit, read)
}

// readCompletion reads a streamed (SSE) or whole (JSON) completion.
func readCompletion(mediaType string, body io.Reader, userText string, emit Emit) (Result, error) {
	var (
		reply    strings.Builder
		finish   string
		finished bool
		usage    json.RawMessage
		chunk    []byte
	)
	apply := func(obj []byte) error {
		var c chatChunk
		if err := json.Unmarshal(obj, &c); err != nil || firstByte(obj) != '{' {
			return badGateway("malformed answer from the backend", fmt.Errorf("completion object: %w", errors.Join(err, errors.New("not a JSON object"))))
		}
		if c.Error != nil && !isNull(c.Error) {
			return badGateway(errorMessage(c.Error), errors.New("backend sent an error object"))
		}
		if c.Usage != nil && !isNull(c.Usage) {
			usage = bytes.Clone(c.Usage)
		}
		if len(c.Choices) == 0 {
			return nil // the usage chunk has no choices
		}
		ch := c.Choices[0]
		if s := ch.Delta.Content + ch.Message.Content; s != "" {
			reply.WriteString(s)
			chunk = append(chunk[:0], `{"text":`...)
			chunk = json.AppendEscape(chunk, s, 0)
			chunk = append(chunk, '}')
			emit(chunk)
		}
		if ch.FinishReason != nil && *ch.FinishReason != "" {
			finish, finished = *ch.FinishReason, true
		}
		return nil
	}
	switch mediaType {
	case mediaSSE:
		r := &sseReader{lr: newLineReader(body)}
		for {
			obj, err := r.next()
			if err == io.EOF {
				if !finished {
					return Result{}, badGateway("backend stream ended before the reply was complete", io.ErrUnexpectedEOF)
				}
				break
			}
			if err != nil {
				return Result{}, badGateway("backend connection failed", err)
			}
			if isDone(obj) {
				break
			}
			if err := apply(obj); err != nil {
				return Result{}, err
			}
		}
	case mediaJSON, "":
		raw, err := io.ReadAll(io.LimitReader(body, maxObjectBytes+1))
		if err != nil {
			return Result{}, badGateway("backend connection failed", err)
		}
		if len(raw) > maxObjectBytes {
			return Result{}, badGateway("malformed answer from the backend", errTooLong)
		}
		if err := apply(raw); err != nil {
			return Result{}, err
		}
	default:
		return Result{}, badGateway("malformed answer from the backend", fmt.Errorf("unsupported content type %q", mediaType))
	}
	text := reply.String()
	data, err := json.Marshal(&chatResult{Text: text, FinishReason: finish, Usage: usage})
	if err != nil {
		return Result{}, badGateway("malformed answer from the backend", err)
	}
	return Result{
		Data: data,
		Turns: []events.Turn{
			{Role: "user", Content: userText},
			{Role: "assistant", Content: text},
		},
	}, nil
}
