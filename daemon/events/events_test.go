package events

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	long := strings.Repeat("x", 65)
	tests := []struct {
		name    string
		in      string
		wantErr bool
		wantID  string // the id reported, for errors too
		wantTyp string
		data    string
	}{
		{name: "ok", in: `{"type":"echo","id":"1","data":{"a":[1,2]}}`, wantID: "1", wantTyp: "echo", data: `{"a":[1,2]}`},
		{name: "no data", in: ` {"id":"x","type":"ping"} `, wantID: "x", wantTyp: "ping"},
		{name: "escaped id", in: `{"type":"echo","id":"a\"b","data":1}`, wantID: `a"b`, wantTyp: "echo", data: "1"},
		{name: "not json", in: `hello`, wantErr: true},
		{name: "array", in: `[1,2]`, wantErr: true},
		{name: "truncated", in: `{"type":"echo","id":"7"`, wantErr: true},
		{name: "trailing", in: `{"type":"echo","id":"7"} {}`, wantErr: true},
		{name: "missing id", in: `{"type":"echo"}`, wantErr: true},
		{name: "empty id", in: `{"type":"echo","id":""}`, wantErr: true},
		{name: "long id", in: `{"type":"echo","id":"` + long + `"}`, wantErr: true},
		{name: "control char id", in: `{"type":"echo","id":"a\u0001"}`, wantErr: true},
		{name: "numeric id", in: `{"type":"echo","id":5}`, wantErr: true},
		{name: "missing type keeps id", in: `{"id":"9"}`, wantErr: true, wantID: "9"},
		{name: "numeric type keeps id", in: `{"id":"9","type":3}`, wantErr: true, wantID: "9"},
		{name: "bad data keeps nothing", in: `{"id":"9","type":"echo","data":{]}`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var e Envelope
			err := Decode([]byte(tc.in), &e)
			if tc.wantErr {
				de, ok := err.(*DecodeError)
				if !ok {
					t.Fatalf("Decode(%s) = %v, want a *DecodeError", tc.in, err)
				}
				if de.ID != tc.wantID {
					t.Fatalf("DecodeError.ID = %q, want %q", de.ID, tc.wantID)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode(%s): %v", tc.in, err)
			}
			if e.ID != tc.wantID || e.Type != tc.wantTyp || string(e.Data) != tc.data {
				t.Fatalf("got %q %q %s, want %q %q %s", e.Type, e.ID, e.Data, tc.wantTyp, tc.wantID, tc.data)
			}
		})
	}
}

func TestDecodeNoAlloc(t *testing.T) {
	b := []byte(`{"type":"echo","id":"42","data":{"text":"hello"}}`)
	var e Envelope
	allocs := testing.AllocsPerRun(1000, func() {
		if err := Decode(b, &e); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Decode allocated %v times per run, want 0", allocs)
	}
}

func TestEncodeIsValidJSON(t *testing.T) {
	weird := "a\"b\\c\n\x01\u2028é\xff"
	msgs := [][]byte{
		AppendWelcome(nil, "s_1", true, weird, 25000),
		AppendPong(nil, weird),
		AppendChunk(nil, weird, 3, []byte(`{"text":"x"}`)),
		AppendResult(nil, "1", nil),
		AppendError(nil, weird, "timeout", weird),
		AppendReconnect(nil, "draining", 1000),
	}
	for _, m := range msgs {
		var v map[string]any
		if err := json.Unmarshal(m, &v); err != nil {
			t.Fatalf("%s is not valid JSON: %v", m, err)
		}
	}
	var v struct{ ID string }
	_ = json.Unmarshal(AppendPong(nil, "a\"b\\c\n"), &v)
	if v.ID != "a\"b\\c\n" {
		t.Fatalf("round trip id = %q", v.ID)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"echo","id":"1","data":{}}`, `{"type":"ping","id":"p"}`, `{"id":"x"}`, `[]`, `{"type":"a","id":"b","data":[[[[[[1]]]]]]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Envelope
		err := Decode(b, &e)
		if err == nil {
			if !ValidID(e.ID) || !validType(e.Type) {
				t.Fatalf("Decode(%q) accepted id %q type %q", b, e.ID, e.Type)
			}
			if len(e.Data) > 0 && !json.Valid(e.Data) {
				t.Fatalf("Decode(%q) accepted invalid data %q", b, e.Data)
			}
			// An accepted message re-encodes into valid JSON.
			out := AppendResult(nil, e.ID, e.Data)
			if !json.Valid(out) {
				t.Fatalf("re-encoded %q is invalid", out)
			}
		} else if de, ok := err.(*DecodeError); !ok || (de.ID != "" && !ValidID(de.ID)) {
			t.Fatalf("Decode(%q) error %v", b, err)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	msg := []byte(`{"type":"echo","id":"42","data":{"text":"hello world"}}`)
	var e Envelope
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if err := Decode(msg, &e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendChunk(b *testing.B) {
	buf := make([]byte, 0, 256)
	data := []byte(`{"text":"hello world"}`)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendChunk(buf[:0], "42", 7, data)
	}
}

// BenchmarkDecodeStdlib is the baseline of BenchmarkDecode: the same
// envelope through encoding/json into the same struct.
func BenchmarkDecodeStdlib(b *testing.B) {
	msg := []byte(`{"type":"echo","id":"42","data":{"text":"hello world"}}`)
	var e Envelope
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if err := json.Unmarshal(msg, &e); err != nil {
			b.Fatal(err)
		}
	}
}
