package config

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// checkYAML walks the YAML syntax tree beside the Config type, before
// anything is decoded, and reports every mistake at once, each naming the
// key path and the line: unknown keys, wrong types ("want an integer"),
// durations that are not Go duration strings, tags. It never names a Go
// type. lines receives the line of every key path it saw ("ws.heartbeat",
// "backends.b.endpoints[0]"), so that later errors (validation) can name
// the line too. empty reports a document with no content (only comments),
// which must not be decoded: that would zero every default.
func checkYAML(data []byte, lines map[string]int) (empty bool, err error) {
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return false, err
	}
	var errs []error
	empty = true
	for _, doc := range f.Docs {
		if doc == nil || doc.Body == nil {
			continue
		}
		if _, ok := doc.Body.(*ast.CommentNode); ok {
			continue
		}
		empty = false
		c := checker{lines: lines, anchors: map[string]ast.Node{}, expanding: map[string]bool{}}
		c.node(doc.Body, configType, "")
		errs = append(errs, c.errs...)
		break // the decoder reads the first document only
	}
	return empty, errors.Join(errs...)
}

var (
	configType = reflect.TypeOf(Config{})
	headerType = reflect.TypeOf(Header{})
)

type checker struct {
	lines     map[string]int
	errs      []error
	anchors   map[string]ast.Node // &name -> its value, as met in document order
	expanding map[string]bool     // aliases being checked: "&a [*a]" must not loop
	expanded  int                 // aliases checked; bounded against alias bombs
}

// maxAliasChecks bounds the aliases checkYAML follows: a real config has
// a few; nested aliases of aliases could otherwise cost exponential time.
const maxAliasChecks = 1000

// addf records a mistake at path and the line of n.
func (c *checker) addf(path string, n ast.Node, format string, a ...any) {
	if path == "" {
		path = "(top level)"
	}
	c.errs = append(c.errs, fmt.Errorf("%s: line %d: %s", path, line(n), fmt.Sprintf(format, a...)))
}

func line(n ast.Node) int {
	if n == nil || reflect.ValueOf(n).IsNil() {
		return 0
	}
	if t := n.GetToken(); t != nil && t.Position != nil {
		return t.Position.Line
	}
	return 0
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// node checks n against the Go type t at path.
func (c *checker) node(n ast.Node, t reflect.Type, path string) {
	if n == nil || reflect.ValueOf(n).IsNil() {
		return
	}
	if path != "" && c.lines != nil {
		if _, ok := c.lines[path]; !ok {
			c.lines[path] = line(n)
		}
	}
	switch v := n.(type) {
	case *ast.CommentNode:
		return
	case *ast.AnchorNode:
		if name, ok := scalar(v.Name); ok {
			c.anchors[name] = v.Value
		}
		c.node(v.Value, t, path)
		return
	case *ast.AliasNode:
		// The anchored value must fit here too: check it again at this
		// path (once per alias chain).
		name, _ := scalar(v.Value)
		target, ok := c.anchors[name]
		if !ok || c.expanding[name] || c.expanded >= maxAliasChecks {
			return // unknown anchors are the decoder's to report
		}
		c.expanded++
		c.expanding[name] = true
		c.node(target, t, path)
		delete(c.expanding, name)
		return
	case *ast.TagNode:
		tag := ""
		if v.Start != nil {
			tag = v.Start.Value
		}
		if !strings.HasPrefix(tag, "!!") {
			c.addf(path, n, "YAML tag %s is not supported: write the value without it", tag)
			return
		}
		c.node(v.Value, t, path)
		return
	case *ast.NullNode:
		return // an empty value keeps the default
	}

	switch {
	case t == durationType:
		c.duration(n, path)
		return
	case t == cidrType:
		s, ok := scalar(n)
		if !ok {
			c.addf(path, n, "got %s, want an address or CIDR string", describe(n))
			return
		}
		if _, err := parseCIDR(s); err != nil {
			c.addf(path, n, "%v", err)
		}
		return
	case t == headerType:
		if _, ok := scalar(n); ok {
			return
		}
		c.mapping(n, t, path)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		c.mapping(n, t, path)
	case reflect.Map:
		c.mapping(n, t, path)
	case reflect.Slice:
		seq, ok := n.(*ast.SequenceNode)
		if !ok {
			c.addf(path, n, "got %s, want a list (for example [a, b])", describe(n))
			return
		}
		for i, e := range seq.Values {
			c.node(e, t.Elem(), path+"["+strconv.Itoa(i)+"]")
		}
	case reflect.String:
		if _, ok := scalar(n); !ok {
			c.addf(path, n, "got %s, want a string", describe(n))
		}
	case reflect.Bool:
		if _, ok := n.(*ast.BoolNode); !ok {
			c.addf(path, n, "got %s, want true or false", describe(n))
		}
	case reflect.Int, reflect.Int64:
		if _, ok := n.(*ast.IntegerNode); !ok {
			c.addf(path, n, "got %s, want an integer", describe(n))
		}
	case reflect.Float64:
		switch n.(type) {
		case *ast.IntegerNode, *ast.FloatNode:
		default:
			c.addf(path, n, "got %s, want a number", describe(n))
		}
	}
}

// duration checks a Go duration string. A bare number is the common
// mistake ("heartbeat: 25"): the hint then repeats it with a unit.
func (c *checker) duration(n ast.Node, path string) {
	s, ok := scalar(n)
	if !ok {
		c.addf(path, n, "got %s, want a duration like 5s or 1m30s", describe(n))
		return
	}
	if _, err := time.ParseDuration(s); err == nil {
		return
	}
	switch n.(type) {
	case *ast.IntegerNode, *ast.FloatNode:
		c.addf(path, n, "%s has no unit: want a duration like %ss", s, s)
	default:
		c.addf(path, n, "%q is not a duration: want a duration like 5s or 1m30s", s)
	}
}

// mapping checks a mapping against a struct (known keys) or a map (any
// key, each value of the map's element type).
func (c *checker) mapping(n ast.Node, t reflect.Type, path string) {
	var kvs []*ast.MappingValueNode
	switch v := n.(type) {
	case *ast.MappingNode:
		kvs = v.Values
	case *ast.MappingValueNode:
		kvs = []*ast.MappingValueNode{v}
	default:
		want := "a mapping of keys"
		if t.Kind() == reflect.Map {
			want = "a mapping of names"
		}
		if t == headerType {
			want = "a string or {value: ...} / {env: NAME}"
		}
		c.addf(path, n, "got %s, want %s", describe(n), want)
		return
	}
	var fields map[string]reflect.Type
	if t.Kind() == reflect.Struct {
		fields = yamlFields(t)
	}
	for _, kv := range kvs {
		if kv == nil || kv.Key == nil {
			continue
		}
		if kv.Key.IsMergeKey() {
			// "<<: *anchor" or "<<: [*a, *b]": each merged value must be
			// a mapping that fits here.
			if seq, ok := kv.Value.(*ast.SequenceNode); ok {
				for _, e := range seq.Values {
					c.node(e, t, path)
				}
			} else {
				c.node(kv.Value, t, path)
			}
			continue
		}
		key, ok := scalar(kv.Key)
		if !ok {
			c.addf(path, kv.Key, "a key must be a plain name")
			continue
		}
		if t.Kind() == reflect.Map {
			c.node(kv.Value, t.Elem(), join(path, key))
			continue
		}
		ft, ok := fields[key]
		if !ok {
			c.addf(join(path, key), kv.Key, "unknown key (known keys here: %s)", knownKeys(fields))
			continue
		}
		if c.lines != nil {
			c.lines[join(path, key)] = line(kv.Key)
		}
		c.node(kv.Value, ft, join(path, key))
	}
}

// yamlFields maps a struct's YAML keys to their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := make(map[string]reflect.Type, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		m[tag] = f.Type
	}
	return m
}

func knownKeys(fields map[string]reflect.Type) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

// scalar returns the text of a scalar node.
func scalar(n ast.Node) (string, bool) {
	switch v := n.(type) {
	case *ast.StringNode:
		return v.Value, true
	case *ast.LiteralNode:
		if v.Value != nil {
			return v.Value.Value, true
		}
		return "", true
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		if tk := n.GetToken(); tk != nil {
			return tk.Value, true
		}
		return "", true
	case *ast.MappingKeyNode:
		return scalar(v.Value)
	case *ast.TagNode:
		return scalar(v.Value)
	case *ast.AnchorNode:
		return scalar(v.Value)
	}
	return "", false
}

// describe names what a node is, in YAML words.
func describe(n ast.Node) string {
	switch n.(type) {
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.AliasNode:
		return "an alias"
	}
	if s, ok := scalar(n); ok {
		if len(s) > 40 {
			s = s[:40] + "…"
		}
		return strconv.Quote(s)
	}
	return "a " + n.Type().YAMLName()
}

// withLines adds the line of its key path to each error "path: message"
// whose path was seen in the file, as "path: line N: message".
func withLines(errs []error, lines map[string]int) []error {
	out := make([]error, len(errs))
	for i, err := range errs {
		out[i] = err
		path, msg, ok := strings.Cut(err.Error(), ": ")
		if !ok {
			continue
		}
		if n, ok := lines[path]; ok && n > 0 {
			out[i] = &lineError{msg: fmt.Sprintf("%s: line %d: %s", path, n, msg), err: err}
		}
	}
	return out
}

// lineError is a validation error with the line of its key added; it
// unwraps to the original.
type lineError struct {
	msg string
	err error
}

func (e *lineError) Error() string { return e.msg }
func (e *lineError) Unwrap() error { return e.err }
