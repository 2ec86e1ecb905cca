package traceparent

import (
	"strings"
	"testing"
)

const good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestTraceID(t *testing.T) {
	tests := []struct{ in, want string }{
		{good, "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", ""}, // version 00 has no extra fields
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", ""},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", ""},
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", ""},
		{"", ""},
	}
	for _, tc := range tests {
		if got := TraceID(tc.in); got != tc.want {
			t.Errorf("TraceID(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestValid00(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{good, true},
		{strings.ToUpper(good), false},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false}, // valid, but not version 00
		{good + "-extra", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", false},
		{"junk", false},
		{"", false},
	} {
		if got := Valid00(tc.in); got != tc.want {
			t.Errorf("Valid00(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestNew(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tp, id := New("")
		if !Valid00(tp) || TraceID(tp) != id || !strings.HasSuffix(tp, "-01") {
			t.Fatalf("New(\"\") = %q, %q: not a sampled version-00 traceparent carrying its id", tp, id)
		}
		if seen[id] {
			t.Fatalf("New(\"\") repeated trace id %s", id)
		}
		seen[id] = true
	}
	const id = "4bf92f3577b34da6a3ce929d0e0e4736"
	a, ida := New(id)
	b, _ := New(id)
	if ida != id || TraceID(a) != id || !Valid00(a) || a == b {
		t.Errorf("New(%s) = %q, %q then %q: want the id kept and a new span id each time", id, a, ida, b)
	}
}

// FuzzTraceID: whatever the header, TraceID returns "" or a valid
// trace id that the header carries, and Valid00 accepts exactly the
// 55-byte version-00 headers TraceID accepts.
func FuzzTraceID(f *testing.F) {
	f.Add(good)
	f.Add("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra")
	f.Add(good + "-extra")
	f.Add("zz")
	f.Fuzz(func(t *testing.T, tp string) {
		got := TraceID(tp)
		if got != "" && (!ValidTraceID(got) || !strings.Contains(tp, got)) {
			t.Fatalf("TraceID(%q) = %q", tp, got)
		}
		want00 := got != "" && len(tp) == 55 && strings.HasPrefix(tp, "00-")
		if v := Valid00(tp); v != want00 {
			t.Fatalf("Valid00(%q) = %v, TraceID = %q", tp, v, got)
		}
		if got != "" {
			if np, id := New(got); id != got || TraceID(np) != got {
				t.Fatalf("New(%q) = %q, %q", got, np, id)
			}
		}
	})
}
