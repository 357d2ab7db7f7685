package scimingest

import (
	"strconv"
	"strings"

	"github.com/scimflow/scimflow/internal/fault"
	"github.com/scimflow/scimflow/services/scim-ingest/scimpatch"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// This file is the normalisation layer: every shape a real IdP sends that RFC 7643/7644 does not
// describe (or that the validating library rejects) is rewritten here into the RFC form, before
// validation and before the PATCH applier runs. docs/scim.md's quirk table points at the functions
// below. Two kinds of quirk live elsewhere, on purpose: the request path (trailing slashes, endpoint
// case: parseRoute in routes.go, which must run before routing) and the value shapes the PATCH
// applier coerces per attribute while it resolves a path (scimpatch/value.go: "False" for a boolean,
// a bare string for a complex attribute with a value, one element for a list), which need the
// operation's target and so cannot run before it (they read the same schema, schema.go).

// legacyURN maps the legacy schema URNs of OneLogin's default template to current ones; "" means
// the resource's own core URN.
func legacyURN(s string) (string, bool) {
	switch strings.ToLower(s) {
	case "urn:scim:schemas:core:2.0":
		return "", true
	case "urn:scim:schemas:core:2.0:user":
		return scimschema.User, true
	case "urn:scim:schemas:core:2.0:group":
		return scimschema.Group, true
	case "urn:scim:schemas:extension:enterprise:2.0":
		return scimschema.Enterprise, true
	}
	return "", false
}

// normalizeBody rewrites, in place, the shapes real IdPs send that the library rejects or silently
// drops (scim-idp-requests.md §8.4, §9): legacy OneLogin URNs, an enterprise extension key in another
// letter case, manager sent as a plain string, and string booleans ("True", "False"). The library's own
// switch for string booleans (schema.SetAllowStringValues) is a process-wide mutable global, so it is
// not used; booleans are coerced here, per attribute, from the schema.
func (sc schemas) normalizeBody(m map[string]any, coreURN string) {
	if list, ok := m["schemas"].([]any); ok {
		for i, v := range list {
			s, _ := v.(string)
			if to, ok := legacyURN(s); ok {
				if to == "" {
					to = coreURN
				}
				list[i] = to
			}
		}
	}
	for k, v := range m {
		if to, ok := legacyURN(k); ok && to == scimschema.Enterprise || strings.EqualFold(k, scimschema.Enterprise) && k != scimschema.Enterprise {
			delete(m, k)
			m[scimschema.Enterprise] = v
		}
	}
	if coreURN == scimschema.User {
		coerceBools(sc.userPatch.Attributes, m)
		if ext, ok := m[scimschema.Enterprise].(map[string]any); ok {
			for k, v := range ext {
				if strings.EqualFold(k, "manager") {
					if s, ok := v.(string); ok {
						if s == "" {
							delete(ext, k)
						} else {
							ext[k] = map[string]any{"value": s}
						}
					}
				}
			}
			coerceBools(sc.userPatch.Extensions[0].Attributes, ext)
		}
	}
}

// coerceBools turns string booleans into booleans where the schema says boolean, and wraps a single
// object sent for a multi-valued attribute in a list. The server-owned common attributes (id, meta,
// schemas) are left to validation.
func coerceBools(attrs []scimpatch.Attribute, m map[string]any) {
	for k, v := range m {
		for i := range attrs {
			a := &attrs[i]
			if !strings.EqualFold(a.Name, k) || a.Name == "id" || a.Name == "meta" || a.Name == "schemas" {
				continue
			}
			if mv, ok := v.(map[string]any); ok && a.MultiValued {
				v = []any{mv} // a single object for a multi-valued attribute
				m[k] = v
			}
			switch a.Type {
			case scimpatch.Boolean:
				m[k] = coerceBool(v)
			case scimpatch.Complex:
				switch x := v.(type) {
				case map[string]any:
					coerceBools(a.SubAttributes, x)
				case []any:
					for _, e := range x {
						if em, ok := e.(map[string]any); ok {
							coerceBools(a.SubAttributes, em)
						}
					}
				}
			}
		}
	}
}

func coerceBool(v any) any {
	if s, ok := v.(string); ok {
		if b, err := strconv.ParseBool(strings.ToLower(strings.TrimSpace(s))); err == nil {
			return b
		}
	}
	return v
}

// memberIDs reads a members value: a list (or a single element) of {"value": id} objects; a bare
// string is taken as an id (Microsoft's Postman collection sends one).
func memberIDs(v any, maxMembers int) ([]string, error) {
	var list []any
	switch x := v.(type) {
	case nil:
		return nil, nil
	case []any:
		list = x
	default:
		list = []any{x}
	}
	if len(list) > maxMembers {
		return nil, fault.Coded(fault.Invalid, scimTooMany, "%d members in one request; the limit is %d", len(list), maxMembers)
	}
	ids := make([]string, 0, len(list))
	for _, e := range list {
		switch x := e.(type) {
		case string:
			ids = append(ids, x)
		case map[string]any:
			var id string
			for k, v := range x {
				if strings.EqualFold(k, "value") {
					id, _ = v.(string)
				}
			}
			if id == "" {
				return nil, fault.Coded(fault.Invalid, scimInvalidValue, "a member has no value")
			}
			ids = append(ids, id)
		default:
			return nil, fault.Coded(fault.Invalid, scimInvalidValue, "a member is neither an object nor an id")
		}
	}
	return ids, nil
}

// normalizeOp rewrites the operation shapes IdPs send that the RFC does not describe: a password
// (never stored) is dropped; replace with null or "" removes the attribute (Entra's null-update test);
// manager without its extension URN, as a string or as a one-element list, becomes the enterprise
// extension's manager object; string booleans become booleans.
func normalizeOp(op patchOp) []patchOp {
	op.Path = urnDotPath(op.Path)
	lp := strings.ToLower(op.Path)
	if lp == "password" || strings.HasSuffix(lp, ":password") {
		return nil
	}
	if op.Path == "" {
		m := op.Value.(map[string]any)
		for k, v := range m {
			lk := strings.ToLower(k)
			switch {
			case lk == "password", lk == "id", lk == "meta", lk == "schemas":
				delete(m, k) // read-only or never stored (Okta sends id in a group rename)
			case lk == "active":
				m[k] = coerceBool(v)
			case lk == "manager" || lk == strings.ToLower(scimschema.Enterprise)+":manager":
				delete(m, k)
				m[scimschema.Enterprise+":manager"] = managerValue(v)
			}
		}
		return []patchOp{op}
	}
	if lp == "manager" || lp == strings.ToLower(scimschema.Enterprise)+":manager" {
		op.Path = scimschema.Enterprise + ":manager"
		op.Value = managerValue(op.Value)
		if op.Op != "remove" && op.Value == nil {
			op.Op, op.Value = "remove", nil
		}
	}
	if lp == "active" {
		op.Value = coerceBool(op.Value)
	}
	if op.Op == "replace" && (op.Value == nil || op.Value == "") && !strings.HasPrefix(lp, "members") {
		op.Op, op.Value = "remove", nil
	}
	return []patchOp{op}
}

// urnDotPath rewrites a path that joins a schema URN and its attribute with a dot instead of a colon
// ("urn:…:enterprise:2.0:User.manager", Microsoft's SCIM Inbound collection) to the RFC 7644 form
// ("urn:…:enterprise:2.0:User:manager"). Without it the path names no attribute and the operation was
// silently dropped: a 200 that changed nothing.
func urnDotPath(p string) string {
	for _, urn := range []string{scimschema.Enterprise, scimschema.User, scimschema.Group} {
		if len(p) > len(urn)+1 && strings.EqualFold(p[:len(urn)], urn) && p[len(urn)] == '.' {
			return urn + ":" + p[len(urn)+1:]
		}
	}
	return p
}

// managerValue turns Entra's manager forms into the enterprise extension's complex value: "id",
// {"value":"id"} or [{"value":"id"}]; "" or null mean no manager.
func managerValue(v any) any {
	switch x := v.(type) {
	case string:
		if x == "" {
			return nil
		}
		return map[string]any{"value": x}
	case []any:
		if len(x) == 0 {
			return nil
		}
		return managerValue(x[0])
	case map[string]any:
		if s, _ := x["value"].(string); s == "" {
			if _, ok := x["value"]; ok {
				return nil
			}
		}
		return x
	}
	return v
}

// patchOp is one PATCH operation after normalisation: Op is lower-case add, replace or remove.
type patchOp struct {
	Op    string
	Path  string
	Value any
}

// parsePatch reads a PatchOp body leniently (scim-idp-requests.md §9): the schemas list may carry
// extra URNs or be missing, the Operations key and op names match in any case, an empty Operations
// list is a no-op. It enforces MaxPatchOps.
func (s *server) parsePatch(body []byte) ([]patchOp, error) {
	m, err := decodeJSON(body)
	if err != nil {
		return nil, err
	}
	var rawOps []any
	found := false
	for k, v := range m {
		if strings.EqualFold(k, "Operations") {
			found = true
			if v == nil {
				continue
			}
			list, ok := v.([]any)
			if !ok {
				return nil, fault.Coded(fault.Invalid, scimInvalidSyntax, "Operations must be a list")
			}
			rawOps = list
		}
	}
	if !found {
		return nil, fault.Coded(fault.Invalid, scimInvalidSyntax, "a PatchOp body needs Operations")
	}
	if len(rawOps) > s.cfg.MaxPatchOps {
		return nil, fault.Coded(fault.Invalid, scimTooMany, "%d operations in one PATCH; the limit is %d", len(rawOps), s.cfg.MaxPatchOps)
	}
	ops := make([]patchOp, 0, len(rawOps))
	for i, ro := range rawOps {
		om, ok := ro.(map[string]any)
		if !ok {
			return nil, fault.Coded(fault.Invalid, scimInvalidSyntax, "operation %d is not an object", i)
		}
		var op patchOp
		for k, v := range om {
			switch strings.ToLower(k) {
			case "op":
				s, _ := v.(string)
				op.Op = strings.ToLower(strings.TrimSpace(s))
			case "path":
				s, _ := v.(string)
				op.Path = strings.TrimSpace(s)
			case "value":
				op.Value = v
			}
		}
		switch op.Op {
		case "add", "replace", "remove":
		default:
			return nil, fault.Coded(fault.Invalid, scimInvalidSyntax, "operation %d: op must be add, replace or remove", i)
		}
		if op.Op != "remove" && op.Path == "" {
			if _, ok := op.Value.(map[string]any); !ok {
				return nil, fault.Coded(fault.Invalid, scimInvalidValue, "operation %d: a %s without path needs an object value", i, op.Op)
			}
		}
		if op.Op == "remove" && op.Path == "" {
			return nil, fault.Coded(fault.Invalid, scimNoTarget, "operation %d: remove needs a path", i)
		}
		ops = append(ops, normalizeOp(op)...)
	}
	return ops, nil
}
