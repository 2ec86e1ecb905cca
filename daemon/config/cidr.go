package config

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// CIDR is an IP prefix, written "10.0.0.0/8", or a single address
// ("10.0.0.1" is 10.0.0.1/32, "2001:db8::1" is /128). IPv4-mapped IPv6
// prefixes are unmapped; host bits are masked off.
type CIDR netip.Prefix

var cidrType = reflect.TypeOf(CIDR{})

// Prefix returns c as a netip.Prefix.
func (c CIDR) Prefix() netip.Prefix { return netip.Prefix(c) }

// String returns the prefix in CIDR notation.
func (c CIDR) String() string { return netip.Prefix(c).String() }

// MarshalText writes the prefix in CIDR notation.
func (c CIDR) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText parses a CIDR or a single IP address.
func (c *CIDR) UnmarshalText(b []byte) error {
	p, err := parseCIDR(string(b))
	if err != nil {
		return err
	}
	*c = CIDR(p)
	return nil
}

// UnmarshalYAML decodes a YAML scalar; an error names the key path and the
// line, as the loader's other errors do.
func (c *CIDR) UnmarshalYAML(n ast.Node) error {
	path := strings.TrimPrefix(n.GetPath(), "$.")
	line := 0
	if tk := n.GetToken(); tk != nil && tk.Position != nil {
		line = tk.Position.Line
	}
	s, ok := n.(*ast.StringNode)
	var text string
	switch {
	case ok:
		text = s.Value
	case n.Type() == ast.LiteralType || n.Type() == ast.MappingType || n.Type() == ast.SequenceType || n.Type() == ast.NullType:
		return fmt.Errorf("%s (line %d): want an address or CIDR string, got a %s", path, line, n.Type())
	default:
		text = n.String()
	}
	p, err := parseCIDR(text)
	if err != nil {
		return fmt.Errorf("%s (line %d): %w", path, line, err)
	}
	*c = CIDR(p)
	return nil
}

func parseCIDR(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q (want an address such as 10.0.0.1 or a prefix such as 10.0.0.0/8)", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// setCIDRs sets a []CIDR from the comma-separated parts of an environment
// override.
func setCIDRs(v reflect.Value, parts []string) error {
	out := make([]CIDR, 0, len(parts))
	for _, s := range parts {
		p, err := parseCIDR(s)
		if err != nil {
			return err
		}
		out = append(out, CIDR(p))
	}
	v.Set(reflect.ValueOf(out))
	return nil
}

// Prefixes returns the trusted proxies as netip prefixes.
func (l Listen) TrustedPrefixes() []netip.Prefix {
	out := make([]netip.Prefix, len(l.TrustedProxies))
	for i, c := range l.TrustedProxies {
		out[i] = c.Prefix()
	}
	return out
}
