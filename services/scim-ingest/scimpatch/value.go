package scimpatch

import (
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/scimflow/scimflow/services/scim-ingest/scimfilter"
)

// normalize checks v against attr (for a multi-valued attribute: against one
// element) and returns a fresh copy in stored form: booleans from "True" and
// "False", {"value": s} for a bare string given to a complex attribute,
// sub-attribute keys in schema spelling, read-only sub-attributes of
// writable attributes dropped. Inside a complex value, a null or ""
// sub-attribute becomes a nil entry, which merge reads as "clear". parentRO
// reports that an enclosing attribute is read-only, so its read-only
// sub-attributes are kept (and any change to them is caught as a
// mutability error instead of being silently dropped).
func (a *applier) normalize(t *target, attr *Attribute, v any, parentRO bool) (any, error) {
	if v == nil {
		return nil, nil
	}
	if attr == nil {
		return deepCopy(v), nil
	}
	switch attr.Type {
	case Boolean:
		switch x := v.(type) {
		case bool:
			return x, nil
		case string:
			switch {
			case x == "":
				return "", nil
			case strings.EqualFold(x, "true"):
				return true, nil
			case strings.EqualFold(x, "false"):
				return false, nil
			}
		}
		return nil, t.fail(ScimTypeInvalidValue, "%q needs a boolean", attr.Name)
	case Integer, Decimal:
		f, ok := scimfilter.Number(v)
		if s, isString := v.(string); isString {
			if s == "" {
				return "", nil
			}
			var err error
			f, err = strconv.ParseFloat(strings.TrimSpace(s), 64)
			ok = err == nil
			v = f
		}
		if !ok || math.IsInf(f, 0) || math.IsNaN(f) || (attr.Type == Integer && f != math.Trunc(f)) {
			return nil, t.fail(ScimTypeInvalidValue, "%q needs a number", attr.Name)
		}
		return v, nil
	case Complex:
		switch x := v.(type) {
		case string:
			if x == "" {
				return "", nil
			}
			if attr.sub("value") != nil {
				return map[string]any{"value": x}, nil
			}
		case map[string]any:
			return a.normalizeObject(t, attr, x, parentRO)
		}
		return nil, t.fail(ScimTypeInvalidValue, "%q needs an object", attr.Name)
	default:
		if s, ok := v.(string); ok {
			return s, nil
		}
		return nil, t.fail(ScimTypeInvalidValue, "%q needs a string", attr.Name)
	}
}

func (a *applier) normalizeObject(t *target, attr *Attribute, x map[string]any, parentRO bool) (any, error) {
	ro := parentRO || attr.Mutability == ReadOnly
	out := make(map[string]any, len(x))
	for _, k := range sortedKeys(x) {
		sv := x[k]
		sa := attr.sub(k)
		if sa == nil {
			if a.opts.RejectUnknown {
				return nil, t.fail(ScimTypeInvalidValue, "%q has no sub-attribute %q", attr.Name, short(k))
			}
			if isEmpty(sv) {
				out[k] = nil
				continue
			}
			out[k] = deepCopy(sv)
			continue
		}
		if sa.Mutability == ReadOnly && !ro {
			continue
		}
		if isEmpty(sv) {
			out[sa.Name] = nil
			continue
		}
		var nv any
		if sa.MultiValued {
			list, err := a.normalizeList(t, sa, sv)
			if err != nil {
				return nil, err
			}
			if len(list) > 0 {
				nv = list
			}
		} else {
			single, err := unwrapSingle(t, sa, sv)
			if err != nil {
				return nil, err
			}
			if nv, err = a.normalize(t, sa, single, ro); err != nil {
				return nil, err
			}
			if isEmpty(nv) {
				nv = nil
			}
		}
		out[sa.Name] = nv
	}
	return out, nil
}

// normalizeList normalizes the elements of a multi-valued value; a single
// element is accepted for a list (RFC 7644 allows it for add; Entra and the
// Microsoft Postman collection send it). Null, "" and empty elements are
// dropped.
func (a *applier) normalizeList(t *target, attr *Attribute, v any) ([]any, error) {
	items, ok := asList(v)
	if !ok {
		items = []any{v}
	}
	out := make([]any, 0, len(items))
	for _, it := range items {
		if isEmpty(it) {
			continue
		}
		nv, err := a.normalize(t, attr, it, false)
		if err != nil {
			return nil, err
		}
		if m, ok := nv.(map[string]any); ok {
			stripNil(m)
			if len(m) == 0 {
				continue
			}
		}
		if isEmpty(nv) {
			continue
		}
		out = append(out, nv)
	}
	return out, nil
}

// stripNil removes the "clear" markers of a value that is stored whole.
func stripNil(m map[string]any) {
	for k, v := range m {
		if v == nil {
			delete(m, k)
		}
	}
}

// getKey looks name up case-insensitively (RFC 7643 §2.1) and returns the
// stored key. An exact match wins; among keys differing only in case, the
// smallest wins, so results never depend on map order.
func getKey(m map[string]any, name string) (string, any, bool) {
	if v, ok := m[name]; ok {
		return name, v, true
	}
	best, found := "", false
	for k := range m {
		if strings.EqualFold(k, name) && (!found || k < best) {
			best, found = k, true
		}
	}
	if !found {
		return "", nil, false
	}
	return best, m[best], true
}

// setFold stores v under name, dropping keys that differ only in case.
func setFold(m map[string]any, name string, v any) {
	deleteFold(m, name)
	m[name] = v
}

// deleteFold deletes every key equal to name ignoring case.
func deleteFold(m map[string]any, name string) {
	delete(m, name)
	for k := range m {
		if strings.EqualFold(k, name) {
			delete(m, k)
		}
	}
}

// sortedKeys orders keys case-insensitively (ties by byte order), so that a
// path-less value's "name" applies before "Name.givenName".
func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if c := strings.Compare(strings.ToLower(a), strings.ToLower(b)); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return keys
}

// asList returns v's elements if v is an array.
func asList(v any) ([]any, bool) {
	switch x := v.(type) {
	case []any:
		return x, true
	case []map[string]any:
		out := make([]any, len(x))
		for i, m := range x {
			out[i] = m
		}
		return out, true
	case []string:
		out := make([]any, len(x))
		for i, s := range x {
			out[i] = s
		}
		return out, true
	}
	return nil, false
}

func deepCopyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = deepCopy(v)
	}
	return out
}

// deepCopy copies JSON-shaped data; typed slices become []any so that the
// applier sees one representation.
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return deepCopyMap(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	case []map[string]any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopyMap(e)
		}
		return out
	case []string:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = e
		}
		return out
	}
	return v
}

func cloneMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
