package redact

import (
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"no url", "dial tcp 127.0.0.1:80: connection refused", "dial tcp 127.0.0.1:80: connection refused"},
		{"plain", "http://127.0.0.1:7001/query", "http://127.0.0.1:7001/query"},
		{"password", "http://dbuser:hunter2@db.example:5432/x", "http://xxxxx@db.example:5432/x"},
		{"user only", "https://token123@github.com/o/r", "https://xxxxx@github.com/o/r"},
		{"empty user", "redis://:s3cret@127.0.0.1:6379/0", "redis://xxxxx@127.0.0.1:6379/0"},
		{"at in password", "http://u:p@ss@h/", "http://xxxxx@h/"},
		{"query", "http://h/v1?api_key=abc123&model=x", "http://h/v1?api_key=xxxxx&model=xxxxx"},
		{"semicolon query", "http://h/?a=1;b=2", "http://h/?a=xxxxx;b=xxxxx"},
		{"bare query item", "http://h/?SECRET", "http://h/?xxxxx"},
		{"empty query", "http://h/?", "http://h/?"},
		{"empty items", "http://h/?&a=1&", "http://h/?&a=xxxxx&"},
		{"fragment", "http://h/p#access_token=zzz", "http://h/p#xxxxx"},
		{"query and fragment", "http://h/p?k=v#f", "http://h/p?k=xxxxx#xxxxx"},
		{"query without path", "http://h?k=v", "http://h?k=xxxxx"},
		{"both", "http://u:p@h:1/p?k=v", "http://xxxxx@h:1/p?k=xxxxx"},
		{"at in path", "http://h/users/@me?x=1", "http://h/users/@me?x=xxxxx"},
		{"nats list", "nats://a:b@h1:4222,nats://c:d@h2:4222", "nats://xxxxx@h1:4222,nats://xxxxx@h2:4222"},
		{"comma in query value", "http://h/?ids=1,2,3 next", "http://h/?ids=xxxxx next"},
		{"in an error", `Post "http://u:pw@h/x?api_key=k": dial tcp: connection refused`, `Post "http://xxxxx@h/x?api_key=xxxxx": dial tcp: connection refused`},
		{"two in text", "from http://a:b@x to https://y/?t=1 end", "from http://xxxxx@x to https://y/?t=xxxxx end"},
		{"no scheme", "://u:p@h", "://xxxxx@h"},
		{"ends at backslash", `"http://h/?k=v\u0026x=1"`, `"http://h/?k=xxxxx\u0026x=1"`},
		{"empty", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := String(tc.in)
			if got != tc.want {
				t.Fatalf("String(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if again := String(got); again != got {
				t.Fatalf("String is not idempotent: String(%q) = %q", got, again)
			}
		})
	}
}

func TestStringNoURLDoesNotAllocate(t *testing.T) {
	s := strings.Repeat("plain log text ", 10)
	if n := testing.AllocsPerRun(100, func() { _ = String(s) }); n != 0 {
		t.Fatalf("String without a URL allocates %v times, want 0", n)
	}
}

// FuzzString checks, for any input, that String is idempotent, never
// loses the text outside URLs' secrets, and that no password or query
// value of a URL it is given survives.
func FuzzString(f *testing.F) {
	f.Add("http://dbuser:hunter2@db:5432/q?api_key=abc", "u", "p", "h", "k", "v")
	f.Add("nats://a:b@h1,nats://h2", "user", "pass", "example.com:80", "api_key", "s3cr3t")
	f.Add("", "", "", "", "", "")
	f.Fuzz(func(t *testing.T, text, user, pass, host, key, val string) {
		out := String(text)
		if again := String(out); again != out {
			t.Fatalf("not idempotent: String(%q) = %q, String of that = %q", text, out, again)
		}
		if !strings.Contains(text, "://") && out != text {
			t.Fatalf("String(%q) = %q changed text without a URL", text, out)
		}
		// A URL built from parts that keep their roles.
		if !clean(user, ":@/?#&;=,") || !clean(pass, "@/?#&;=,") || !clean(host, "@/?#&;=,:") || host == "" ||
			!clean(key, "/?#&;=,") || key == "" || !clean(val, "#&;,") {
			return
		}
		u := "http://" + user + ":" + pass + "@" + host + "/p?" + key + "=" + val
		got := String("err: " + u + " failed")
		want := "err: http://" + Mask + "@" + host + "/p?" + key + "=" + Mask + " failed"
		if got != want {
			t.Fatalf("String(%q) = %q, want %q", u, got, want)
		}
	})
}

// clean reports whether s avoids the URL-ending bytes, "://" and bad.
func clean(s, bad string) bool {
	return !strings.ContainsAny(s, " \t\n\r\v\f\"'<>\\`"+bad) && !strings.Contains(s, "://")
}
