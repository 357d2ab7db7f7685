package scimingest

import (
	"math"
	"net/http"
	"strings"

	"github.com/scimflow/scimflow/internal/fault"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

func (s *server) patchUser(w http.ResponseWriter, r *http.Request, uid string, info *reqInfo) error {
	ops, err := s.parsePatch(info.body)
	if err != nil {
		return err
	}
	rec, err := s.store.UpdateUser(r.Context(), s.writeReq(r, info, http.StatusOK, s.noteUser), uid, func(u *User) error {
		if err := s.checkPatchWork(ops, u.Attrs, 0); err != nil {
			return err
		}
		m, err := s.applyOps(kindUser, u.Attrs, ops)
		if err != nil {
			return err
		}
		m["schemas"] = []any{scimschema.User}
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
		return fault.Coded(fault.Invalid, scimTooMany, "more than %d members in one request", s.cfg.MaxMembersPerRequest)
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
			if err := s.checkPatchWork(rest, g.Attrs, 0); err != nil {
				return err
			}
			m, err := s.applyOps(kindGroup, g.Attrs, rest)
			if err != nil {
				return err
			}
			m["schemas"] = []any{scimschema.Group}
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
	if err := s.checkPatchWork(ops, g.Attrs, len(stored)); err != nil {
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
	m["schemas"] = []any{scimschema.Group}
	newAttrs, members, err := s.sc.validateGroup(m, max(s.cfg.MaxMembersPerRequest, len(ms)+s.cfg.MaxMembersPerRequest))
	if err != nil {
		return err
	}
	g.Attrs = newAttrs
	g.SetMembers(members)
	return nil
}
