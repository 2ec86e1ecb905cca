package main

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// TestReloadRefusesClientAddressKeys: listen.trusted_proxies and
// listen.proxy_protocol are engine settings; a reload that changes them is
// refused by name (they need a restart).
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
		if err := restartOnly(old, next); err == nil || !strings.Contains(err.Error(), "listen") {
			t.Errorf("changing listen.%s: %v, want a refusal naming listen", name, err)
		}
	}
	if err := restartOnly(old, old); err != nil {
		t.Errorf("no change: %v", err)
	}
}
