package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
)

//go:embed demo.yaml
var demoYAML []byte

// DemoYAML returns the embedded demo configuration (memory store, echo
// route, anonymous auth) that `make run` serves.
func DemoYAML() []byte { return bytes.Clone(demoYAML) }

//go:embed starter.yaml
var starterYAML []byte

// StarterYAML returns the commented starter configuration that the
// default-config subcommand prints: every key with its default, an echo
// route, HS256 authentication.
func StarterYAML() []byte { return bytes.Clone(starterYAML) }

// EnvPrefix starts every environment override: ORCH_WS_MAX_MESSAGE_BYTES
// overrides ws.max_message_bytes, ORCH_ROUTES_CHAT_TIMEOUT overrides
// routes.chat.timeout. Lists are comma-separated.
const EnvPrefix = "ORCH_"

// Load reads the file at path (or the embedded demo config when path is
// "demo"), applies environment overrides from env and validates the result.
// env is usually os.Environ(); LookupEnv resolves *_env secrets.
func Load(path string, env []string) (Config, error) {
	var data []byte
	if path == "demo" {
		data = DemoYAML()
	} else {
		b, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("read config: %w", err)
		}
		data = b
	}
	return Parse(data, env)
}

// Parse decodes YAML (strictly: an unknown key is an error naming the key
// and its line), fills defaults, applies environment overrides and
// validates.
func Parse(data []byte, env []string) (Config, error) {
	c := Default()
	lines := make(map[string]int)
	if len(bytes.TrimSpace(data)) > 0 {
		empty, err := checkYAML(data, lines)
		if err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
		if !empty {
			if err := decodeYAML(data, &c); err != nil {
				return Config{}, err
			}
		}
	}
	envMap := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			envMap[k] = v
		}
	}
	if err := applyEnv(&c, envMap); err != nil {
		return Config{}, err
	}
	c.fill(envMap)
	if errs := c.problems(); len(errs) > 0 {
		return Config{}, errors.Join(withLines(errs, lines)...)
	}
	return c, nil
}

// decodeYAML decodes data strictly into c. The YAML library panics on some
// malformed input (a tag where a list is expected); that becomes an error
// too, so a bad file never takes the process down.
func decodeYAML(data []byte, c *Config) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("config: the YAML could not be decoded (%v): check tags (!...) and that each key has the type the documentation gives", r)
		}
	}()
	if err := yaml.UnmarshalWithOptions(data, c, yaml.Strict()); err != nil {
		return fmt.Errorf("config: %s", yaml.FormatError(err, false, true))
	}
	return nil
}

// fill applies the defaults that depend on other keys or on the
// environment, and resolves secrets named by *_env keys.
func (c *Config) fill(env map[string]string) {
	if c.Node == "" {
		if h, err := os.Hostname(); err == nil {
			c.Node = h
		} else {
			c.Node = "orchestratord"
		}
	}
	for name, b := range c.Backends {
		c.Backends[name] = backendDefaults(b)
	}
	for name, r := range c.Routes {
		c.Routes[name] = routeDefaults(r)
	}
	if c.Auth.JWT.SecretEnv != "" {
		c.Auth.JWT.Secret = env[c.Auth.JWT.SecretEnv]
	}
	if c.Sessions.RedisUsernameEnv != "" {
		c.Sessions.RedisUsername = env[c.Sessions.RedisUsernameEnv]
	}
	if c.Sessions.RedisPasswordEnv != "" {
		c.Sessions.RedisPassword = env[c.Sessions.RedisPasswordEnv]
	}
	if c.Sessions.SentinelUsernameEnv != "" {
		c.Sessions.SentinelUsername = env[c.Sessions.SentinelUsernameEnv]
	}
	if c.Sessions.SentinelPasswordEnv != "" {
		c.Sessions.SentinelPassword = env[c.Sessions.SentinelPasswordEnv]
	}
	if c.Admin.PasswordEnv != "" {
		c.Admin.Password = env[c.Admin.PasswordEnv]
	}
	if c.Limits.HandshakeBurst == 0 && c.Limits.HandshakeRate > 0 {
		c.Limits.HandshakeBurst = int(2*c.Limits.HandshakeRate) + 1
	}
}

// UnmarshalYAML accepts a header either as a plain string or as
// {value: ...} / {env: NAME}.
func (h *Header) UnmarshalYAML(b []byte) error {
	var s string
	if err := yaml.Unmarshal(b, &s); err == nil {
		h.Value = s
		return nil
	}
	type plain Header
	var p plain
	if err := yaml.UnmarshalWithOptions(b, &p, yaml.Strict()); err != nil {
		return err
	}
	*h = Header(p)
	return nil
}

// Resolve returns the header's value, reading Env through lookup.
func (h Header) Resolve(lookup func(string) (string, bool)) string {
	if h.Env != "" {
		if v, ok := lookup(h.Env); ok {
			return v
		}
		return ""
	}
	return h.Value
}

// applyEnv walks the config tree and overrides every leaf for which an
// ORCH_<PATH> variable is set. Map entries (backends, routes) are reached by
// their existing names.
func applyEnv(c *Config, env map[string]string) error {
	var errs []error
	walkLeaves(reflect.ValueOf(c).Elem(), nil, func(path []string, v reflect.Value) {
		name := EnvPrefix + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(strings.Join(path, "_")))
		s, ok := env[name]
		if !ok {
			return
		}
		if err := setFromString(v, s); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", name, strings.Join(path, "."), err))
		}
	})
	return errors.Join(errs...)
}

// walkLeaves calls fn for every settable leaf below v with its YAML path.
// Map values are copied out, visited and stored back.
func walkLeaves(v reflect.Value, path []string, fn func([]string, reflect.Value)) {
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(Header{}) {
			// A header is one leaf: its value.
			fn(path, v.FieldByName("Value"))
			return
		}
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			walkLeaves(v.Field(i), append(append([]string(nil), path...), tag), fn)
		}
	case reflect.Map:
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		for _, k := range keys {
			elem := reflect.New(v.Type().Elem()).Elem()
			elem.Set(v.MapIndex(k))
			walkLeaves(elem, append(append([]string(nil), path...), k.String()), fn)
			v.SetMapIndex(k, elem)
		}
	default:
		fn(path, v)
	}
}

var durationType = reflect.TypeOf(Duration(0))

func setFromString(v reflect.Value, s string) error {
	if v.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("invalid duration %q: want a duration like 5s or 1m30s", s)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("invalid boolean %q", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("invalid integer %q", s)
		}
		v.SetInt(n)
	case reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("invalid number %q", s)
		}
		v.SetFloat(f)
	case reflect.Slice:
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		if v.Type().Elem() == cidrType {
			return setCIDRs(v, parts)
		}
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("unsupported list type")
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}
