package auth

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// ExtractToken returns the token of a handshake and whether there was one,
// taken from, in order: the Authorization header with the Bearer scheme
// (case-insensitive), the query parameter cfg.QueryParam (URL-decoded; when
// set), and the cookie named cfg.Cookie (when set). The first source holding
// a non-empty value wins even when that value is garbage, so that a bad
// token is refused rather than treated as absent. h is expected in canonical
// form (as net/http and the gateway build it). It does not validate the
// token; Verify does.
func ExtractToken(h http.Header, rawQuery string, cfg config.JWT) (string, bool) {
	for _, v := range h["Authorization"] {
		if tok, ok := bearer(v); ok {
			return tok, true
		}
	}
	if cfg.QueryParam != "" && rawQuery != "" {
		if tok, ok := queryValue(rawQuery, cfg.QueryParam); ok {
			return tok, true
		}
	}
	if cfg.Cookie != "" {
		for _, line := range h["Cookie"] {
			if tok, ok := cookieValue(line, cfg.Cookie); ok {
				return tok, true
			}
		}
	}
	return "", false
}

// bearer returns the credentials of an Authorization value with the Bearer
// scheme.
func bearer(v string) (string, bool) {
	const scheme = "bearer"
	v = strings.TrimLeft(v, " \t")
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", false
	}
	if c := v[len(scheme)]; c != ' ' && c != '\t' {
		return "", false
	}
	tok := strings.Trim(v[len(scheme):], " \t")
	return tok, tok != ""
}

// queryValue returns the first non-empty value of the query parameter name.
func queryValue(rawQuery, name string) (string, bool) {
	for q := rawQuery; q != ""; {
		var part string
		part, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(part, "=")
		if k != name {
			if !strings.ContainsAny(k, "%+") {
				continue
			}
			uk, err := url.QueryUnescape(k)
			if err != nil || uk != name {
				continue
			}
		}
		if strings.ContainsAny(v, "%+") {
			uv, err := url.QueryUnescape(v)
			if err != nil {
				continue
			}
			v = uv
		}
		if v = strings.TrimSpace(v); v != "" {
			return v, true
		}
	}
	return "", false
}

// cookieValue returns the value of the cookie name in one Cookie header line.
func cookieValue(line, name string) (string, bool) {
	for line != "" {
		var part string
		part, line, _ = strings.Cut(line, ";")
		part = strings.TrimSpace(part)
		k, v, ok := strings.Cut(part, "=")
		if !ok || strings.TrimSpace(k) != name {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = strings.TrimSpace(v[1 : len(v)-1])
		}
		if v != "" {
			return v, true
		}
	}
	return "", false
}

// Mint signs an HS256 token for sub with the given secret, valid for ttl
// from now (ttl <= 0: no exp), with iss and aud when non-empty. It is what
// the token subcommand and the tests use.
func Mint(secret []byte, sub string, ttl time.Duration, issuer, audience string) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("mint token: empty secret")
	}
	if sub == "" {
		return "", errors.New("mint token: empty subject")
	}
	now := time.Now()
	claims := jwt.RegisteredClaims{
		Subject:  sub,
		Issuer:   issuer,
		IssuedAt: jwt.NewNumericDate(now),
	}
	if ttl > 0 {
		claims.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
	}
	if audience != "" {
		claims.Audience = jwt.ClaimStrings{audience}
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return s, nil
}
