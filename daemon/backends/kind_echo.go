package backends

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"time"
	"unicode"
)

// EchoStreamWords is the echo kind's `stream: words` mode.
const EchoStreamWords = "words"

// echoBackend answers the request's data as the result, after an optional
// delay that honours ctx. With stream "words" it first streams the text back
// word by word, one chunk {"text":"word "} per word, waiting delay before
// each chunk; the result is then the request's data as usual.
type echoBackend struct {
	delay  time.Duration
	stream string
}

// Call returns a copy of req.Data, streaming its words first when so
// configured.
func (b echoBackend) Call(ctx context.Context, req *Request, emit Emit) (Result, error) {
	if b.stream == EchoStreamWords {
		for _, w := range echoWords(req.Data) {
			if err := b.wait(ctx); err != nil {
				return Result{}, err
			}
			part, err := json.Marshal(map[string]string{"text": w})
			if err != nil {
				return Result{}, err
			}
			emit(part)
		}
	} else if err := b.wait(ctx); err != nil {
		return Result{}, err
	}
	var data []byte
	if len(req.Data) > 0 {
		data = bytes.Clone(req.Data)
	}
	return Result{Data: data}, nil
}

// wait sleeps for the delay, or returns the context's cause when it ends
// first.
func (b echoBackend) wait(ctx context.Context) error {
	if b.delay <= 0 {
		if ctx.Err() != nil {
			return ctxErr(ctx)
		}
		return nil
	}
	t := time.NewTimer(b.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctxErr(ctx)
	}
}

// echoWords splits the request's text into words, each keeping the
// whitespace that follows it, so that the chunks concatenate to the text.
// The text is data itself when it is a JSON string, else data's "text"
// field; other data has no words (the result alone answers).
func echoWords(data json.RawMessage) []string {
	var text string
	if err := json.Unmarshal(data, &text); err != nil {
		var obj struct {
			Text string `json:"text"`
		}
		if json.Unmarshal(data, &obj) != nil {
			return nil
		}
		text = obj.Text
	}
	var words []string
	for len(text) > 0 {
		end := strings.IndexFunc(text, unicode.IsSpace)
		if end < 0 {
			words = append(words, text)
			break
		}
		next := strings.IndexFunc(text[end:], func(r rune) bool { return !unicode.IsSpace(r) })
		if next < 0 {
			words = append(words, text)
			break
		}
		words = append(words, text[:end+next])
		text = text[end+next:]
	}
	return words
}
