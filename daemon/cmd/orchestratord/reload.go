package main

import (
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"strings"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/redact"
)

// A reload compares the running config with the new one field by field,
// by reflection over the config tree, so that no key can be forgotten:
// each field's `reload` struct tag says whether a reload applies it
// ("live") or only a restart does ("restart"); a field without the tag
// inherits its parent's, and the root's is "restart". A field added
// without thinking about reload is therefore reported as needing a
// restart, never silently "reloaded" and ignored. Maps and lists are one
// value each: the tag of the field holding them decides for all of them.

// Reload policies, the values of the `reload` struct tag.
const (
	reloadLive    = "live"
	reloadRestart = "restart"
)

// change is one changed key.
type change struct {
	Path    string // YAML key path: ws.heartbeat, routes.chat.timeout
	Old     string // formatted, secrets redacted; "" when added
	New     string // formatted, secrets redacted; "" when removed
	Restart bool   // only a restart applies it
}

// String is "path: old -> new", "path: added" or "path: removed".
func (c change) String() string {
	switch {
	case c.Old == "":
		return c.Path + ": added"
	case c.New == "":
		return c.Path + ": removed"
	}
	return c.Path + ": " + c.Old + " -> " + c.New
}

// diffConfig lists every key whose value differs between old and next,
// sorted by path.
func diffConfig(old, next config.Config) []change {
	var out []change
	diffValue(reflect.ValueOf(old), reflect.ValueOf(next), "", reloadRestart, false, &out)
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// policyOf returns f's reload policy, inherited from parent when untagged.
func policyOf(f reflect.StructField, parent string) string {
	if p := f.Tag.Get("reload"); p != "" {
		return p
	}
	return parent
}

// yamlKey returns f's YAML key, "" for fields that have none (secrets
// resolved from the environment).
func yamlKey(f reflect.StructField) string {
	k := strings.Split(f.Tag.Get("yaml"), ",")[0]
	if k == "-" || !f.IsExported() {
		return ""
	}
	return k
}

var headerValueType = reflect.TypeOf(config.Header{})

func diffValue(a, b reflect.Value, path, policy string, secret bool, out *[]change) {
	restart := policy != reloadLive
	switch a.Kind() {
	case reflect.Struct:
		t := a.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			k := yamlKey(f)
			if k == "" {
				continue
			}
			// A header's literal value may be a credential (X-Api-Key).
			isSecret := secret || (t == headerValueType && f.Name == "Value")
			diffValue(a.Field(i), b.Field(i), joinPath(path, k), policyOf(f, policy), isSecret, out)
		}
		return
	case reflect.Map:
		keys := map[string]reflect.Value{}
		for _, k := range a.MapKeys() {
			keys[k.String()] = k
		}
		for _, k := range b.MapKeys() {
			keys[k.String()] = k
		}
		for name, k := range keys {
			av, bv := a.MapIndex(k), b.MapIndex(k)
			p := joinPath(path, name)
			switch {
			case !av.IsValid():
				*out = append(*out, change{Path: p, New: "(added)", Restart: restart})
			case !bv.IsValid():
				*out = append(*out, change{Path: p, Old: "(removed)", Restart: restart})
			default:
				diffValue(av, bv, p, policy, secret, out)
			}
		}
		return
	}
	if reflect.DeepEqual(a.Interface(), b.Interface()) || (a.Kind() == reflect.Slice && a.Len() == 0 && b.Len() == 0) {
		return // nil and [] are the same list
	}
	*out = append(*out, change{Path: path, Old: formatValue(a, secret), New: formatValue(b, secret), Restart: restart})
}

var durationType = reflect.TypeOf(config.Duration(0))

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// formatValue writes a leaf for the log: strings quoted, lists in
// brackets, durations as Go durations, secrets masked (URL userinfo and
// query values by redact.String, literal header values whole).
func formatValue(v reflect.Value, secret bool) string {
	if secret {
		if v.Kind() == reflect.String && v.String() == "" {
			return `""`
		}
		return "(redacted)"
	}
	switch {
	case v.Type() == durationType:
		return v.Interface().(config.Duration).String()
	case v.Kind() == reflect.String:
		return fmt.Sprintf("%q", redact.String(v.String()))
	case v.Kind() == reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = formatValue(v.Index(i), false)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return fmt.Sprint(v.Interface())
}

// keepRestartOnly returns next with every restart-only key set back to its
// running value in cur: what a reload applies.
func keepRestartOnly(cur, next config.Config) config.Config {
	out := next
	keepValue(reflect.ValueOf(cur), reflect.ValueOf(&out).Elem(), reloadRestart)
	return out
}

func keepValue(cur, next reflect.Value, policy string) {
	if next.Kind() == reflect.Struct {
		t := next.Type()
		for i := 0; i < t.NumField(); i++ {
			keepValue(cur.Field(i), next.Field(i), policyOf(t.Field(i), policy))
		}
		return
	}
	if policy != reloadLive {
		next.Set(cur)
	}
}

// logReload logs what a reload changed: the keys applied, and the keys
// that need a restart (their running values stay).
func logReload(log *slog.Logger, changes []change) {
	var applied, restart []string
	for _, c := range changes {
		if c.Restart {
			restart = append(restart, c.String())
		} else {
			applied = append(applied, c.String())
		}
	}
	if len(applied) == 0 {
		applied = []string{}
	}
	log.Info("configuration changes applied", "changed", applied)
	if len(restart) > 0 {
		log.Warn("configuration changes need a restart: the running values stay until then", "restart_required", restart)
	}
}
