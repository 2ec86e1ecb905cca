package backends

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/events"
)

// fakeLLM is an OpenAI-compatible chat completions server. It answers with
// the reply given by reply(messages), streamed word by word.
type fakeLLM struct {
	t        *testing.T
	requests atomic.Int64
	last     chan []events.Turn
	reply    func(w http.ResponseWriter, msgs []events.Turn)
}

func (f *fakeLLM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	if r.URL.Path != "/v1/chat/completions" || r.Header.Get("Authorization") != "Bearer sk-test" {
		http.Error(w, `{"error":{"message":"bad path or key"}}`, 401)
		return
	}
	var body struct {
		Model         string `json:"model"`
		Stream        bool   `json:"stream"`
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
		Messages []events.Turn `json:"messages"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Model != "m1" || !body.Stream || !body.StreamOptions.IncludeUsage {
		f.t.Errorf("request body: %+v, %v", body, err)
	}
	select {
	case f.last <- body.Messages:
	default:
	}
	f.reply(w, body.Messages)
}

// sseCompletion streams words as deltas, a finish chunk, a usage chunk and
// [DONE], the way OpenAI does.
func sseCompletion(w http.ResponseWriter, words []string) {
	w.Header().Set("Content-Type", "text/event-stream")
	fl := w.(http.Flusher)
	io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n")
	for _, wd := range words {
		b, _ := json.Marshal(wd)
		fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":%s},\"finish_reason\":null}]}\n\n", b)
		fl.Flush()
	}
	io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n")
	io.WriteString(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n")
	io.WriteString(w, "data: [DONE]\n\n")
}

func newLLM(t *testing.T, reply func(http.ResponseWriter, []events.Turn)) (*fakeLLM, *Pool, *Set) {
	f := &fakeLLM{t: t, last: make(chan []events.Turn, 4), reply: reply}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	s, _ := newTestSet(t, map[string]config.Backend{"llm": {
		Kind:         config.KindOpenAI,
		Endpoints:    []string{srv.URL + "/v1/"},
		Model:        "m1",
		APIKeyEnv:    "LLM_KEY",
		SystemPrompt: "Be brief.",
	}}, map[string]string{"LLM_KEY": "sk-test"})
	return f, mustPool(t, s, "llm"), s
}

// TestOpenAIConversation: two turns; the second request carries the first
// turn, fed back from Result.Turns as History.
func TestOpenAIConversation(t *testing.T) {
	f, p, _ := newLLM(t, func(w http.ResponseWriter, msgs []events.Turn) {
		if last := msgs[len(msgs)-1].Content; last == "hi" {
			sseCompletion(w, []string{"Hel", "lo"})
		} else {
			sseCompletion(w, []string{"Fine", ", thanks", "\n\"ok\""})
		}
	})
	var rec recorder
	res, err := p.Call(context.Background(), &Request{ID: "1", Data: []byte(`{"text":"hi"}`)}, rec.emit)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rec.got(), []string{`{"text":"Hel"}`, `{"text":"lo"}`}; !slices.Equal(got, want) {
		t.Errorf("chunks = %q, want %q", got, want)
	}
	want := `{"text":"Hello","finish_reason":"stop","usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}`
	if !jsonEqual(t, string(res.Data), want) {
		t.Errorf("result = %s, want %s", res.Data, want)
	}
	wantTurns := []events.Turn{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "Hello"}}
	if !slices.Equal(res.Turns, wantTurns) {
		t.Errorf("turns = %v, want %v", res.Turns, wantTurns)
	}
	msgs := recv(t, f.last, "first messages")
	if want := []events.Turn{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "hi"}}; !slices.Equal(msgs, want) {
		t.Errorf("first messages = %v, want %v", msgs, want)
	}

	rec = recorder{}
	res, err = p.Call(context.Background(), &Request{ID: "2", Data: []byte(`{"text":"how are you?"}`), History: res.Turns}, rec.emit)
	if err != nil {
		t.Fatal(err)
	}
	msgs = recv(t, f.last, "second messages")
	wantMsgs := []events.Turn{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "hi"},
		{Role: "assistant", Content: "Hello"}, {Role: "user", Content: "how are you?"}}
	if !slices.Equal(msgs, wantMsgs) {
		t.Errorf("second messages = %v, want %v", msgs, wantMsgs)
	}
	var out struct{ Text string }
	if err := json.Unmarshal(res.Data, &out); err != nil || out.Text != "Fine, thanks\n\"ok\"" {
		t.Errorf("second reply = %s (%v)", res.Data, err)
	}
	if got := rec.got(); len(got) != 3 || got[2] != `{"text":"\n\"ok\""}` {
		t.Errorf("second chunks = %q", got)
	}
}

func TestOpenAIFailures(t *testing.T) {
	tests := []struct {
		name        string
		data        string
		reply       func(http.ResponseWriter, []events.Turn)
		wantCode    string
		wantMessage string
		wantChunks  []string
		wantCalled  bool
		wantFailure bool
	}{
		{name: "no text", data: `{"txt":"x"}`, wantCode: "backend_rejected", wantMessage: "data.text is required"},
		{name: "not an object", data: `"hi"`, wantCode: "backend_rejected", wantMessage: "data.text is required"},
		{name: "empty text", data: `{"text":""}`, wantCode: "backend_rejected", wantMessage: "data.text is required"},
		{
			name: "error mid-stream", data: `{"text":"hi"}`, wantCalled: true, wantFailure: true,
			reply: func(w http.ResponseWriter, _ []events.Turn) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"par\"}}]}\n\n")
				io.WriteString(w, "data: {\"error\":{\"message\":\"model overloaded\",\"type\":\"server_error\"}}\n\n")
			},
			wantCode: "backend_error", wantChunks: []string{`{"text":"par"}`},
		},
		{
			name: "400 from the server", data: `{"text":"hi"}`, wantCalled: true,
			reply: func(w http.ResponseWriter, _ []events.Turn) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(400)
				io.WriteString(w, `{"error":{"message":"context length exceeded","type":"invalid_request_error"}}`)
			},
			wantCode: "backend_rejected", wantMessage: "context length exceeded",
		},
		{
			name: "503 from the server", data: `{"text":"hi"}`, wantCalled: true, wantFailure: true,
			reply:    func(w http.ResponseWriter, _ []events.Turn) { http.Error(w, "busy", 503) },
			wantCode: "backend_error",
		},
		{
			name: "stream cut before the end", data: `{"text":"hi"}`, wantCalled: true, wantFailure: true,
			reply: func(w http.ResponseWriter, _ []events.Turn) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"par\"}}]}\n\n")
			},
			wantCode: "backend_error", wantChunks: []string{`{"text":"par"}`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, p, s := newLLM(t, tc.reply)
			var rec recorder
			_, err := p.Call(context.Background(), &Request{ID: "1", Data: []byte(tc.data)}, rec.emit)
			if codeOf(err) != tc.wantCode {
				t.Fatalf("err = %v (%s), want %s", err, codeOf(err), tc.wantCode)
			}
			var be *Error
			if tc.wantMessage != "" && (!errors.As(err, &be) || be.Message != tc.wantMessage) {
				t.Errorf("err = %v, want message %q", err, tc.wantMessage)
			}
			if got := rec.got(); !slices.Equal(got, tc.wantChunks) {
				t.Errorf("chunks = %q, want %q", got, tc.wantChunks)
			}
			if called := f.requests.Load() > 0; called != tc.wantCalled {
				t.Errorf("server called = %v, want %v", called, tc.wantCalled)
			}
			st := state(t, s, "llm").Endpoints[0]
			if (st.Failures > 0) != tc.wantFailure {
				t.Errorf("failures = %d, want failure %v", st.Failures, tc.wantFailure)
			}
			if !tc.wantCalled && st.Successes != 0 {
				t.Errorf("a refused request counted as a success: %d", st.Successes)
			}
		})
	}
}

// TestOpenAIWholeJSON: a server that ignores stream:true and answers one
// completion object still gives a result.
func TestOpenAIWholeJSON(t *testing.T) {
	_, p, _ := newLLM(t, func(w http.ResponseWriter, _ []events.Turn) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[{"message":{"role":"assistant","content":"Hi there"},"finish_reason":"length"}]}`)
	})
	res, err := p.Call(context.Background(), &Request{ID: "1", Data: []byte(`{"text":"hi"}`)}, noEmit)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"text":"Hi there","finish_reason":"length"}`; !jsonEqual(t, string(res.Data), want) {
		t.Errorf("result = %s, want %s", res.Data, want)
	}
	if !strings.Contains(res.Turns[1].Content, "Hi there") {
		t.Errorf("turns = %v", res.Turns)
	}
}
