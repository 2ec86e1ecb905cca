package sessions

import (
	"encoding/json"
	"errors"
	"os"
	"testing"
)

// TestMergePatch runs the RFC 7386 appendix A examples whose result is an
// object, plus exact-number and non-object cases, from testdata.
func TestMergePatch(t *testing.T) {
	raw, err := os.ReadFile("../../testdata/sessions/mergepatch.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Doc, Patch, Want json.RawMessage
		Err              bool
	}
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(string(tc.Patch), func(t *testing.T) {
			got, err := MergePatch(tc.Doc, tc.Patch)
			if tc.Err {
				if !errors.Is(err, ErrInvalidPatch) {
					t.Fatalf("MergePatch(%s, %s) error = %v, want ErrInvalidPatch", tc.Doc, tc.Patch, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("MergePatch(%s, %s): %v", tc.Doc, tc.Patch, err)
			}
			if !jsonEqual(t, got, tc.Want) {
				t.Fatalf("MergePatch(%s, %s) = %s, want %s", tc.Doc, tc.Patch, got, tc.Want)
			}
		})
	}
}

func TestMergePatchNotJSON(t *testing.T) {
	if _, err := MergePatch([]byte(`{}`), []byte(`{"a":`)); !errors.Is(err, ErrInvalidPatch) {
		t.Fatalf("got %v, want ErrInvalidPatch", err)
	}
}

// jsonEqual compares two JSON texts by value, numbers by their exact text.
func jsonEqual(t testing.TB, a, b []byte) bool {
	t.Helper()
	norm := func(x []byte) string {
		v, err := decodeJSON(x)
		if err != nil {
			t.Fatalf("decode %s: %v", x, err)
		}
		out, err := json.Marshal(v) // sorted keys; json.Number keeps its text
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	return norm(a) == norm(b)
}
