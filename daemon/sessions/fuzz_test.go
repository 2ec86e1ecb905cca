package sessions

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

// FuzzMergePatch: any input either fails with ErrInvalidPatch (or a
// decode error for the document) or yields a JSON object that a second
// application of the same patch leaves unchanged (merge patches are
// idempotent).
func FuzzMergePatch(f *testing.F) {
	f.Add([]byte(`{"a":1}`), []byte(`{"a":null,"b":{"c":[1,2]}}`))
	f.Add([]byte(`{}`), []byte(`[1]`))
	f.Add([]byte(``), []byte(`{"x":1e400}`))
	f.Fuzz(func(t *testing.T, doc, patch []byte) {
		out, err := MergePatch(doc, patch)
		if err != nil {
			return
		}
		if len(out) == 0 || out[0] != '{' {
			t.Fatalf("MergePatch(%q, %q) = %q: not an object", doc, patch, out)
		}
		again, err := MergePatch(out, patch)
		if err != nil {
			t.Fatalf("second MergePatch(%q, %q): %v", out, patch, err)
		}
		if !bytes.Equal(out, again) {
			t.Fatalf("not idempotent: %q then %q", out, again)
		}
	})
}

// FuzzDecodeBus: a bus message never panics the decoder, and what encodes
// decodes to the same header and payload.
func FuzzDecodeBus(f *testing.F) {
	f.Add("relay", "s_x", uint64(7), []byte(`{"type":"chunk"}`))
	f.Add("attach", "", uint64(0), []byte("\n\n"))
	f.Fuzz(func(t *testing.T, typ, sess string, conn uint64, payload []byte) {
		decodeBus(payload) // arbitrary bytes: must not panic
		if !utf8.ValidString(typ) || !utf8.ValidString(sess) {
			return // kinds are constants and session ids ASCII (ValidID)
		}
		raw, err := encodeBus(busMsg{T: typ, S: sess, C: conn}, payload)
		if err != nil {
			return
		}
		h, p, err := decodeBus([]byte(raw))
		if err != nil {
			t.Fatalf("decode of encoded message: %v", err)
		}
		if h.T != typ || h.S != sess || h.C != conn || !bytes.Equal(p, payload) {
			t.Fatalf("round trip: got %+v %q, want %q %q %d %q", h, p, typ, sess, conn, payload)
		}
	})
}
