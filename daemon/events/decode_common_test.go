package events

import (
	"strings"
	"testing"

	segjson "github.com/segmentio/encoding/json"
)

// commonForms are envelopes decodeCommon must take (the clients' usual
// shapes), with others it must leave to the general path.
var (
	commonForms = []string{
		`{"type":"echo","id":"1","data":{"a":[1,2]}}`,
		`{"id":"1","type":"echo","data":"x"}`,
		` { "type" : "echo" , "id" : "1" , "data" : null } `,
		`{"type":"ping","id":"p"}`,
		"{\"type\":\"echo\",\"id\":\"1\",\"data\":\t[1, {\"b\":\"\\u00e9\"}]\n}\r\n",
		`{"type":"echo","data":1}`,
		`{"id":"","type":""}`,
		`{"type":"echo","id":"12345678","data":"abcdefghijklmnopqrstuvwxyz"}`,
		`{"type":"echo","id":"1","data":"` + strings.Repeat("abcdefghijklmnopqrstuvwxyz", 40) + `"}`,
		`{"type":"echo","id":"1","data":"` + strings.Repeat("abcdefghijklmnopqrstuvwx\\\\", 40) + `"}`,
		`{"type":"echo","id":"1","data":"` + strings.Repeat("abcdefghijklmnopqrstuvwxyé", 40) + `"}`,
	}
	generalForms = []string{
		`{}`, `{"type":"ack","pos":3}`, `{"Type":"echo","id":"1"}`, `{"type":"e\u0063ho","id":"1"}`,
		`{"type":"echo","id":"1","data":1,"id":"2"}`, `{"type":"echo","type":"x","id":"1"}`,
		`{"type":"echo","id":"1","data":{"a":1}} x`, `{"type":"echo","id":"1","data":}`,
		`{"type":"echo","id":"1","data":1,}`, `{"type":1,"id":"1"}`, `{"type":"échø","id":"1"}`,
		`{"type":"echo","id":"1","extra":true}`, `{"type":"echo","id":"1",}`, `{"type":"echo","id":"1"`,
		`{"type":"echo","id":"1","data":[1,2}`,
	}
)

// TestDecodeCommonTakesTheUsualShapes: the fast path is taken for the
// shapes clients send, and not for the others.
func TestDecodeCommonTakesTheUsualShapes(t *testing.T) {
	for _, s := range commonForms {
		var e Envelope
		if !decodeCommon([]byte(s), skipSpace([]byte(s), 0), &e) {
			t.Errorf("decodeCommon(%q) = false, want the fast path", s)
		}
		checkSameAsParse(t, []byte(s))
	}
	for _, s := range generalForms {
		b := []byte(s)
		e := Envelope{Type: "untouched"}
		if decodeCommon(b, skipSpace(b, 0), &e) {
			t.Errorf("decodeCommon(%q) = true (%+v), want the general path", s, e)
		}
		if e.Type != "untouched" {
			t.Errorf("decodeCommon(%q) wrote e on its way out: %+v", s, e)
		}
	}
}

// checkSameAsParse fails when decodeCommon takes b but json.Parse with
// json.ZeroCopy (the general path) would decode it otherwise.
func checkSameAsParse(t *testing.T, b []byte) {
	t.Helper()
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return
	}
	var fast Envelope
	if !decodeCommon(b, i, &fast) {
		return
	}
	var slow Envelope
	rest, err := segjson.Parse(b, &slow, segjson.ZeroCopy)
	if err != nil {
		t.Fatalf("decodeCommon took %q, json.Parse refuses it: %v", b, err)
	}
	if skipSpace(rest, 0) != len(rest) {
		t.Fatalf("decodeCommon took %q, json.Parse leaves trailing %q", b, rest)
	}
	if fast.Type != slow.Type || fast.ID != slow.ID || string(fast.Data) != string(slow.Data) ||
		(fast.Data == nil) != (slow.Data == nil) || fast.Pos != nil || slow.Pos != nil {
		t.Fatalf("%q: decodeCommon %+v, json.Parse %+v", b, fast, slow)
	}
}

// FuzzDecodeCommon: whatever decodeCommon takes, json.Parse decodes the
// same way (so Decode behaves as before the fast path).
func FuzzDecodeCommon(f *testing.F) {
	for _, s := range append(append([]string{}, commonForms...), generalForms...) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkSameAsParse(t, b) })
}

// TestDecodeEnvelopeOnStack: the load tool's echo request decodes without
// an allocation into an envelope on the caller's stack, as dispatch's
// (docs/benchmarks.md, "The daemon's message path").
func TestDecodeEnvelopeOnStack(t *testing.T) {
	msg := []byte(`{"type":"echo","id":"12345678","data":"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz"}`)
	if n := testing.AllocsPerRun(100, func() {
		var e Envelope
		if err := Decode(msg, &e); err != nil || e.Type != "echo" {
			t.Fatalf("Decode: %v %+v", err, e)
		}
	}); n != 0 {
		t.Fatalf("Decode allocates %v times per message, want 0", n)
	}
}
