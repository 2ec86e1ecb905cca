package main

import (
	"net/netip"
	"testing"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// TestReloadRefusesClientAddressKeys: listen.trusted_proxies and
// listen.proxy_protocol are engine settings; a reload that changes them
// names them as restart-only (their running values are kept).
func TestReloadRefusesClientAddressKeys(t *testing.T) {
	old := config.Default()
	for name, change := range map[string]func(*config.Config){
		"trusted_proxies": func(c *config.Config) {
			c.Listen.TrustedProxies = []config.CIDR{config.CIDR(netip.MustParsePrefix("10.0.0.0/8"))}
		},
		"proxy_protocol": func(c *config.Config) { c.Listen.ProxyProtocol = true },
	} {
		next := old
		next.Listen.TrustedProxies = append([]config.CIDR(nil), old.Listen.TrustedProxies...)
		change(&next)
		ch := diffConfig(old, next)
		if len(ch) != 1 || ch[0].Path != "listen."+name || !ch[0].Restart {
			t.Errorf("changing listen.%s: %v, want one restart-only change naming it", name, ch)
		}
		if kept := keepRestartOnly(old, next); len(diffConfig(old, kept)) != 0 {
			t.Errorf("changing listen.%s: the running value was not kept", name)
		}
	}
	if ch := diffConfig(old, old); len(ch) != 0 {
		t.Errorf("no change: %v", ch)
	}
}
