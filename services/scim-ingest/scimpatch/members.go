package scimpatch

import (
	"strings"

	"github.com/scimflow/scimflow/services/scim-ingest/scimfilter"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// Delta is the net effect of a group PATCH on the group's membership,
// expressed as member ids so that the server can update a group of 100,000
// members in O(changed members) without loading or rewriting the list.
// Add and Remove are disjoint and hold each id once, in first-seen order,
// exactly as the client sent it (no trimming or case folding).
type Delta struct {
	// Replace means the membership is first emptied: the request replaced
	// the member list or removed every member. Add then holds the complete
	// new membership and Remove is empty.
	Replace bool
	// Add lists the member ids (the members' "value") to add.
	Add []string
	// Remove lists the member ids to remove.
	Remove []string
	// Rest holds the operations, or parts of path-less operations, that do
	// not touch members, in their original order, to be passed to Apply on
	// the group without its members. It shares values with the operations
	// given to MembersDelta (Apply never modifies them).
	Rest []Operation
}

// Empty reports whether the delta changes no membership.
func (d Delta) Empty() bool {
	return !d.Replace && len(d.Add) == 0 && len(d.Remove) == 0
}

// MembersDelta splits a group PATCH into a membership Delta and the
// operations left for the group's own attributes. It understands every
// membership shape IdPs send: add of a member list (Entra's "$ref": null
// included, a single object or a bare id string too), remove with
// members[value eq "id"] or an or-chain of such equalities (Okta), remove
// with a value list (Entra, JumpCloud: only the listed members go), remove
// without value (all members), replace with a list, [] or null (Okta's
// full push and empty-group push), and path-less add/replace whose object
// carries "members" next to displayName and id (Okta).
//
// ok is false when some operation can only be applied with the full member
// list in hand (a sub-attribute path such as members.display, or a member
// filter other than value equalities); the server should then fall back to
// Apply on the whole group. Errors are the *Error Apply would return for the
// same malformed operation: unknown op, bad path, member without a string
// value, too many operations.
func MembersDelta(ops []Operation, opts Options) (Delta, bool, error) {
	if len(ops) > opts.maxOperations() {
		return Delta{}, false, tooMany(len(ops), opts.maxOperations())
	}
	var b deltaBuilder
	for i, op := range ops {
		name := strings.ToLower(strings.TrimSpace(op.Op))
		switch name {
		case "add", "replace", "remove":
		default:
			return Delta{}, false, opError(ScimTypeInvalidSyntax, i, "", "op must be add, remove or replace")
		}
		if strings.TrimSpace(op.Path) == "" {
			m, isMap := op.Value.(map[string]any)
			if name == "remove" || !isMap {
				b.rest = append(b.rest, op)
				continue
			}
			restValue, ok, err := b.splitValue(i, name, "", m)
			if err != nil || !ok {
				return Delta{}, false, err
			}
			if len(restValue) > 0 {
				b.rest = append(b.rest, Operation{Op: op.Op, Value: restValue})
			}
			continue
		}
		p, err := scimfilter.ParsePath(op.Path)
		if err != nil {
			return Delta{}, false, opError(ScimTypeInvalidPath, i, name, "%v", err)
		}
		if !isMembers(p.AttrPath) {
			b.rest = append(b.rest, op)
			continue
		}
		switch {
		case p.Sub != "":
			return Delta{}, false, nil
		case p.Filter == nil:
			if err := b.whole(i, name, op.Value); err != nil {
				return Delta{}, false, err
			}
		default:
			ids, ok := valueEqualities(p.Filter)
			if !ok {
				return Delta{}, false, nil
			}
			switch {
			case name == "remove" || (name == "replace" && isEmpty(op.Value)):
				for _, id := range ids {
					b.remove(id)
				}
			case isEmpty(op.Value):
				// add null: nothing to add.
			default:
				// add/replace on members[value eq "id"]: the member is there
				// afterwards, whatever the other sub-attributes say.
				m, isMap := op.Value.(map[string]any)
				if !isMap || len(ids) != 1 {
					return Delta{}, false, nil
				}
				if _, v, has := getKey(m, "value"); has && v != ids[0] {
					return Delta{}, false, nil
				}
				b.add(ids[0])
			}
		}
	}
	return b.delta(), true, nil
}

// splitValue takes the members keys out of a path-less add or replace
// value (prefix is a core schema URN container's key, or "") and returns
// the remaining keys.
func (b *deltaBuilder) splitValue(i int, op, prefix string, m map[string]any) (map[string]any, bool, error) {
	rest := map[string]any{}
	for _, k := range sortedKeys(m) {
		full := k
		if prefix != "" {
			full = prefix + ":" + k
		}
		if inner, isMap := m[k].(map[string]any); isMap && prefix == "" && isCoreSchemaURN(k, &Schema{URN: scimschema.Group}) {
			innerRest, ok, err := b.splitValue(i, op, k, inner)
			if err != nil || !ok {
				return nil, ok, err
			}
			if len(innerRest) > 0 {
				rest[k] = innerRest
			}
			continue
		}
		p, err := scimfilter.ParsePath(full)
		if err != nil || !isMembers(p.AttrPath) {
			rest[k] = m[k]
			continue
		}
		if p.Filter != nil || p.Sub != "" {
			return nil, false, nil
		}
		if err := b.whole(i, op, m[k]); err != nil {
			return nil, false, err
		}
	}
	return rest, true, nil
}

func isMembers(a scimfilter.AttrPath) bool {
	return strings.EqualFold(a.Name, "members") && (a.URN == "" || scimfilter.IsCoreURN(a.URN))
}

// valueEqualities returns the ids of a filter that is value eq "id" or an
// or-chain of them.
func valueEqualities(e scimfilter.Expr) ([]string, bool) {
	switch x := e.(type) {
	case *scimfilter.Logical:
		if x.Op != scimfilter.Or {
			return nil, false
		}
		l, ok := valueEqualities(x.Left)
		if !ok {
			return nil, false
		}
		r, ok := valueEqualities(x.Right)
		if !ok {
			return nil, false
		}
		return append(l, r...), true
	case *scimfilter.Compare:
		s, isString := x.Value.(string)
		if x.Op != scimfilter.Eq || !isString || s == "" || !strings.EqualFold(x.Attr.Name, "value") || x.Attr.Sub != "" || x.Attr.URN != "" {
			return nil, false
		}
		return []string{s}, true
	}
	return nil, false
}

// deltaBuilder composes membership operations in order.
type deltaBuilder struct {
	replace bool
	adds    orderedSet
	removes orderedSet
	rest    []Operation
}

// whole applies an operation on the whole members attribute.
func (b *deltaBuilder) whole(i int, op string, v any) error {
	ids, err := memberIDs(i, op, v)
	if err != nil {
		return err
	}
	switch op {
	case "add":
		for _, id := range ids {
			b.add(id)
		}
	case "replace":
		b.reset()
		for _, id := range ids {
			b.add(id)
		}
	case "remove":
		if v == nil {
			b.reset()
			return nil
		}
		for _, id := range ids {
			b.remove(id)
		}
	}
	return nil
}

func (b *deltaBuilder) reset() {
	b.replace = true
	b.adds = orderedSet{}
	b.removes = orderedSet{}
}

func (b *deltaBuilder) add(id string) {
	b.removes.delete(id)
	b.adds.insert(id)
}

func (b *deltaBuilder) remove(id string) {
	b.adds.delete(id)
	if !b.replace {
		b.removes.insert(id)
	}
}

func (b *deltaBuilder) delta() Delta {
	return Delta{Replace: b.replace, Add: b.adds.list(), Remove: b.removes.list(), Rest: b.rest}
}

// memberIDs extracts the ids from a members value: a list of objects with a
// string "value", a single such object, or bare id strings.
func memberIDs(i int, op string, v any) ([]string, error) {
	items, ok := asList(v)
	if !ok {
		if v == nil {
			return nil, nil
		}
		items = []any{v}
	}
	ids := make([]string, 0, len(items))
	for _, it := range items {
		switch x := it.(type) {
		case nil:
			continue
		case string:
			if x == "" {
				continue
			}
			ids = append(ids, x)
			continue
		case map[string]any:
			if _, id, ok := getKey(x, "value"); ok {
				if s, isString := id.(string); isString && s != "" {
					ids = append(ids, s)
					continue
				}
			}
		}
		return nil, opError(ScimTypeInvalidValue, i, op+" \"members\"", "each member needs a string \"value\"")
	}
	return ids, nil
}

// orderedSet is a set of strings that remembers insertion order.
type orderedSet struct {
	index map[string]int
	items []string
	live  []bool
}

func (s *orderedSet) insert(v string) {
	if s.index == nil {
		s.index = map[string]int{}
	}
	if i, ok := s.index[v]; ok && s.live[i] {
		return
	}
	s.index[v] = len(s.items)
	s.items = append(s.items, v)
	s.live = append(s.live, true)
}

func (s *orderedSet) delete(v string) {
	if i, ok := s.index[v]; ok {
		s.live[i] = false
		delete(s.index, v)
	}
}

func (s *orderedSet) list() []string {
	var out []string
	for i, v := range s.items {
		if s.live[i] {
			out = append(out, v)
		}
	}
	return out
}
