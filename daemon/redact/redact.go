package redact

import "strings"

// Mask replaces every secret String hides.
const Mask = "xxxxx"

// String returns s with every URL in it redacted: whatever follows "://"
// up to the end of the URL has its userinfo (user and password, before the
// host's '@') replaced by Mask, every query value replaced by Mask (keys
// are kept; an item without '=' is masked whole) and a fragment replaced
// by Mask. Scheme, host, port and path are kept, and so is the text around
// the URLs, so s may be a bare URL, a comma-joined list of them (NATS) or
// an error message quoting one.
//
// A URL ends at white space, a quote, '<', '>', '\' or a '`', and at a
// comma that is followed by another URL (a joined list); a comma inside a
// query value is part of the value and masked with it. String is
// idempotent and does not allocate when s has no "://".
func String(s string) string {
	i := strings.Index(s, "://")
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i >= 0 {
		start := i + 3
		b.WriteString(s[:start])
		s = s[start:]
		n := urlEnd(s)
		writeURL(&b, s[:n])
		s = s[n:]
		i = strings.Index(s, "://")
	}
	b.WriteString(s)
	return b.String()
}

// urlEnd returns the length of the URL text (after "://") at the start of
// s.
func urlEnd(s string) int {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\n', '\r', '\v', '\f', '"', '\'', '<', '>', '\\', '`':
			return i
		case ',':
			// A comma ends the URL when another URL follows before the
			// next white space (nats://a,nats://b).
			rest := s[i+1:]
			if j := strings.Index(rest, "://"); j >= 0 && !hasBreak(rest[:j]) {
				return i
			}
		}
	}
	return len(s)
}

// hasBreak reports whether s holds a byte that ends a URL unconditionally.
func hasBreak(s string) bool {
	return strings.ContainsAny(s, " \t\n\r\v\f\"'<>\\`")
}

// writeURL writes u (the text after "://") with its secrets masked.
func writeURL(b *strings.Builder, u string) {
	auth := len(u)
	if j := strings.IndexAny(u, "/?#"); j >= 0 {
		auth = j
	}
	host := u[:auth]
	if at := strings.LastIndexByte(host, '@'); at >= 0 {
		b.WriteString(Mask)
		host = host[at:]
	}
	b.WriteString(host)
	rest := u[auth:]
	frag := ""
	if j := strings.IndexByte(rest, '#'); j >= 0 {
		rest, frag = rest[:j], rest[j:]
	}
	path, query, hasQuery := strings.Cut(rest, "?")
	b.WriteString(path)
	if hasQuery {
		b.WriteByte('?')
		writeQuery(b, query)
	}
	if frag != "" {
		b.WriteByte('#')
		if len(frag) > 1 {
			b.WriteString(Mask)
		}
	}
}

// writeQuery writes q with each value masked: k=v becomes k=xxxxx, a bare
// item becomes xxxxx, empty items stay empty. Items are separated by '&'
// or ';', kept as they were.
func writeQuery(b *strings.Builder, q string) {
	for {
		j := strings.IndexAny(q, "&;")
		item := q
		if j >= 0 {
			item = q[:j]
		}
		if k, _, ok := strings.Cut(item, "="); ok {
			b.WriteString(k)
			b.WriteByte('=')
			b.WriteString(Mask)
		} else if item != "" {
			b.WriteString(Mask)
		}
		if j < 0 {
			return
		}
		b.WriteByte(q[j])
		q = q[j+1:]
	}
}
