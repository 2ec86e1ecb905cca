package gateway

import (
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// FuzzResumeFrom: the ?last= parser of a resume (contract 1.1 section
// 4a). Without a last key it is a v1 resume; with one, the (unescaped)
// value must be a canonical decimal from 0 to 2^53-1, anything else is
// refused (400) rather than read as some other position. It never panics
// on any query string.
func FuzzResumeFrom(f *testing.F) {
	for _, q := range []string{"", "session=s1", "session=s1&last=0", "last=12&session=s1",
		"last=", "last", "last=-1", "last=01", "last=1e3", "last=9007199254740991",
		"last=9007199254740992", "last=18446744073709551616", "last=%31%32", "last=%zz",
		"last=1&last=2", "lastx=3", "xlast=3", "last=+1", "last=1%20", "&&last=7&&", "last=%00"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, q string) {
		from, ok := resumeFrom(q)
		// The reference: the first "last" key in the raw query, its value
		// unescaped as the gateway does.
		has, val, escOK := false, "", true
		for _, kv := range strings.Split(q, "&") {
			k, v, _ := strings.Cut(kv, "=")
			if k == "last" {
				has = true
				u, err := url.QueryUnescape(v)
				val, escOK = u, err == nil
				break
			}
		}
		if !has {
			if !ok || from.HasLast || from.Last != 0 {
				t.Fatalf("resumeFrom(%q) = %+v, %v; want a v1 resume", q, from, ok)
			}
			return
		}
		n, err := strconv.ParseUint(val, 10, 64)
		valid := escOK && err == nil && strconv.FormatUint(n, 10) == val && n <= 1<<53-1
		if ok != valid {
			t.Fatalf("resumeFrom(%q) ok=%v, want %v (value %q)", q, ok, valid, val)
		}
		if ok && (!from.HasLast || from.Last != n) {
			t.Fatalf("resumeFrom(%q) = %+v, want last %d", q, from, n)
		}
	})
}
