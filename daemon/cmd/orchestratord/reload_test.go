package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
)

func reloadBase(t *testing.T) config.Config {
	t.Helper()
	c, err := config.Parse([]byte(`
node: edge-1
auth: {anonymous: true}
backends:
  a: {kind: echo}
  b:
    kind: http
    endpoints: ["http://user:hunter2@127.0.0.1:7001/q?api_key=sekrit"]
    headers: {X-Api-Key: literal-secret, X-Env: {env: SQL_KEY}}
routes:
  work: {backend: a, timeout: 5s}
limits: {session_rate: 10000}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDiffConfig(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *config.Config)
		want []string // change.String(), "!" prefix: restart-only
	}{
		{"nothing", func(c *config.Config) {}, nil},
		{"route backend", func(c *config.Config) {
			r := c.Routes["work"]
			r.Backend = "b"
			c.Routes["work"] = r
		}, []string{`routes.work.backend: "a" -> "b"`}},
		{"rate and duration", func(c *config.Config) {
			c.Limits.SessionRate = 1
			c.Drain.Timeout = config.Duration(10 * time.Second)
		}, []string{`drain.timeout: 30s -> 10s`, `limits.session_rate: 10000 -> 1`}},
		{"route added, backend removed", func(c *config.Config) {
			c.Routes["new"] = config.Route{Backend: "a"}
			delete(c.Backends, "b")
		}, []string{`backends.b: removed`, `routes.new: added`}},
		{"origins list", func(c *config.Config) { c.WS.AllowedOrigins = []string{"https://a.example", "https://b.example"} },
			[]string{`ws.allowed_origins: [] -> ["https://a.example", "https://b.example"]`}},
		{"restart-only keys", func(c *config.Config) {
			c.Listen.Client = ":9999"
			c.WS.Heartbeat = config.Duration(10 * time.Second)
			c.Sessions.Store = "redis"
			c.Node = "edge-2"
			c.Drain.ReconnectAfter = config.Duration(3 * time.Second)
			c.Auth.JWT.Leeway = config.Duration(time.Second)
		}, []string{`!auth.jwt.leeway: 30s -> 1s`, `!drain.reconnect_after: 1s -> 3s`, `!listen.client: ":8080" -> ":9999"`,
			`!node: "edge-1" -> "edge-2"`, `!sessions.store: "memory" -> "redis"`, `!ws.heartbeat: 25s -> 10s`}},
		{"secrets redacted", func(c *config.Config) {
			b := c.Backends["b"]
			b.Endpoints = []string{"http://user:hunter3@127.0.0.1:7001/q?api_key=other"}
			b.Headers = map[string]config.Header{"X-Api-Key": {Value: "new-secret"}, "X-Env": {Env: "SQL_KEY2"}}
			c.Backends["b"] = b
		}, []string{
			`backends.b.endpoints: ["http://xxxxx@127.0.0.1:7001/q?api_key=xxxxx"] -> ["http://xxxxx@127.0.0.1:7001/q?api_key=xxxxx"]`,
			`backends.b.headers.X-Api-Key.value: (redacted) -> (redacted)`,
			`backends.b.headers.X-Env.env: "SQL_KEY" -> "SQL_KEY2"`,
		}},
		{"env secret is no key", func(c *config.Config) { c.Auth.JWT.Secret = "changed" }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			old := reloadBase(t)
			next := reloadBase(t)
			tc.edit(&next)
			var got []string
			for _, c := range diffConfig(old, next) {
				s := c.String()
				if c.Restart {
					s = "!" + s
				}
				got = append(got, s)
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			for _, s := range got {
				for _, secret := range []string{"hunter", "sekrit", "other", "literal-secret", "new-secret"} {
					if strings.Contains(s, secret) {
						t.Errorf("diff line %q shows the secret %q", s, secret)
					}
				}
			}
		})
	}
}

// leaves calls fn with the YAML path of every leaf field of t (maps and
// lists are leaves), with the value to set in a Config to change it.
func leaves(t reflect.Type, path string, fn func(path string, index []int)) {
	var walk func(t reflect.Type, path string, index []int)
	walk = func(t reflect.Type, path string, index []int) {
		if t.Kind() != reflect.Struct {
			fn(path, index)
			return
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			k := yamlKey(f)
			if k == "" {
				continue
			}
			walk(f.Type, joinPath(path, k), append(append([]int(nil), index...), i))
		}
	}
	walk(t, path, nil)
}

// differentValue returns a value of v's type that differs from v.
func differentValue(t *testing.T, v reflect.Value) reflect.Value {
	t.Helper()
	n := reflect.New(v.Type()).Elem()
	switch v.Kind() {
	case reflect.String:
		n.SetString(v.String() + "x")
	case reflect.Bool:
		n.SetBool(!v.Bool())
	case reflect.Int, reflect.Int64:
		n.SetInt(v.Int() + 7)
	case reflect.Float64:
		n.SetFloat(v.Float() + 0.5)
	case reflect.Slice:
		n.Set(reflect.Append(reflect.MakeSlice(v.Type(), 0, 1), reflect.New(v.Type().Elem()).Elem()))
		if v.Len() == 1 {
			n.Set(reflect.MakeSlice(v.Type(), 0, 0))
		}
	case reflect.Map:
		n.Set(reflect.MakeMap(v.Type()))
		n.SetMapIndex(reflect.ValueOf("zz-new"), reflect.New(v.Type().Elem()).Elem())
	default:
		t.Fatalf("a config field of kind %s: teach this test (and diffConfig) about it", v.Kind())
	}
	return n
}

// TestEveryKeyDiffedWithAPolicy: changing any key of the config (any one,
// including keys added later) shows in the diff under its path, and the
// keys a reload applies are exactly those node.apply applies. A new key is
// restart-only until it is tagged reload:"live" here and applied there.
func TestEveryKeyDiffedWithAPolicy(t *testing.T) {
	live := map[string]bool{ // path or path prefix (ending in ".") -> applied by node.apply
		"limits.":            true, // gate.Update and the dispatch table
		"backends":           true, // backends.New
		"routes":             true, // dispatch.NewTable
		"ws.allowed_origins": true, // gate.Update
		"drain.lb_grace":     true, // CurrentTiming
		"drain.timeout":      true, // CurrentTiming
		"log.level":          true, // the level var
		"log.requests":       true, // router.SetAccessLog
		"readiness.":         true, // backendsReady reads the config in force
		"runtime.gc_percent": true, // gcTuner.apply
	}
	isLive := func(path string) bool {
		for p := range live {
			if path == p || (strings.HasSuffix(p, ".") && strings.HasPrefix(path, p)) {
				return true
			}
		}
		return false
	}
	base := reloadBase(t)
	n := 0
	leaves(reflect.TypeOf(config.Config{}), "", func(path string, index []int) {
		n++
		next := reloadBase(t)
		f := reflect.ValueOf(&next).Elem().FieldByIndex(index)
		f.Set(differentValue(t, f))
		changes := diffConfig(base, next)
		if len(changes) == 0 {
			t.Errorf("%s: a change is not in the diff", path)
			return
		}
		for _, c := range changes {
			if c.Path != path && !strings.HasPrefix(c.Path, path+".") {
				t.Errorf("%s changed, the diff names %s", path, c.Path)
			}
			if c.Restart == isLive(path) {
				t.Errorf("%s: restart-only = %v, want %v (tag it reload:\"live\" only if node.apply applies it)", path, c.Restart, !isLive(path))
			}
		}
		// What a reload keeps: the running value of restart-only keys.
		kept := keepRestartOnly(base, next)
		got := reflect.ValueOf(kept).FieldByIndex(index).Interface()
		want := reflect.ValueOf(next).FieldByIndex(index).Interface()
		if !isLive(path) {
			want = reflect.ValueOf(base).FieldByIndex(index).Interface()
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: after keepRestartOnly %v, want %v", path, got, want)
		}
	})
	if n < 40 {
		t.Errorf("walked %d keys; the walk is broken", n)
	}
}

func TestLogReload(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	old := reloadBase(t)
	next := reloadBase(t)
	next.Listen.Client = ":9999"
	next.Limits.SessionBurst = 5
	logReload(log, diffConfig(old, next))
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), buf.String())
	}
	if got := lines[0]["changed"]; !reflect.DeepEqual(got, []any{"limits.session_burst: 100 -> 5"}) || lines[0]["level"] != "INFO" {
		t.Errorf("first line = %v", lines[0])
	}
	if got := lines[1]["restart_required"]; !reflect.DeepEqual(got, []any{`listen.client: ":8080" -> ":9999"`}) || lines[1]["level"] != "WARN" {
		t.Errorf("second line = %v", lines[1])
	}
}
