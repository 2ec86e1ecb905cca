package config

import (
	"strings"
	"testing"
)

func TestTrustedProxies(t *testing.T) {
	const head = "auth:\n  anonymous: true\nlisten:\n  client: \":1\"\n"
	tests := []struct {
		name    string
		yaml    string
		env     []string
		want    string // the prefixes, space-separated
		wantErr string
	}{
		{"default none", head, nil, "", ""},
		{"prefixes and addresses", head + "  trusted_proxies: [10.0.0.0/8, 127.0.0.1, \"2001:db8::1\", \"::ffff:10.1.0.0/112\", 192.168.1.7/24]\n", nil,
			"10.0.0.0/8 127.0.0.1/32 2001:db8::1/128 10.1.0.0/16 192.168.1.0/24", ""},
		{"bad entry names key and line", head + "  trusted_proxies:\n    - 10.0.0.0/8\n    - nope\n", nil, "", `listen.trusted_proxies[1]: line 7: invalid CIDR "nope"`},
		{"bad bits", head + "  trusted_proxies: [10.0.0.0/33]\n", nil, "", `listen.trusted_proxies[0]: line 5: invalid CIDR "10.0.0.0/33"`},
		{"a zone is refused", head + "  trusted_proxies: [\"fe80::1%eth0\"]\n", nil, "", "invalid CIDR"},
		{"a mapping is refused", head + "  trusted_proxies:\n    - {a: 1}\n", nil, "", "listen.trusted_proxies[0]: line 6: got a mapping, want an address or CIDR string"},
		{"env override", head, []string{"ORCH_LISTEN_TRUSTED_PROXIES=10.0.0.1, 192.168.0.0/16"}, "10.0.0.1/32 192.168.0.0/16", ""},
		{"bad env override", head, []string{"ORCH_LISTEN_TRUSTED_PROXIES=10.0.0.1,x"}, "", `ORCH_LISTEN_TRUSTED_PROXIES (listen.trusted_proxies): invalid CIDR "x"`},
		{"proxy protocol needs trusted proxies", head + "  proxy_protocol: true\n", nil, "", "listen.proxy_protocol: line 5: needs listen.trusted_proxies"},
		{"proxy protocol", head + "  proxy_protocol: true\n  trusted_proxies: [127.0.0.1]\n", nil, "127.0.0.1/32", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml), tc.env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range c.Listen.TrustedPrefixes() {
				got = append(got, p.String())
			}
			if g := strings.Join(got, " "); g != tc.want {
				t.Fatalf("trusted proxies %q, want %q", g, tc.want)
			}
		})
	}
}
