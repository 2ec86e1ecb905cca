package events

import (
	"strconv"
	"testing"
)

// FuzzAckPos: AckPos accepts exactly the canonical decimal integers from
// 0 to 2^53-1 (no sign, no leading zero, no spaces, no exponent) and
// returns their value; everything else is refused. The reference is
// strconv.ParseUint plus the canonical form check.
func FuzzAckPos(f *testing.F) {
	for _, s := range []string{"0", "1", "42", "9007199254740991", "9007199254740992",
		"18446744073709551615", "18446744073709551616", "01", "00", "-1", "+1", " 1", "1 ",
		"1e3", "0x10", "1.0", "", "١", "99999999999999999"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		pos, ok := AckPos(raw)
		s := string(raw)
		want, err := strconv.ParseUint(s, 10, 64)
		canonical := err == nil && strconv.FormatUint(want, 10) == s && want <= 1<<53-1
		if ok != canonical {
			t.Fatalf("AckPos(%q) ok=%v, want %v", raw, ok, canonical)
		}
		if ok && pos != want {
			t.Fatalf("AckPos(%q) = %d, want %d", raw, pos, want)
		}
		if !ok && pos != 0 {
			t.Fatalf("AckPos(%q) refused but returned %d", raw, pos)
		}
	})
}
