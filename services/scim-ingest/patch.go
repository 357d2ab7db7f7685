package scimingest

import (
	"math"
	"net/http"
	"strings"
)

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
				return nil, errorf(http.StatusBadRequest, scimInvalidSyntax, "Operations must be a list")
			}
			rawOps = list
		}
	}
	if !found {
		return nil, errorf(http.StatusBadRequest, scimInvalidSyntax, "a PatchOp body needs Operations")
	}
	if len(rawOps) > s.cfg.MaxPatchOps {
		return nil, errorf(http.StatusBadRequest, scimTooMany, "%d operations in one PATCH; the limit is %d", len(rawOps), s.cfg.MaxPatchOps)
	}
	ops := make([]patchOp, 0, len(rawOps))
	for i, ro := range rawOps {
		om, ok := ro.(map[string]any)
		if !ok {
			return nil, errorf(http.StatusBadRequest, scimInvalidSyntax, "operation %d is not an object", i)
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
			return nil, errorf(http.StatusBadRequest, scimInvalidSyntax, "operation %d: op must be add, replace or remove", i)
		}
		if op.Op != "remove" && op.Path == "" {
			if _, ok := op.Value.(map[string]any); !ok {
				return nil, errorf(http.StatusBadRequest, scimInvalidValue, "operation %d: a %s without path needs an object value", i, op.Op)
			}
		}
		if op.Op == "remove" && op.Path == "" {
			return nil, errorf(http.StatusBadRequest, scimNoTarget, "operation %d: remove needs a path", i)
		}
		ops = append(ops, normalizeOp(op)...)
	}
	return ops, nil
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
			case lk == "manager" || lk == strings.ToLower(enterpriseURN)+":manager":
				delete(m, k)
				m[enterpriseURN+":manager"] = managerValue(v)
			}
		}
		return []patchOp{op}
	}
	if lp == "manager" || lp == strings.ToLower(enterpriseURN)+":manager" {
		op.Path = enterpriseURN + ":manager"
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
	for _, urn := range []string{enterpriseURN, userURN, groupURN} {
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

func (s *server) patchUser(w http.ResponseWriter, r *http.Request, uid string, info *reqInfo) error {
	ops, err := s.parsePatch(info.body)
	if err != nil {
		return err
	}
	rec, err := s.store.UpdateUser(r.Context(), s.writeReq(r, info, http.StatusOK, s.noteUser), uid, func(u *User) error {
		m, err := s.applyOps(kindUser, u.Attrs, ops)
		if err != nil {
			return err
		}
		m["schemas"] = []any{userURN}
		if u.Attrs, err = s.sc.validateUser(m); err != nil {
			return err
		}
		s.noteUser(info, u.Attrs)
		return nil
	})
	return s.renderUpdated(w, r, info, kindUser, uid, rec, http.StatusOK, err)
}

func (s *server) patchGroup(w http.ResponseWriter, r *http.Request, gid string, info *reqInfo) error {
	ops, err := s.parsePatch(info.body)
	if err != nil {
		return err
	}
	n := 0
	for _, op := range ops {
		v := op.Value
		if op.Path == "" {
			v = nil
			for k, mv := range op.Value.(map[string]any) {
				if strings.EqualFold(k, "members") {
					v = mv
				}
			}
		} else if !strings.HasPrefix(strings.ToLower(op.Path), "members") {
			continue
		}
		if ids, err := memberIDs(v, math.MaxInt); err == nil {
			n += len(ids)
		}
	}
	if n > s.cfg.MaxMembersPerRequest {
		return errorf(http.StatusBadRequest, scimTooMany, "more than %d members in one request", s.cfg.MaxMembersPerRequest)
	}
	rest, delta, byDelta, err := s.groupPatch(ops)
	if err != nil {
		return err
	}
	rec, err := s.store.UpdateGroup(r.Context(), s.writeReq(r, info, http.StatusNoContent, s.noteGroup), gid, func(g *Group) error {
		if !byDelta {
			if err := s.patchWholeGroup(g, ops); err != nil {
				return err
			}
			s.noteGroup(info, g.Attrs)
			return nil
		}
		if len(rest) > 0 {
			m, err := s.applyOps(kindGroup, g.Attrs, rest)
			if err != nil {
				return err
			}
			m["schemas"] = []any{groupURN}
			if g.Attrs, _, err = s.sc.validateGroup(m, s.cfg.MaxMembersPerRequest); err != nil {
				return err
			}
		}
		s.noteGroup(info, g.Attrs)
		if delta.replace {
			g.SetMembers(delta.members)
		} else {
			g.AddMembers(delta.added...)
			g.RemoveMembers(delta.removed...)
		}
		return nil
	})
	return s.renderUpdated(w, r, info, kindGroup, gid, rec, http.StatusNoContent, err)
}

// patchWholeGroup applies operations that need the member list to the group with all its members,
// and turns the result into a full replacement (which the store reduces to the delta).
func (s *server) patchWholeGroup(g *Group, ops []patchOp) error {
	stored, err := g.Members()
	if err != nil {
		return err
	}
	attrs := make(map[string]any, len(g.Attrs)+1)
	for k, v := range g.Attrs {
		attrs[k] = v
	}
	var ms []any
	for _, id := range stored {
		ms = append(ms, map[string]any{"value": id})
	}
	if ms != nil {
		attrs["members"] = ms
	}
	m, err := s.applyOps(kindGroup, attrs, ops)
	if err != nil {
		return err
	}
	m["schemas"] = []any{groupURN}
	newAttrs, members, err := s.sc.validateGroup(m, max(s.cfg.MaxMembersPerRequest, len(ms)+s.cfg.MaxMembersPerRequest))
	if err != nil {
		return err
	}
	g.Attrs = newAttrs
	g.SetMembers(members)
	return nil
}
