package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// redisURLParams are the query parameters sessions.redis_url understands
// (rueidis's URL forms); anything else is a typo the user should hear of.
var redisURLParams = map[string]func(string) error{
	"addr":          checkHostPort,
	"master_set":    func(v string) error { return nonEmpty(v) },
	"db":            checkDB,
	"dial_timeout":  checkDuration,
	"write_timeout": checkDuration,
	"skip_verify":   func(v string) error { return checkBool(v, true) },
	"protocol": func(v string) error {
		if v != "2" && v != "3" {
			return fmt.Errorf("want 2 or 3, got %q", v)
		}
		return nil
	},
	"client_cache": func(v string) error { return checkBool(v, false) },
	"max_retries":  checkDB,
	"client_name":  func(string) error { return nil },
}

// CheckRedisURL validates sessions.redis_url: redis:// or rediss://, a
// host, optional /db, and only the known query parameters (repeated
// addr=host:port for a Cluster's seeds, master_set=NAME for Sentinel).
func CheckRedisURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a URL: %w", err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return fmt.Errorf("must be a redis:// or rediss:// URL, got %q", s)
	}
	if u.Host == "" {
		return fmt.Errorf("no host in %q", s)
	}
	if u.Port() != "" || strings.Contains(u.Host, ":") {
		if err := checkHostPort(u.Host); err != nil {
			return err
		}
	}
	if p := strings.TrimPrefix(u.Path, "/"); p != "" {
		if err := checkDB(p); err != nil {
			return fmt.Errorf("database %q: %w", p, err)
		}
	}
	if u.Fragment != "" {
		return fmt.Errorf("unexpected #%s", u.Fragment)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return fmt.Errorf("query: %w", err)
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		check, ok := redisURLParams[k]
		if !ok {
			return fmt.Errorf("unknown parameter %q (known: addr, master_set, db, dial_timeout, write_timeout, skip_verify, protocol, client_cache, max_retries, client_name)", k)
		}
		if k != "addr" && len(q[k]) > 1 {
			return fmt.Errorf("parameter %q given %d times", k, len(q[k]))
		}
		for _, v := range q[k] {
			if err := check(v); err != nil {
				return fmt.Errorf("parameter %s: %w", k, err)
			}
		}
	}
	return nil
}

func checkHostPort(v string) error {
	h, p, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("address %q: %w", v, err)
	}
	if h == "" {
		return fmt.Errorf("address %q: no host", v)
	}
	if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("address %q: bad port", v)
	}
	return nil
}

func checkDB(v string) error {
	if n, err := strconv.Atoi(v); err != nil || n < 0 {
		return fmt.Errorf("want a number >= 0, got %q", v)
	}
	return nil
}

func checkDuration(v string) error {
	if d, err := time.ParseDuration(v); err != nil || d < 0 {
		return fmt.Errorf("want a duration, got %q", v)
	}
	return nil
}

func checkBool(v string, emptyOK bool) error {
	if v == "" && emptyOK {
		return nil
	}
	if _, err := strconv.ParseBool(v); err != nil {
		return fmt.Errorf("want true or false, got %q", v)
	}
	return nil
}

func nonEmpty(v string) error {
	if v == "" {
		return errors.New("empty")
	}
	return nil
}

// checkNatsURL validates one of sessions.nats_urls.
func checkNatsURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a URL: %w", err)
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return fmt.Errorf("must be a nats:// (or tls://, ws://, wss://) URL, got %q", s)
	}
	if u.Host == "" {
		return fmt.Errorf("no host in %q", s)
	}
	if u.Port() != "" {
		return checkHostPort(u.Host)
	}
	return nil
}
