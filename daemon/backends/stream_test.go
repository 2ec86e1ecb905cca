package backends

import (
	"context"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// TestReadAnswerByteByByte feeds answers one byte per read, the worst
// split a TCP stream can give.
func TestReadAnswerByteByByte(t *testing.T) {
	tests := []struct {
		name, media, body string
		wantChunks        []string
		wantData          string
		wantErr           bool
	}{
		{"sse crlf", mediaSSE, "data: {\"chunk\":1}\r\n\r\ndata: {\"data\":2}\r\n\r\n", []string{"1"}, "2", false},
		{"sse multi-line", mediaSSE, "data:{\"chunk\":\ndata:[1,\ndata:2]}\n\n", []string{"[1,\n2]"}, "", false},
		{"sse comment only", mediaSSE, ":keepalive\n\n:x\n", nil, "", false},
		{"sse last event without blank line", mediaSSE, "data: {\"data\":\"end\"}", nil, `"end"`, false},
		{"sse done marker", mediaSSE, "data: {\"chunk\":1}\n\ndata: [DONE]\n\ndata: {\"chunk\":2}\n\n", []string{"1"}, "", false},
		{"sse field without colon", mediaSSE, "data\ndata: {\"chunk\":1}\n\n", []string{"1"}, "", false},
		{"ndjson no final newline", mediaNDJSON, "{\"chunk\":\"a\"}\n{\"data\":\"b\"}", []string{`"a"`}, `"b"`, false},
		{"ndjson blank lines", mediaNDJSON, "\n\n{\"chunk\":null}\r\n\n", []string{"null"}, "", false},
		{"ndjson trailing garbage", mediaNDJSON, "{\"chunk\":1} x\n", nil, "", true},
		{"ndjson array is not an object", mediaNDJSON, "[1]\n", nil, "", true},
		{"context not an object", mediaNDJSON, "{\"data\":1,\"context\":[1]}\n", nil, "", true},
		{"error string", mediaNDJSON, "{\"error\":\"boom\"}\n", nil, "", true},
		{"json empty", mediaJSON, "", nil, "", false},
		{"json data null", mediaJSON, `{"data":null}`, nil, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var rec recorder
			res, err := readAnswer(context.Background(), tc.media, iotest.OneByteReader(strings.NewReader(tc.body)), rec.emit)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if got := rec.got(); !slices.Equal(got, tc.wantChunks) {
				t.Errorf("chunks = %q, want %q", got, tc.wantChunks)
			}
			if string(res.Data) != tc.wantData {
				t.Errorf("data = %q, want %q", res.Data, tc.wantData)
			}
		})
	}
}

func TestLongLines(t *testing.T) {
	big := strings.Repeat("x", 100<<10) // longer than the 32 KiB read buffer
	var rec recorder
	res, err := readAnswer(context.Background(), mediaNDJSON, strings.NewReader(`{"chunk":"`+big+`"}`+"\n"+`{"data":1}`), rec.emit)
	if err != nil || string(res.Data) != "1" || len(rec.got()) != 1 || len(rec.got()[0]) != len(big)+2 {
		t.Fatalf("long line: err %v data %s chunks %d", err, res.Data, len(rec.got()))
	}
	huge := strings.Repeat("y", maxObjectBytes+10)
	_, err = readAnswer(context.Background(), mediaSSE, strings.NewReader("data: "+huge+"\n\n"), noEmit)
	if codeOf(err) != "backend_error" {
		t.Fatalf("oversized event: err = %v, want backend_error", err)
	}
}

func TestSafeMessage(t *testing.T) {
	tests := []struct{ in, want string }{
		{"  plain  ", "plain"},
		{"a\x00b\nc", "a b c"},
		{"bad \xff utf8", "bad ? utf8"},
		{strings.Repeat("é", 200), strings.Repeat("é", 128)},
	}
	for _, tc := range tests {
		if got := safeMessage([]byte(tc.in)); got != tc.want {
			t.Errorf("safeMessage(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzReadAnswer: any answer, split anywhere, ends in exactly one outcome
// without panicking, and an error is always an *Error the caller can
// classify.
func FuzzReadAnswer(f *testing.F) {
	f.Add(mediaSSE, "data: {\"chunk\":1}\n\ndata: {\"data\":2}\n\n")
	f.Add(mediaNDJSON, "{\"chunk\":1}\n{\"error\":{\"message\":\"x\"}}\n")
	f.Add(mediaJSON, `{"data":1,"context":{"a":1}}`)
	f.Fuzz(func(t *testing.T, media, body string) {
		res, err := readAnswer(context.Background(), media, iotest.HalfReader(strings.NewReader(body)), noEmit)
		if err != nil {
			if codeOf(err) != "backend_error" {
				t.Fatalf("error %v maps to %s", err, codeOf(err))
			}
			if res.Data != nil || res.ContextPatch != nil {
				t.Fatalf("error with a result: %v", res)
			}
		}
	})
}
