package backends

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestEchoWords(t *testing.T) {
	for _, tc := range []struct {
		data string
		want []string
	}{
		{`{"text":"hello streaming world"}`, []string{"hello ", "streaming ", "world"}},
		{`"a  b\n"`, []string{"a  ", "b\n"}},
		{`{"text":""}`, nil},
		{`42`, nil},
		{`{"other":1}`, nil},
		{``, nil},
	} {
		got := echoWords(json.RawMessage(tc.data))
		if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("echoWords(%s) = %q, want %q", tc.data, got, tc.want)
		}
	}
}

func TestEchoStreamWords(t *testing.T) {
	b := echoBackend{stream: EchoStreamWords, delay: time.Millisecond}
	var rec recorder
	res, err := b.Call(context.Background(), &Request{ID: "1", Data: json.RawMessage(`{"text":"one two three"}`)}, rec.emit)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`{"text":"one "}`, `{"text":"two "}`, `{"text":"three"}`}
	if got := rec.got(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("chunks %q, want %q", got, want)
	}
	if string(res.Data) != `{"text":"one two three"}` {
		t.Fatalf("result %s, want the request's data", res.Data)
	}
}

func TestEchoStreamCanceled(t *testing.T) {
	b := echoBackend{stream: EchoStreamWords, delay: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	var rec recorder
	done := make(chan error, 1)
	go func() {
		_, err := b.Call(ctx, &Request{ID: "1", Data: json.RawMessage(`"a b"`)}, rec.emit)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want canceled", err)
	}
	if n := len(rec.got()); n != 0 {
		t.Fatalf("%d chunks after cancel, want 0", n)
	}
}

// FuzzEchoWords: the words of any text concatenate back to the text, and
// each word holds exactly one run of non-space characters.
func FuzzEchoWords(f *testing.F) {
	for _, s := range []string{"hello streaming world", "  lead", "trail  ", "a\tb\nc", "", "ünï cödé 語"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		data, err := json.Marshal(text)
		if err != nil {
			t.Skip()
		}
		var want string
		_ = json.Unmarshal(data, &want) // invalid UTF-8 is replaced on the way
		words := echoWords(data)
		if got := strings.Join(words, ""); got != want {
			t.Fatalf("words %q join to %q, want %q", words, got, want)
		}
		for i, w := range words {
			if w == "" || (i > 0 && strings.TrimSpace(w) == "") {
				t.Fatalf("word %d of %q is %q", i, words, w)
			}
		}
	})
}
