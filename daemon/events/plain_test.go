package events

import (
	"strings"
	"testing"

	segjson "github.com/segmentio/encoding/json"
)

// plainReference is plainJSONString byte by byte.
func plainReference(v []byte) bool {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return false
	}
	for _, c := range v[1 : len(v)-1] {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// TestPlainJSONStringEveryByte puts every byte value at every position of
// strings of 0 to 40 bytes (the word loop, the 8-byte step and the tail),
// and checks plainJSONString against the byte-by-byte definition; what it
// takes json.Valid must take too.
func TestPlainJSONStringEveryByte(t *testing.T) {
	for n := 0; n <= 40; n++ {
		base := []byte(`"` + strings.Repeat("a", n) + `"`)
		if !plainJSONString(base) {
			t.Fatalf("plainJSONString(%q) = false", base)
		}
		for pos := 1; pos <= n; pos++ {
			for c := 0; c < 256; c++ {
				v := append([]byte(nil), base...)
				v[pos] = byte(c)
				got, want := plainJSONString(v), plainReference(v)
				if got != want {
					t.Fatalf("plainJSONString(%q) = %v, want %v", v, got, want)
				}
				if got && !segjson.Valid(v) {
					t.Fatalf("plainJSONString(%q) = true, json.Valid false", v)
				}
			}
		}
	}
	for _, s := range []string{``, `"`, `a`, `"a`, `a"`, `'a'`, `1`, `null`, `{"a":1}`, `""`} {
		if got, want := plainJSONString([]byte(s)), plainReference([]byte(s)); got != want {
			t.Errorf("plainJSONString(%q) = %v, want %v", s, got, want)
		}
	}
}

// TestPlainJSONStringLong: a bad byte anywhere in a long string (the early
// stop every 128 bytes, and after it) is found.
func TestPlainJSONStringLong(t *testing.T) {
	for _, n := range []int{127, 128, 129, 1000, 1024, 4099} {
		base := []byte(`"` + strings.Repeat("abcdefghijklmnopqrstuvwxyz", n/26+1)[:n] + `"`)
		if !plainJSONString(base) {
			t.Fatalf("n=%d: plain string refused", n)
		}
		for pos := 1; pos <= n; pos++ {
			for _, c := range []byte{'"', '\\', 0x1f, 0x7f, 0x80, 0xff, 0} {
				v := append([]byte(nil), base...)
				v[pos] = c
				if plainJSONString(v) {
					t.Fatalf("n=%d: byte %#x at %d taken", n, c, pos)
				}
			}
		}
	}
}

// FuzzPlainJSONString: plainJSONString is its byte-by-byte definition,
// and json.Valid takes whatever it takes.
func FuzzPlainJSONString(f *testing.F) {
	for _, s := range []string{`""`, `"abc"`, `"a\"b"`, `"é"`, `"` + strings.Repeat("x", 70) + `"`, `"a\u0001"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		got, want := plainJSONString(v), plainReference(v)
		if got != want {
			t.Fatalf("plainJSONString(%q) = %v, want %v", v, got, want)
		}
		if got && !segjson.Valid(v) {
			t.Fatalf("plainJSONString(%q) = true, json.Valid false", v)
		}
	})
}

// BenchmarkDataString: the load tool's 1 KiB echo data (a JSON string of
// letters), checked by plainJSONString and by json.Valid, in a hot loop.
func BenchmarkDataString(b *testing.B) {
	v := []byte(`"` + strings.Repeat("abcdefghijklmnopqrstuvwxyz", 40)[:983] + `"`)
	b.Run("plain", func(b *testing.B) {
		b.SetBytes(int64(len(v)))
		for b.Loop() {
			if !plainJSONString(v) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("json.Valid", func(b *testing.B) {
		b.SetBytes(int64(len(v)))
		for b.Loop() {
			if !segjson.Valid(v) {
				b.Fatal("refused")
			}
		}
	})
}
