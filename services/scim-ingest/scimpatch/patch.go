// Package scimpatch applies SCIM 2.0 PATCH operations (RFC 7644 §3.5.2) to
// a stored resource, accepting every shape Microsoft Entra ID, Okta,
// OneLogin and JumpCloud are known to send, and extracts group-membership
// deltas so that huge groups are never loaded whole.
//
// It exists because the SCIM library scimflow builds on validates PATCH
// requests but does not apply them, and because literal RFC behaviour breaks
// real IdPs: Entra's remove of members with a value list must remove only
// those members, its add to emails[type eq "work"].value on a user without a
// work e-mail must create one, its "False" must become false, and Okta's
// group rename carries the read-only id.
//
// Apply is pure: it copies the resource, applies all operations to the copy
// and returns it, or returns an *Error and no resource. It never mutates its
// arguments, never panics, and uses no clock or randomness, so applying the
// same operations to the same resource always gives the same result.
package scimpatch

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/scimflow/scimflow/services/scim-ingest/scimfilter"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// DefaultMaxOperations bounds the operations of one PATCH when
// Options.MaxOperations is zero. Entra batches group membership changes and
// Okta splits pushes by "Group Patch Batch Size", both far below it.
const DefaultMaxOperations = 1000

// Operation is one element of a PatchOp request's "Operations" (RFC 7644
// §3.5.2), as decoded with encoding/json (which matches "op", "path" and
// "value" case-insensitively).
type Operation struct {
	// Op is add, remove or replace, in any letter case (Entra sends "Add").
	Op string `json:"op"`
	// Path is the target attribute path, or empty to target the resource.
	Path string `json:"path,omitempty"`
	// Value is the decoded JSON value; nil for null or absent.
	Value any `json:"value,omitempty"`
}

// Options tunes Apply and MembersDelta. The zero value is ready to use.
type Options struct {
	// MaxOperations is the most operations a request may carry; more fail
	// with ScimTypeTooMany. Zero means DefaultMaxOperations.
	MaxOperations int
	// Schema describes the resource type. Nil means GroupSchema() when the
	// resource's "schemas" lists the core Group URN and UserSchema()
	// otherwise; servers should set it explicitly.
	Schema *Schema
	// RejectUnknown makes attributes and sub-attributes absent from Schema
	// fail with ScimTypeInvalidPath or ScimTypeInvalidValue. By default they
	// are stored as sent (an array is taken as multi-valued), because IdPs
	// carry custom mappings and a 400 makes them retry the user forever.
	RejectUnknown bool
	// CaseExact is passed to value-path filter evaluation; nil means
	// scimfilter.DefaultCaseExact.
	CaseExact func(key string) bool
}

func (o Options) maxOperations() int {
	if o.MaxOperations > 0 {
		return o.MaxOperations
	}
	return DefaultMaxOperations
}

func (o Options) schemaFor(resource map[string]any) *Schema {
	if o.Schema != nil {
		return o.Schema
	}
	if _, v, ok := getKey(resource, "schemas"); ok {
		if list, ok := asList(v); ok {
			for _, s := range list {
				if str, ok := s.(string); ok && strings.EqualFold(str, scimschema.Group) {
					s := GroupSchema()
					return &s
				}
			}
		}
	}
	s := UserSchema()
	return &s
}

// Apply applies ops, in order, to a copy of resource and returns the copy;
// on any error it returns nil and the *Error of the first failing
// operation, so a request applies completely or not at all. resource and
// ops are never modified, and the result shares no maps or slices with
// them. Apply does not touch meta; the server updates lastModified and
// version.
//
// Beyond RFC 7644 it accepts, as IdPs send them:
//   - op names in any letter case; attribute names in any case, stored in
//     the schema's spelling;
//   - operations without a path whose object value has plain keys
//     (displayName), dotted keys (name.givenName), extension-qualified keys
//     (urn:…:enterprise:2.0:User:department) and extension containers
//     ({"urn:…:enterprise:2.0:User": {"department": …}}); keys apply in
//     sorted order, so "name" applies before "name.givenName";
//   - "True"/"False" (any case) for boolean attributes and sub-attributes;
//   - null or "" as the value of replace, meaning remove; null as the value
//     of add, meaning nothing;
//   - a single object for a multi-valued attribute, a one-element array for
//     a single-valued one, and a bare string for a complex attribute with a
//     "value" sub-attribute (Entra's manager: "id" becomes {"value": "id"});
//   - an attribute without its extension URN when only an extension defines
//     it (Entra's path "manager");
//   - remove of a multi-valued attribute with a value list (Entra's members
//     removal), which removes the listed elements only, matched by "value";
//   - add or replace on a value path that matches nothing
//     (emails[type eq "work"].value), which creates the element from the
//     filter's equalities ({"type": "work", "value": …}) instead of failing
//     with noTarget;
//   - read-only attributes (Okta's id in a group rename) set to their
//     current value, which are ignored.
//
// Multi-valued adds append without duplicates: an element with a string
// "value" equal to an existing one (and no conflicting "type") is merged
// into it, so members are unique by value. Setting "primary" true on an
// element clears it on the others (RFC 7643 §2.4). Replace of a complex
// attribute merges sub-attributes (RFC 7644 §3.5.2.3), except that a
// different "value" replaces the whole object, whose other sub-attributes
// ($ref, displayName) described the old referent; add or replace on a value
// path without sub-attribute merges into the matching elements. Removing a
// value path's "value" sub-attribute removes the element. Read-only
// sub-attributes inside a writable attribute's value (manager.displayName)
// are dropped, as RFC 7644 §3.5.1 does for PUT; a path naming one is a
// mutability error. Removing a required attribute (userName, a group's
// displayName) that the resource had is an invalidValue error.
func Apply(resource map[string]any, ops []Operation, opts Options) (map[string]any, error) {
	if len(ops) > opts.maxOperations() {
		return nil, tooMany(len(ops), opts.maxOperations())
	}
	a := &applier{
		schema: opts.schemaFor(resource),
		opts:   opts,
		eval:   scimfilter.EvalOptions{CaseExact: opts.CaseExact},
		res:    deepCopyMap(resource),
	}
	for i, op := range ops {
		if err := a.apply(i, op); err != nil {
			return nil, err
		}
	}
	for _, attr := range a.schema.Attributes {
		if !attr.Required {
			continue
		}
		_, before, had := getKey(resource, attr.Name)
		_, after, has := getKey(a.res, attr.Name)
		if had && present(before) && !(has && present(after)) {
			return nil, &Error{ScimType: ScimTypeInvalidValue, Detail: fmt.Sprintf("required attribute %q cannot be removed", attr.Name)}
		}
	}
	return a.res, nil
}

type applier struct {
	schema *Schema
	opts   Options
	eval   scimfilter.EvalOptions
	res    map[string]any
}

// target is where an operation applies once its path is resolved.
type target struct {
	index int
	op    string
	path  scimfilter.Path
	// ext is the extension URN whose container holds the attribute, or ""
	// for a top-level attribute.
	ext string
	// attr describes the attribute, or is nil when the schema lacks it.
	attr *Attribute
	// name is the key the attribute is stored under.
	name string
	// sub describes path.Sub, or is nil; subName is its storage key.
	sub     *Attribute
	subName string
}

func (t *target) fail(scimType, format string, args ...any) *Error {
	what := t.op + " " + strconv.Quote(short(t.describe()))
	return opError(scimType, t.index, what, format, args...)
}

// describe names the target without its filter, which may hold personal
// data.
func (t *target) describe() string {
	s := t.name
	if t.ext != "" {
		s = t.ext + ":" + s
	}
	if t.path.Filter != nil {
		s += "[…]"
	}
	if t.subName != "" {
		s += "." + t.subName
	}
	return s
}

func (a *applier) apply(i int, op Operation) error {
	name := strings.ToLower(strings.TrimSpace(op.Op))
	switch name {
	case "add", "replace", "remove":
	default:
		return opError(ScimTypeInvalidSyntax, i, "", "op must be add, remove or replace")
	}
	if strings.TrimSpace(op.Path) == "" {
		if name == "remove" {
			return opError(ScimTypeNoTarget, i, name, "remove needs a path")
		}
		m, ok := op.Value.(map[string]any)
		if !ok {
			return opError(ScimTypeInvalidValue, i, name, "an operation without a path needs an object value")
		}
		for _, k := range sortedKeys(m) {
			if err := a.applyKey(i, name, k, m[k]); err != nil {
				return err
			}
		}
		return nil
	}
	p, err := scimfilter.ParsePath(op.Path)
	if err != nil {
		return opError(ScimTypeInvalidPath, i, name, "%v", err)
	}
	return a.applyPath(i, name, p, op.Value)
}

// applyKey applies one key of a path-less operation's value.
func (a *applier) applyKey(i int, op, key string, v any) error {
	if m, ok := v.(map[string]any); ok && isCoreSchemaURN(key, a.schema) {
		// Core attributes nested under the core schema URN.
		for _, k := range sortedKeys(m) {
			if err := a.applyKey(i, op, key+":"+k, m[k]); err != nil {
				return err
			}
		}
		return nil
	}
	if urn, ok := a.containerKey(key, v); ok {
		m, ok := v.(map[string]any)
		if !ok {
			if isEmpty(v) {
				// replace with null clears the whole extension; add adds
				// nothing.
				if k, _, found := getKey(a.res, urn); found && op == "replace" {
					delete(a.res, k)
				}
				return nil
			}
			return opError(ScimTypeInvalidValue, i, op, "extension %q needs an object value", short(urn))
		}
		for _, k := range sortedKeys(m) {
			p, err := scimfilter.ParsePath(k)
			if err != nil {
				return opError(ScimTypeInvalidPath, i, op, "key in extension %q: %v", short(urn), err)
			}
			if p.URN != "" {
				return opError(ScimTypeInvalidPath, i, op, "schema URN inside extension %q", short(urn))
			}
			p.URN = urn
			if err := a.applyPath(i, op, p, m[k]); err != nil {
				return err
			}
		}
		return nil
	}
	p, err := scimfilter.ParsePath(key)
	if err != nil {
		return opError(ScimTypeInvalidPath, i, op, "value key: %v", err)
	}
	return a.applyPath(i, op, p, v)
}

// isCoreSchemaURN reports whether key is exactly a core schema URN.
func isCoreSchemaURN(key string, s *Schema) bool {
	if strings.EqualFold(key, s.URN) {
		return true
	}
	n := len(scimschema.CorePrefix)
	return len(key) > n && scimfilter.IsCoreURN(key) && !strings.Contains(key[n:], ":")
}

// containerKey reports whether key, a key of a path-less operation's value,
// names an extension container rather than an attribute, and returns the
// extension URN to store it under.
func (a *applier) containerKey(key string, v any) (string, bool) {
	if ext := a.schema.extension(key); ext != nil {
		return ext.URN, true
	}
	if len(key) < 4 || !strings.EqualFold(key[:4], "urn:") {
		return "", false
	}
	if _, ok := v.(map[string]any); !ok {
		return "", false
	}
	if k, cur, ok := getKey(a.res, key); ok {
		if _, isMap := cur.(map[string]any); isMap {
			return k, true
		}
	}
	p, err := scimfilter.ParsePath(key)
	if err == nil && (scimfilter.IsCoreURN(p.URN) || strings.EqualFold(p.URN, a.schema.URN) || a.schema.extension(p.URN) != nil) {
		return "", false
	}
	if a.opts.RejectUnknown {
		return "", false
	}
	// An unknown extension's container (a custom Entra or Okta extension).
	return key, true
}

// locate resolves a parsed path against the schema.
func (a *applier) locate(i int, op string, p scimfilter.Path) (*target, error) {
	t := &target{index: i, op: op, path: p}
	switch {
	case p.URN == "":
		if t.attr = findAttr(a.schema.Attributes, p.Name); t.attr == nil {
			// Entra sends "manager" without the enterprise URN.
			for _, ext := range a.schema.Extensions {
				if at := findAttr(ext.Attributes, p.Name); at != nil {
					t.ext, t.attr = ext.URN, at
					break
				}
			}
		}
	case scimfilter.IsCoreURN(p.URN) || strings.EqualFold(p.URN, a.schema.URN):
		t.attr = findAttr(a.schema.Attributes, p.Name)
	default:
		if ext := a.schema.extension(p.URN); ext != nil {
			t.ext = ext.URN
			t.attr = findAttr(ext.Attributes, p.Name)
		} else {
			if a.opts.RejectUnknown {
				t.name = p.Name
				return nil, t.fail(ScimTypeInvalidPath, "unknown schema URN")
			}
			t.ext = p.URN
			if k, _, ok := getKey(a.res, p.URN); ok {
				t.ext = k
			}
		}
	}
	if t.attr != nil {
		t.name = t.attr.Name
	} else {
		t.name = p.Name
		if c := a.container(t, false); c != nil {
			if k, _, ok := getKey(c, p.Name); ok {
				t.name = k
			}
		}
		if a.opts.RejectUnknown {
			return nil, t.fail(ScimTypeInvalidPath, "unknown attribute")
		}
	}
	if p.Sub != "" {
		t.subName = p.Sub
		if t.attr != nil {
			if t.attr.Type != Complex {
				return nil, t.fail(ScimTypeInvalidPath, "attribute has no sub-attributes")
			}
			if t.sub = t.attr.sub(p.Sub); t.sub != nil {
				t.subName = t.sub.Name
			} else if a.opts.RejectUnknown {
				return nil, t.fail(ScimTypeInvalidPath, "unknown sub-attribute")
			}
		}
	}
	if p.Filter != nil && t.attr != nil && !t.attr.MultiValued {
		return nil, t.fail(ScimTypeInvalidPath, "value filter on a single-valued attribute")
	}
	return t, nil
}

// container returns the object holding t's attribute: the resource or an
// extension container, created (and listed in "schemas") if create is set.
func (a *applier) container(t *target, create bool) map[string]any {
	if t.ext == "" {
		return a.res
	}
	k, v, ok := getKey(a.res, t.ext)
	if m, isMap := v.(map[string]any); isMap {
		return m
	}
	if !create {
		return nil
	}
	if ok {
		delete(a.res, k)
	}
	m := map[string]any{}
	a.res[t.ext] = m
	return m
}

// settleContainer drops t's extension container once it is empty, and
// otherwise makes sure "schemas" (if the resource has it) lists the
// extension, as RFC 7643 §3 requires.
func (a *applier) settleContainer(t *target) {
	if t.ext == "" {
		return
	}
	k, v, ok := getKey(a.res, t.ext)
	m, isMap := v.(map[string]any)
	if !ok || !isMap {
		return
	}
	if len(m) == 0 {
		delete(a.res, k)
		return
	}
	sk, sv, ok := getKey(a.res, "schemas")
	if !ok {
		return
	}
	list, ok := asList(sv)
	if !ok || slices.ContainsFunc(list, func(x any) bool {
		s, isString := x.(string)
		return isString && strings.EqualFold(s, k)
	}) {
		return
	}
	a.res[sk] = append(slices.Clone(list), k)
}

func (a *applier) applyPath(i int, op string, p scimfilter.Path, v any) error {
	t, err := a.locate(i, op, p)
	if err != nil {
		return err
	}
	guarded := t.attr != nil && (t.attr.Mutability == ReadOnly || t.attr.Mutability == Immutable) ||
		t.sub != nil && t.sub.Mutability == ReadOnly
	var before any
	if guarded {
		if c := a.container(t, false); c != nil {
			_, before, _ = getKey(c, t.name)
			before = deepCopy(before)
		}
	}
	switch {
	case p.Filter != nil:
		err = a.applyFiltered(t, v)
	case p.Sub != "":
		err = a.applySub(t, v)
	default:
		err = a.applyAttr(t, v)
	}
	if err != nil {
		return err
	}
	if guarded {
		var after any
		if c := a.container(t, false); c != nil {
			_, after, _ = getKey(c, t.name)
		}
		changed := !reflect.DeepEqual(before, after)
		if t.attr.Mutability == Immutable && t.sub == nil && !present(before) {
			changed = false
		}
		if changed {
			return t.fail(ScimTypeMutability, "attribute is read-only")
		}
	}
	a.settleContainer(t)
	return nil
}

func (a *applier) multiValued(t *target, cur, v any) bool {
	if t.attr != nil {
		return t.attr.MultiValued
	}
	_, curList := asList(cur)
	_, vList := asList(v)
	return curList || vList
}

func isComplex(attr *Attribute, cur, v any) bool {
	if attr != nil {
		return attr.Type == Complex
	}
	_, curMap := cur.(map[string]any)
	_, vMap := v.(map[string]any)
	return curMap && vMap
}

// applyAttr applies an operation to a whole attribute (no filter, no
// sub-attribute).
func (a *applier) applyAttr(t *target, v any) error {
	c := a.container(t, t.op != "remove" && !isEmpty(v))
	if c == nil {
		return nil
	}
	key, cur, _ := getKey(c, t.name)
	multi := a.multiValued(t, cur, v)
	if t.op == "remove" {
		if v != nil && multi {
			return a.removeListed(t, c, key, cur, v)
		}
		deleteFold(c, t.name)
		return nil
	}
	if isEmpty(v) {
		if t.op == "replace" {
			deleteFold(c, t.name)
		}
		return nil
	}
	if multi {
		items, err := a.normalizeList(t, t.attr, v)
		if err != nil {
			return err
		}
		var base []any
		if t.op == "add" {
			base, _ = asList(cur)
		}
		list, touched := appendUnique(base, items)
		fixPrimary(list, touched)
		setList(c, t.name, list)
		return nil
	}
	single, err := unwrapSingle(t, t.attr, v)
	if err != nil {
		return err
	}
	nv, err := a.normalize(t, t.attr, single, false)
	if err != nil {
		return err
	}
	if isEmpty(nv) {
		if t.op == "replace" {
			deleteFold(c, t.name)
		}
		return nil
	}
	if m, ok := nv.(map[string]any); ok && isComplex(t.attr, cur, nv) {
		curMap, _ := cur.(map[string]any)
		if curMap == nil || referentChanged(curMap, m) {
			curMap = map[string]any{}
		}
		merge(curMap, m)
		if len(curMap) == 0 {
			deleteFold(c, t.name)
			return nil
		}
		setFold(c, t.name, curMap)
		return nil
	}
	setFold(c, t.name, nv)
	return nil
}

// removeListed removes the elements listed in v from a multi-valued
// attribute: Entra's {"op":"Remove","path":"members","value":[{"value":
// "u1"}]}, which a literal reading of RFC 7644 would turn into removing
// every member.
func (a *applier) removeListed(t *target, c map[string]any, key string, cur, v any) error {
	items, err := a.normalizeList(t, t.attr, v)
	if err != nil {
		return err
	}
	list, _ := asList(cur)
	if len(items) == 0 || len(list) == 0 {
		return nil
	}
	values := map[string]bool{}
	var others []any
	for _, it := range items {
		if s, ok := elementValue(it); ok {
			values[s] = true
		} else {
			others = append(others, it)
		}
	}
	kept := make([]any, 0, len(list))
	for _, el := range list {
		if s, ok := elementValue(el); ok && values[s] {
			continue
		}
		if slices.ContainsFunc(others, func(it any) bool { return subsetOf(it, el) }) {
			continue
		}
		kept = append(kept, el)
	}
	setList(c, key, kept)
	return nil
}

// applySub applies an operation to attr.sub without a filter.
func (a *applier) applySub(t *target, v any) error {
	c := a.container(t, t.op != "remove" && !isEmpty(v))
	if c == nil {
		return nil
	}
	_, cur, _ := getKey(c, t.name)
	remove := t.op == "remove" || (t.op == "replace" && isEmpty(v))
	if t.op == "add" && isEmpty(v) {
		return nil
	}
	var nv any
	if !remove {
		single, err := unwrapSingle(t, t.sub, v)
		if err != nil {
			return err
		}
		if nv, err = a.normalize(t, t.sub, single, false); err != nil {
			return err
		}
		if isEmpty(nv) {
			if t.op == "add" {
				return nil
			}
			remove = true
		}
	}
	if a.multiValued(t, cur, nil) {
		list, _ := asList(cur)
		if remove {
			setList(c, t.name, removeSub(list, nil, t.subName))
			return nil
		}
		list = slices.Clone(list)
		var touched []int
		for i, el := range list {
			if m, ok := el.(map[string]any); ok {
				// Each element gets its own copy: elements must not share memory.
				setFold(m, t.subName, deepCopy(nv))
				touched = append(touched, i)
			}
		}
		if len(touched) == 0 {
			list = append(list, map[string]any{t.subName: nv})
			touched = append(touched, len(list)-1)
		}
		fixPrimary(list, touched)
		setList(c, t.name, list)
		return nil
	}
	curMap, _ := cur.(map[string]any)
	if remove {
		if curMap != nil {
			deleteFold(curMap, t.subName)
			if len(curMap) == 0 {
				deleteFold(c, t.name)
			}
		}
		return nil
	}
	if curMap == nil {
		curMap = map[string]any{}
	} else if strings.EqualFold(t.subName, "value") && referentChanged(curMap, map[string]any{"value": nv}) {
		curMap = map[string]any{}
	}
	setFold(curMap, t.subName, nv)
	setFold(c, t.name, curMap)
	return nil
}

// applyFiltered applies an operation to attr[filter] or attr[filter].sub.
func (a *applier) applyFiltered(t *target, v any) error {
	c := a.container(t, t.op != "remove" && !isEmpty(v))
	if c == nil {
		return nil
	}
	_, cur, _ := getKey(c, t.name)
	list, _ := asList(cur)
	var matches []int
	for i, el := range list {
		if t.path.Matches(el, a.eval) {
			matches = append(matches, i)
		}
	}
	remove := t.op == "remove" || (t.op == "replace" && isEmpty(v))
	if t.op == "add" && isEmpty(v) {
		return nil
	}
	if remove {
		if len(matches) == 0 {
			return nil
		}
		if t.subName == "" {
			selected := indexSet(len(list), matches)
			kept := make([]any, 0, len(list)-len(matches))
			for i, el := range list {
				if !selected[i] {
					kept = append(kept, el)
				}
			}
			setList(c, t.name, kept)
			return nil
		}
		setList(c, t.name, removeSub(list, matches, t.subName))
		return nil
	}
	valueAttr := t.attr
	if t.subName != "" {
		valueAttr = t.sub
	}
	single := v
	if t.subName != "" {
		// An element of attr[filter] is one value; its sub-attribute is
		// single-valued if the schema says so.
		var err error
		if single, err = unwrapSingle(t, t.sub, v); err != nil {
			return err
		}
	} else if vl, ok := asList(v); ok && len(vl) == 1 {
		single = vl[0]
	}
	nv, err := a.normalize(t, valueAttr, single, false)
	if err != nil {
		return err
	}
	nvMap, isMap := nv.(map[string]any)
	if t.subName == "" && !isMap && nv != nil {
		return t.fail(ScimTypeInvalidValue, "a value path without sub-attribute needs an object value")
	}
	if isEmpty(nv) {
		// Nothing to add; for replace, clear the sub-attribute of the
		// matching elements (never of all elements: matches may be empty).
		if t.op == "replace" && t.subName != "" && len(matches) > 0 {
			setList(c, t.name, removeSub(list, matches, t.subName))
		}
		return nil
	}
	list = slices.Clone(list)
	var touched []int
	if len(matches) == 0 {
		// Entra: add or replace on a value path that matches nothing creates
		// the element the filter describes.
		el, ok := a.elementFromFilter(t)
		if !ok {
			return t.fail(ScimTypeNoTarget, "no element matches the filter, and it is not a conjunction of eq comparisons that could describe a new one")
		}
		if t.subName != "" {
			setFold(el, t.subName, nv)
		} else {
			merge(el, nvMap)
		}
		if len(el) == 0 {
			return nil
		}
		list = append(list, el)
		touched = []int{len(list) - 1}
	} else {
		for _, i := range matches {
			el, ok := list[i].(map[string]any)
			if !ok {
				el = map[string]any{"value": list[i]}
				list[i] = el
			}
			if t.subName != "" {
				setFold(el, t.subName, deepCopy(nv))
			} else {
				merge(el, deepCopyMap(nvMap))
			}
			touched = append(touched, i)
		}
	}
	fixPrimary(list, touched)
	setList(c, t.name, list)
	return nil
}

// elementFromFilter builds the element a value filter describes when it is
// a conjunction of eq comparisons with non-null values: emails[type eq
// "work"] gives {"type": "work"}.
func (a *applier) elementFromFilter(t *target) (map[string]any, bool) {
	el := map[string]any{}
	var walk func(e scimfilter.Expr) bool
	walk = func(e scimfilter.Expr) bool {
		switch x := e.(type) {
		case *scimfilter.Logical:
			return x.Op == scimfilter.And && walk(x.Left) && walk(x.Right)
		case *scimfilter.Compare:
			if x.Op != scimfilter.Eq || x.Value == nil {
				return false
			}
			name := x.Attr.Name
			if sa := t.attr.sub(name); sa != nil {
				name = sa.Name
			}
			v := x.Value
			if n, ok := v.(json.Number); ok {
				f, err := n.Float64()
				if err != nil {
					return false
				}
				v = f
			}
			if sa := t.attr.sub(name); sa != nil {
				nv, err := a.normalize(t, sa, v, false)
				if err != nil || isEmpty(nv) {
					return false
				}
				v = nv
			}
			if _, _, dup := getKey(el, name); dup {
				return false
			}
			el[name] = v
			return true
		}
		return false
	}
	if !walk(t.path.Filter) {
		return nil, false
	}
	return el, true
}

// removeSub deletes sub from the elements at indexes (all elements if
// indexes is nil); an element left empty, or without its "value", goes.
func removeSub(list []any, indexes []int, sub string) []any {
	selected := indexSet(len(list), indexes)
	out := make([]any, 0, len(list))
	for i, el := range list {
		m, ok := el.(map[string]any)
		if !ok || (selected != nil && !selected[i]) {
			out = append(out, el)
			continue
		}
		if _, _, has := getKey(m, sub); !has {
			out = append(out, el)
			continue
		}
		deleteFold(m, sub)
		if len(m) == 0 || strings.EqualFold(sub, "value") {
			continue
		}
		out = append(out, m)
	}
	return out
}

// indexSet turns indexes into a lookup table; nil stays nil ("all").
func indexSet(n int, indexes []int) []bool {
	if indexes == nil {
		return nil
	}
	set := make([]bool, n)
	for _, i := range indexes {
		set[i] = true
	}
	return set
}

// referentChanged reports whether next names a different "value" than cur,
// in which case cur's other sub-attributes ($ref, display) are stale.
func referentChanged(cur, next map[string]any) bool {
	_, nv, ok := getKey(next, "value")
	if !ok || nv == nil {
		return false
	}
	_, cv, ok := getKey(cur, "value")
	return ok && !reflect.DeepEqual(cv, nv)
}

// merge copies src's sub-attributes into dst; a nil value deletes.
func merge(dst, src map[string]any) {
	for _, k := range sortedKeys(src) {
		if src[k] == nil {
			deleteFold(dst, k)
			continue
		}
		setFold(dst, k, src[k])
	}
}

// appendUnique appends items to a copy of base, merging an item into an
// existing element with the same string "value" and no conflicting "type",
// and skipping items deep-equal to an element. It returns the indexes of
// the appended or merged elements.
func appendUnique(base, items []any) ([]any, []int) {
	list := slices.Clone(base)
	byValue := map[string][]int{}
	for i, el := range list {
		if s, ok := elementValue(el); ok {
			byValue[s] = append(byValue[s], i)
		}
	}
	var touched []int
	for _, it := range items {
		if s, ok := elementValue(it); ok {
			dup := -1
			for _, j := range byValue[s] {
				if sameType(list[j], it) {
					dup = j
					break
				}
			}
			if dup >= 0 {
				if dm, ok := list[dup].(map[string]any); ok {
					if im, ok := it.(map[string]any); ok {
						dm = cloneMap(dm)
						merge(dm, im)
						list[dup] = dm
					}
				}
				touched = append(touched, dup)
				continue
			}
			list = append(list, it)
			byValue[s] = append(byValue[s], len(list)-1)
			touched = append(touched, len(list)-1)
			continue
		}
		if j := slices.IndexFunc(list, func(el any) bool { return reflect.DeepEqual(el, it) }); j >= 0 {
			touched = append(touched, j)
			continue
		}
		list = append(list, it)
		touched = append(touched, len(list)-1)
	}
	return list, touched
}

// fixPrimary keeps "primary": true on at most one element (RFC 7643 §2.4):
// the last touched element that has it wins.
func fixPrimary(list []any, touched []int) {
	winner := -1
	for _, i := range touched {
		if isPrimary(list[i]) {
			winner = i
		}
	}
	if winner < 0 {
		return
	}
	for i, el := range list {
		if m, ok := el.(map[string]any); ok && i != winner && isPrimary(el) {
			m = cloneMap(m)
			setFold(m, "primary", false)
			list[i] = m
		}
	}
}

func isPrimary(el any) bool {
	m, ok := el.(map[string]any)
	if !ok {
		return false
	}
	_, v, _ := getKey(m, "primary")
	b, _ := v.(bool)
	return b
}

// elementValue returns the string that identifies an element of a
// multi-valued attribute: its "value" sub-attribute, or itself if it is a
// string.
func elementValue(el any) (string, bool) {
	switch x := el.(type) {
	case string:
		return x, true
	case map[string]any:
		_, v, _ := getKey(x, "value")
		s, ok := v.(string)
		return s, ok
	}
	return "", false
}

func sameType(a, b any) bool {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if !aok || !bok {
		return true
	}
	_, at, _ := getKey(am, "type")
	_, bt, _ := getKey(bm, "type")
	as, aIsString := at.(string)
	bs, bIsString := bt.(string)
	if !aIsString || !bIsString {
		return true
	}
	return strings.EqualFold(as, bs)
}

// subsetOf reports whether every sub-attribute of item has the same value in
// el.
func subsetOf(item, el any) bool {
	im, iok := item.(map[string]any)
	em, eok := el.(map[string]any)
	if !iok || !eok {
		return reflect.DeepEqual(item, el)
	}
	if len(im) == 0 {
		return false
	}
	for k, v := range im {
		_, ev, ok := getKey(em, k)
		if !ok || !reflect.DeepEqual(ev, v) {
			return false
		}
	}
	return true
}

// setList stores list under name, or removes the attribute if the list is
// empty (RFC 7643 §2.5: an empty array is unassigned).
func setList(c map[string]any, name string, list []any) {
	if len(list) == 0 {
		deleteFold(c, name)
		return
	}
	setFold(c, name, list)
}

// unwrapSingle accepts a one-element array for a single-valued target
// (Entra's manager: [{"value": …}]). A value for an attribute the schema
// does not describe (attr nil) is kept as sent.
func unwrapSingle(t *target, attr *Attribute, v any) (any, error) {
	list, ok := asList(v)
	if !ok || attr == nil {
		return v, nil
	}
	switch len(list) {
	case 0:
		return nil, nil
	case 1:
		return list[0], nil
	}
	return nil, t.fail(ScimTypeInvalidValue, "several values for a single-valued attribute")
}

func isEmpty(v any) bool {
	if v == nil {
		return true
	}
	s, ok := v.(string)
	return ok && s == ""
}

// present reports whether v counts as a value under RFC 7643 §2.5.
func present(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	return true
}
