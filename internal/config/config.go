// Package config loads scimflow's YAML configuration: ${ENV} expansion, strict decoding (every
// unknown key is an error with its line and the closest known key, not a silent typo) and
// SCIMFLOW_<SECTION>_<KEY> environment overrides.
//
// The shape itself lives with the wiring (app) and each service's Config; this package only
// knows how to fill any struct whose fields carry json tags.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

// Duration is a time.Duration written as a Go duration string ("10s", "24h") in YAML and JSON.
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts "10s"-style strings (and bare integers as seconds).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("duration: want a string like \"10s\", got %s", b)
		}
		*d = Duration(time.Duration(n) * time.Second)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// Expand replaces ${NAME} (and ${NAME:-default}) with the environment value. A bare $ is left alone,
// so secrets containing $ survive.
func Expand(s string, lookup func(string) (string, bool)) string {
	return envRef.ReplaceAllStringFunc(s, func(m string) string {
		sub := envRef.FindStringSubmatch(m)
		if v, ok := lookup(sub[1]); ok && v != "" {
			return v
		}
		return sub[3]
	})
}

// Load reads the YAML file at path into out (a pointer to a struct pre-filled with defaults), then
// applies environment overrides. An empty path skips the file.
func Load(path string, out any, lookup func(string) (string, bool)) error {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		b = []byte(Expand(string(b), lookup))
		if errs := UnknownKeys(b, out); len(errs) > 0 {
			msgs := make([]error, len(errs))
			for i, e := range errs {
				msgs[i] = fmt.Errorf("%s:%w", path, e)
			}
			return errors.Join(msgs...)
		}
		if err := Decode(b, out); err != nil {
			return fmt.Errorf("config %s: %w", path, err)
		}
	}
	return ApplyEnv(out, "SCIMFLOW", lookup)
}

// Decode decodes YAML strictly into out.
func Decode(b []byte, out any) error {
	return yaml.UnmarshalStrict(b, out)
}

// ApplyEnv sets fields from PREFIX_<KEY> for top-level scalars and PREFIX_<SECTION>_<KEY> for fields
// of nested structs, keys being the json tags upper-cased. Slices of strings take comma-separated
// values. Every unparsable value is reported.
func ApplyEnv(out any, prefix string, lookup func(string) (string, bool)) error {
	v := reflect.ValueOf(out)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return errors.New("config: ApplyEnv needs a pointer to a struct")
	}
	var errs []error
	walk(v.Elem(), prefix, lookup, &errs, 0)
	return errors.Join(errs...)
}

func walk(v reflect.Value, prefix string, lookup func(string) (string, bool), errs *[]error, depth int) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := strings.Split(f.Tag.Get("json"), ",")[0]
		if tag == "-" {
			continue
		}
		if tag == "" {
			tag = f.Name
		}
		name := prefix + "_" + strings.ToUpper(tag)
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && f.Type != reflect.TypeOf(Duration(0)) && depth == 0 {
			walk(fv, name, lookup, errs, depth+1)
			continue
		}
		s, ok := lookup(name)
		if !ok {
			continue
		}
		if err := setScalar(fv, s); err != nil {
			*errs = append(*errs, fmt.Errorf("%s: %w", name, err))
		}
	}
}

func setScalar(fv reflect.Value, s string) error {
	if fv.Type() == reflect.TypeOf(Duration(0)) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		fv.SetInt(int64(d))
		return nil
	}
	switch fv.Kind() {
	case reflect.String:
		fv.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		fv.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		fv.SetInt(n)
	case reflect.Float64:
		n, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return err
		}
		fv.SetFloat(n)
	case reflect.Slice:
		if fv.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("cannot set %s from the environment", fv.Type())
		}
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		fv.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("cannot set %s from the environment", fv.Type())
	}
	return nil
}

// KeyError is an unknown key of a config file.
type KeyError struct {
	Line    int    // 1-based line of the key
	Key     string // dotted path, e.g. auth.externalurl
	Closest string // the known key it most resembles, "" if none is close
}

// Error reads "12: unknown key auth.externalurl (did you mean external_url?)"; Load prefixes the
// file name, giving the file:line form editors jump to.
func (e *KeyError) Error() string {
	s := fmt.Sprintf("%d: unknown key %s", e.Line, e.Key)
	if e.Closest != "" {
		s += fmt.Sprintf(" (did you mean %s?)", e.Closest)
	}
	return s
}

// UnknownKeys returns every key of the YAML document b that no field of out (a pointer to a
// struct with json tags) takes, in document order. The strict decoder stops at the first; a
// person fixing a config wants them all. A document that does not parse returns nothing here:
// Decode reports that.
func UnknownKeys(b []byte, out any) []*KeyError {
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(b, &doc); err != nil || len(doc.Content) == 0 {
		return nil
	}
	var errs []*KeyError
	unknownIn(doc.Content[0], reflect.TypeOf(out), "", &errs)
	return errs
}

func unknownIn(n *yamlv3.Node, t reflect.Type, path string, errs *[]*KeyError) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yamlv3.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		if n.Kind == yamlv3.SequenceNode && t != reflect.TypeOf(json.RawMessage(nil)) {
			for _, c := range n.Content {
				unknownIn(c, t.Elem(), path+"[]", errs)
			}
		}
		return
	case reflect.Map:
		if n.Kind == yamlv3.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				unknownIn(n.Content[i+1], t.Elem(), path+"."+n.Content[i].Value, errs)
			}
		}
		return
	case reflect.Struct:
	default:
		return
	}
	if n.Kind != yamlv3.MappingNode || t == reflect.TypeOf(Duration(0)) {
		return
	}
	fields := fieldsOf(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		key := k.Value
		full := strings.TrimPrefix(path+"."+key, ".")
		if k.Tag == "!!merge" {
			continue
		}
		ft, ok := fields[key]
		if !ok {
			names := make([]string, 0, len(fields))
			for name := range fields {
				names = append(names, name)
			}
			*errs = append(*errs, &KeyError{Line: k.Line, Key: full, Closest: closest(key, names)})
			continue
		}
		unknownIn(n.Content[i+1], ft, full, errs)
	}
}

// fieldsOf maps the json names of t's exported fields to their types.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("json"), ",")[0]
		if !f.IsExported() || tag == "-" {
			continue
		}
		if tag == "" {
			tag = f.Name
		}
		out[tag] = f.Type
	}
	return out
}

// UnknownEnv checks the environment names (as in os.Environ, "NAME=value" or "NAME") against out:
// a name PREFIX_<SECTION>_<KEY> whose section is a section of out but whose key is not one of that
// section's keys is an error naming the closest key — SCIMFLOW_AUTH_EXTERNALURL would otherwise
// be ignored while auth runs on its default. Every other PREFIX_ name (a test knob, a compose
// variable such as SCIMFLOW_PORT_AUTH) is left alone, since nothing claims it.
func UnknownEnv(out any, prefix string, environ []string) error {
	t := reflect.TypeOf(out)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	type section struct {
		name string
		keys []string
	}
	var sections []section
	top := fieldsOf(t)
	for tag, ft := range top {
		if ft.Kind() != reflect.Struct || ft == reflect.TypeOf(Duration(0)) {
			continue
		}
		var keys []string
		for k := range fieldsOf(ft) {
			keys = append(keys, strings.ToUpper(k))
		}
		sections = append(sections, section{name: prefix + "_" + strings.ToUpper(tag) + "_", keys: keys})
	}
	var errs []error
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		for _, s := range sections {
			key, ok := strings.CutPrefix(name, s.name)
			if !ok {
				continue
			}
			known := false
			for _, k := range s.keys {
				known = known || k == key
			}
			if known {
				break
			}
			msg := fmt.Sprintf("%s: %s has no key %s", name, strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(s.name, prefix+"_"), "_")), key)
			if c := closest(key, s.keys); c != "" {
				msg += fmt.Sprintf(" (did you mean %s%s?)", s.name, c)
			}
			errs = append(errs, errors.New(msg))
			break
		}
	}
	return errors.Join(errs...)
}

// closest returns the candidate nearest to s: equal but for case, '_' and '-', or within a small
// edit distance; "" if none is near enough to be a likely typo.
func closest(s string, candidates []string) string {
	norm := func(x string) string {
		return strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(x))
	}
	ns := norm(s)
	best, bestD := "", 0
	for _, c := range candidates {
		d := editDistance(ns, norm(c))
		if d == 0 {
			return c
		}
		if best == "" || d < bestD || (d == bestD && c < best) {
			best, bestD = c, d
		}
	}
	if best == "" || bestD > max(2, len(ns)/3) {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
