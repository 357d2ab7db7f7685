package scimfilter

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"
)

// EvalOptions tunes Match. The zero value is ready to use.
type EvalOptions struct {
	// CaseExact reports whether string values of the attribute with the given
	// Key (lower-case, e.g. "externalid", "emails.value",
	// "urn:…:enterprise:2.0:user:employeenumber") compare case-sensitively.
	// Nil means DefaultCaseExact.
	CaseExact func(key string) bool
}

func (o EvalOptions) caseExact() func(string) bool {
	if o.CaseExact != nil {
		return o.CaseExact
	}
	return DefaultCaseExact
}

// DefaultCaseExact is the caseExact characteristic of RFC 7643 for the
// attributes scimflow stores: true for id, externalId (§3.1),
// meta.resourceType, meta.location and meta.version (§3.1), every reference
// (§2.3.7 "A reference is case exact": $ref sub-attributes, profileUrl,
// photos.value), x509Certificates.value (binary), and the sub-attributes
// that hold another resource's id (members.value, groups.value,
// manager.value); false for everything else, notably userName,
// emails.value and displayName (§2.2 default).
//
// Two choices depart from the §8.7.1 listings, which mark references and
// members.value caseExact false: §2.3.7 says references are case exact
// (erratum 6001, held, notes the conflict), and an id is caseExact (§3.1),
// so a member or manager reference compares the way the id it copies does.
// This also keeps value-path removal (members[value eq "x"]) in agreement
// with membership deltas and indexes keyed by the exact id.
func DefaultCaseExact(key string) bool {
	switch key {
	case "id", "externalid", "meta.resourcetype", "meta.location", "meta.version",
		"profileurl", "photos.value", "x509certificates.value",
		"members.value", "groups.value", "manager.value",
		"urn:ietf:params:scim:schemas:extension:enterprise:2.0:user:manager.value":
		return true
	}
	return key == "$ref" || strings.HasSuffix(key, ".$ref")
}

// Match reports whether resource, a SCIM resource as decoded by
// encoding/json, satisfies e.
//
// Semantics (RFC 7644 §3.4.2.2, with the choices the RFC leaves open):
//   - Attribute names, URNs and extension container keys match
//     case-insensitively; an attribute without a URN that is not at the top
//     level is looked up in every extension container (Entra's
//     "manager eq …").
//   - A multi-valued attribute matches if any of its values matches.
//   - A complex value compared without a sub-attribute (emails co "x",
//     manager eq "id") compares its "value" sub-attribute.
//   - Strings compare after strings.ToLower unless CaseExact says otherwise;
//     an index built for IndexLookup must fold the same way.
//   - When both sides are xsd:dateTime strings
//     (meta.lastModified gt "2011-05-13T04:42:34Z"), eq, ne, gt, ge, lt and
//     le compare instants, so time zones and fractional seconds do not
//     matter.
//   - Numbers compare numerically (as float64), booleans only with eq/ne;
//     values of different types never match.
//   - "pr" matches a value that is not null, "", [] or {} (RFC 7643 §2.5).
//   - "eq null" matches an unassigned attribute and "ne null" an assigned
//     one; "ne x" also matches an unassigned attribute, so that
//     "not (a eq x)" and "a ne x" agree on single-valued attributes.
func Match(e Expr, resource map[string]any, opts EvalOptions) bool {
	ev := evaluator{caseExact: opts.caseExact()}
	return ev.eval(e, resource, "")
}

// Matches reports whether element, one value of the multi-valued attribute
// that p names, is selected by p.Filter; a Path without a filter selects
// every element. A simple (non-object) element is seen as {"value": element},
// so "schemas[value eq …]" works. PATCH appliers use it for value-path
// targets.
func (p Path) Matches(element any, opts EvalOptions) bool {
	if p.Filter == nil {
		return true
	}
	ev := evaluator{caseExact: opts.caseExact()}
	return ev.eval(p.Filter, asElement(element), AttrPath{URN: p.URN, Name: p.Name}.Key())
}

type evaluator struct {
	caseExact func(string) bool
}

// eval evaluates e against ctx. prefix is empty at the top level and the
// Key of the multi-valued attribute inside a value filter, where ctx is one
// element and attribute paths are relative to it.
func (ev evaluator) eval(e Expr, ctx map[string]any, prefix string) bool {
	switch x := e.(type) {
	case *Logical:
		if x.Op == And {
			return ev.eval(x.Left, ctx, prefix) && ev.eval(x.Right, ctx, prefix)
		}
		return ev.eval(x.Left, ctx, prefix) || ev.eval(x.Right, ctx, prefix)
	case *Not:
		return !ev.eval(x.X, ctx, prefix)
	case *Compare:
		var vals []any
		var key string
		if prefix == "" {
			vals = resolve(ctx, x.Attr)
			key = x.Attr.Key()
		} else {
			if v, ok := getFold(ctx, x.Attr.Name); ok {
				vals = flatten(v, nil)
			}
			key = prefix + "." + strings.ToLower(x.Attr.Name)
		}
		return ev.compare(x.Op, vals, x.Value, key)
	case *ValuePath:
		if prefix != "" {
			return false
		}
		key := AttrPath{URN: x.Attr.URN, Name: x.Attr.Name}.Key()
		for _, el := range resolve(ctx, AttrPath{URN: x.Attr.URN, Name: x.Attr.Name}) {
			if ev.eval(x.Filter, asElement(el), key) {
				return true
			}
		}
		return false
	}
	return false
}

func (ev evaluator) compare(op CompareOp, vals []any, lit any, key string) bool {
	if op == Pr {
		return slices.ContainsFunc(vals, present)
	}
	// A complex value compared without a sub-attribute stands for its
	// "value" sub-attribute.
	if slices.ContainsFunc(vals, isObject) {
		key += ".value"
		simple := make([]any, len(vals))
		for i, v := range vals {
			simple[i] = v
			if m, ok := v.(map[string]any); ok {
				simple[i], _ = getFold(m, "value")
			}
		}
		vals = simple
	}
	assigned := slices.ContainsFunc(vals, present)
	if lit == nil {
		switch op {
		case Eq:
			return !assigned
		case Ne:
			return assigned
		}
		return false
	}
	if op == Ne && !assigned {
		return true
	}
	exact := ev.caseExact(key)
	for _, v := range vals {
		if v == nil {
			continue
		}
		if ev.compareOne(op, v, lit, exact) {
			return true
		}
	}
	return false
}

func (ev evaluator) compareOne(op CompareOp, v, lit any, exact bool) bool {
	switch l := lit.(type) {
	case bool:
		b, ok := v.(bool)
		if !ok {
			return false
		}
		switch op {
		case Eq:
			return b == l
		case Ne:
			return b != l
		}
		return false
	case json.Number:
		f, ok := Number(v)
		if !ok {
			return false
		}
		lf, err := strconv.ParseFloat(string(l), 64)
		if err != nil {
			return false
		}
		return ordered(op, cmpFloat(f, lf))
	case string:
		s, ok := v.(string)
		if !ok {
			return false
		}
		switch op {
		case Co, Sw, Ew:
			if !exact {
				s, l = strings.ToLower(s), strings.ToLower(l)
			}
			switch op {
			case Co:
				return strings.Contains(s, l)
			case Sw:
				return strings.HasPrefix(s, l)
			default:
				return strings.HasSuffix(s, l)
			}
		}
		if ts, ok := parseDateTime(s); ok {
			if tl, ok := parseDateTime(l); ok {
				return ordered(op, ts.Compare(tl))
			}
		}
		if !exact {
			s, l = strings.ToLower(s), strings.ToLower(l)
		}
		return ordered(op, strings.Compare(s, l))
	}
	return false
}

// ordered applies eq ne gt ge lt le to the result of a three-way comparison.
func ordered(op CompareOp, c int) bool {
	switch op {
	case Eq:
		return c == 0
	case Ne:
		return c != 0
	case Gt:
		return c > 0
	case Ge:
		return c >= 0
	case Lt:
		return c < 0
	case Le:
		return c <= 0
	}
	return false
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	case a == b:
		return 0
	}
	return 2 // NaN: unequal and unordered; no ordered() case accepts it but ne.
}

// resolve returns the values that a top-level attribute path designates,
// with multi-valued attributes flattened.
func resolve(res map[string]any, a AttrPath) []any {
	var vals []any
	switch {
	case a.URN != "" && !IsCoreURN(a.URN):
		if c, ok := getFold(res, a.URN); ok {
			if m, ok := c.(map[string]any); ok {
				if v, ok := getFold(m, a.Name); ok {
					vals = flatten(v, nil)
				}
			}
		}
	default:
		if v, ok := getFold(res, a.Name); ok {
			vals = flatten(v, nil)
		} else if a.URN == "" {
			for _, k := range sortedKeys(res) {
				if len(k) < 4 || !strings.EqualFold(k[:4], "urn:") {
					continue
				}
				if m, ok := res[k].(map[string]any); ok {
					if v, ok := getFold(m, a.Name); ok {
						vals = flatten(v, vals)
					}
				}
			}
		}
	}
	if a.Sub == "" {
		return vals
	}
	var subs []any
	for _, v := range vals {
		if m, ok := v.(map[string]any); ok {
			if sv, ok := getFold(m, a.Sub); ok {
				subs = flatten(sv, subs)
			}
		}
	}
	return subs
}

// flatten appends v, or its elements if it is a list, to dst.
func flatten(v any, dst []any) []any {
	switch x := v.(type) {
	case []any:
		return append(dst, x...)
	case []map[string]any:
		for _, m := range x {
			dst = append(dst, m)
		}
		return dst
	case []string:
		for _, s := range x {
			dst = append(dst, s)
		}
		return dst
	}
	return append(dst, v)
}

func isObject(v any) bool {
	_, ok := v.(map[string]any)
	return ok
}

// asElement presents one value of a multi-valued attribute as an object.
func asElement(v any) map[string]any {
	if m, ok := v.(map[string]any); ok {
		return m
	}
	return map[string]any{"value": v}
}

// present reports whether v counts as a value under RFC 7643 §2.5.
func present(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case string:
		return x != ""
	case []any:
		return slices.ContainsFunc(x, present)
	case map[string]any:
		for _, sv := range x {
			if present(sv) {
				return true
			}
		}
		return false
	}
	return true
}

// getFold looks key up in m case-insensitively. An exact match wins; among
// several keys that differ only in case, the smallest wins, so the result
// does not depend on map iteration order.
func getFold(m map[string]any, key string) (any, bool) {
	if v, ok := m[key]; ok {
		return v, true
	}
	best, found := "", false
	for k := range m {
		if strings.EqualFold(k, key) && (!found || k < best) {
			best, found = k, true
		}
	}
	if !found {
		return nil, false
	}
	return m[best], true
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Number converts a decoded JSON number (float64, json.Number, or a Go integer) to float64; the
// PATCH applier uses it too, so both packages read numbers alike.
func Number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case int32:
		return float64(x), true
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		return f, err == nil
	}
	return 0, false
}

// parseDateTime parses an xsd:dateTime (RFC 7643 §2.3.5) with or without a
// zone and with any number of fractional digits (Entra sends seven).
// A value without a zone is taken as UTC.
func parseDateTime(s string) (time.Time, bool) {
	if len(s) < len("2006-01-02T15:04:05") || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') {
		return time.Time{}, false
	}
	s = strings.ToUpper(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, true
	}
	if t, err := time.Parse("2006-01-02T15:04:05.999999999", s); err == nil {
		return t, true
	}
	return time.Time{}, false
}
