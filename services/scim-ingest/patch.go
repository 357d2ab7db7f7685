package scimingest

import (
	"net/http"
	"strings"

	bolt "go.etcd.io/bbolt"
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
	return s.updateUser(w, r, uid, info, func(old *resourceRec) (map[string]any, error) {
		attrs, err := applyOps(copyAttrs(old.Attrs), ops)
		if err != nil {
			return nil, err
		}
		m := map[string]any{"schemas": []any{userURN}}
		for k, v := range attrs {
			m[k] = v
		}
		return s.sc.validateUser(m)
	}, http.StatusOK)
}

func (s *server) patchGroup(w http.ResponseWriter, r *http.Request, gid string, info *reqInfo) error {
	ops, err := s.parsePatch(info.body)
	if err != nil {
		return err
	}
	var attrOps []patchOp
	var mops memberOps
	total := 0
	for _, op := range ops {
		isMembers, n, err := mops.take(op, s.cfg.MaxMembersPerRequest)
		if err != nil {
			return err
		}
		if total += n; total > s.cfg.MaxMembersPerRequest {
			return errorf(http.StatusBadRequest, scimTooMany, "more than %d members in one request", s.cfg.MaxMembersPerRequest)
		}
		if !isMembers {
			attrOps = append(attrOps, op)
		}
	}
	return s.updateGroup(w, r, gid, info, func(tx *bolt.Tx, old *resourceRec) (groupChange, error) {
		attrs := old.Attrs
		if len(attrOps) > 0 {
			patched, err := applyOps(copyAttrs(old.Attrs), attrOps)
			if err != nil {
				return groupChange{}, err
			}
			m := map[string]any{"schemas": []any{groupURN}}
			for k, v := range patched {
				m[k] = v
			}
			var members []string
			if attrs, members, err = s.sc.validateGroup(m, s.cfg.MaxMembersPerRequest); err != nil {
				return groupChange{}, err
			}
			_ = members
		}
		ch := mops.resolve(func() []string { return children(tx, bucketMembers, info.idp.ID, gid) })
		ch.attrs = attrs
		return ch, nil
	}, http.StatusNoContent)
}

func copyAttrs(a map[string]any) map[string]any {
	return canonical(a)
}

// memberOps is the membership part of a group PATCH, kept as a sequence of primitive actions so that
// "remove X, add X" composes in order, and resolved against stored membership only when an action
// needs the current members (a remove by an arbitrary filter). The usual add / remove by id costs one
// key per member, whatever the group's size.
type memberOps struct {
	actions []memberAction
}

type memberAction struct {
	kind string // add, remove, clear, removeWhere
	ids  []string
	sel  func(id string) bool
}

// take records op if it concerns members, and returns how many member ids it carries.
func (mo *memberOps) take(op patchOp, maxMembers int) (bool, int, error) {
	lp := strings.ToLower(op.Path)
	if op.Path == "" {
		m := op.Value.(map[string]any)
		for k, v := range m {
			if strings.EqualFold(k, "members") {
				delete(m, k)
				ids, err := memberIDs(v, maxMembers)
				if err != nil {
					return false, 0, err
				}
				if op.Op == "replace" {
					mo.actions = append(mo.actions, memberAction{kind: "clear"})
				}
				mo.actions = append(mo.actions, memberAction{kind: "add", ids: ids})
				return len(m) == 0, len(ids), nil
			}
		}
		return false, 0, nil
	}
	if lp != "members" && !strings.HasPrefix(lp, "members[") && !strings.HasPrefix(lp, "members.") {
		return false, 0, nil
	}
	if lp == "members" {
		ids, err := memberIDs(op.Value, maxMembers)
		if err != nil {
			return true, 0, err
		}
		switch op.Op {
		case "add":
			mo.actions = append(mo.actions, memberAction{kind: "add", ids: ids})
		case "replace":
			mo.actions = append(mo.actions, memberAction{kind: "clear"}, memberAction{kind: "add", ids: ids})
		case "remove":
			if op.Value == nil {
				mo.actions = append(mo.actions, memberAction{kind: "clear"})
			} else {
				// Entra removes members with a value list; the RFC would remove all (azure-docs #30826).
				mo.actions = append(mo.actions, memberAction{kind: "remove", ids: ids})
			}
		}
		return true, len(ids), nil
	}
	if op.Op != "remove" {
		return true, 0, errorf(http.StatusBadRequest, scimInvalidPath, "only remove may use a members filter path")
	}
	ids, sel, err := memberSelector(op.Path)
	if err != nil {
		return true, 0, err
	}
	if sel == nil {
		mo.actions = append(mo.actions, memberAction{kind: "remove", ids: ids})
	} else {
		mo.actions = append(mo.actions, memberAction{kind: "removeWhere", sel: sel})
	}
	return true, len(ids), nil
}

// resolve turns the actions into a group change. current lists the stored members; it is called only
// when an action selects members by filter.
func (mo *memberOps) resolve(current func() []string) groupChange {
	cleared := false
	state := map[string]bool{}
	var order []string
	set := func(id string, present bool) {
		if _, ok := state[id]; !ok {
			order = append(order, id)
		}
		state[id] = present
	}
	var stored []string
	loaded := false
	for _, a := range mo.actions {
		switch a.kind {
		case "clear":
			cleared, state, order = true, map[string]bool{}, nil
		case "add":
			for _, id := range a.ids {
				set(id, true)
			}
		case "remove":
			for _, id := range a.ids {
				set(id, false)
			}
		case "removeWhere":
			if !cleared && !loaded {
				stored, loaded = current(), true
			}
			if !cleared {
				for _, id := range stored {
					if p, ok := state[id]; (!ok || p) && a.sel(id) {
						set(id, false)
					}
				}
			}
			for _, id := range order {
				if state[id] && a.sel(id) {
					state[id] = false
				}
			}
		}
	}
	var ch groupChange
	if cleared {
		ch.replace = true
		ch.members = []string{}
		for _, id := range order {
			if state[id] {
				ch.members = append(ch.members, id)
			}
		}
		return ch
	}
	for _, id := range order {
		if state[id] {
			ch.added = append(ch.added, id)
		} else {
			ch.removed = append(ch.removed, id)
		}
	}
	return ch
}
