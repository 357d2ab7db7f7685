package scimingest

import (
	"net/http"
)

func (s *server) noteGroup(info *reqInfo, attrs map[string]any) {
	info.groupName = strAttr(attrs, "displayName")
	info.externalID = strAttr(attrs, "externalId")
}

func (s *server) createGroup(w http.ResponseWriter, r *http.Request, info *reqInfo) error {
	m, err := decodeJSON(info.body)
	if err != nil {
		return err
	}
	attrs, members, err := s.sc.validateGroup(m, s.cfg.MaxMembersPerRequest)
	if err != nil {
		return err
	}
	s.noteGroup(info, attrs)
	gid, rec, err := s.store.CreateGroup(r.Context(), s.writeReq(r, info, http.StatusCreated, s.noteGroup), attrs, members)
	if err != nil {
		return err
	}
	committed(info)
	s.m.groups.WithLabelValues(info.idp.ID).Inc()
	if members == nil {
		members = []string{}
	}
	out := s.render(info.idp.ID, kindGroup, gid, rec, members)
	w.Header().Set("Location", out["meta"].(map[string]any)["location"].(string))
	w.Header().Set("ETag", etag(rec.Version))
	writeJSON(w, http.StatusCreated, parseProjection(r).apply(out))
	return nil
}

func (s *server) replaceGroup(w http.ResponseWriter, r *http.Request, gid string, info *reqInfo) error {
	m, err := decodeJSON(info.body)
	if err != nil {
		return err
	}
	attrs, members, err := s.sc.validateGroup(m, s.cfg.MaxMembersPerRequest)
	if err != nil {
		return err
	}
	s.noteGroup(info, attrs)
	// PUT replaces: no members attribute means no members (RFC 7644 §3.5.1); SetMembers(nil) says so.
	rec, err := s.store.ReplaceGroup(r.Context(), s.writeReq(r, info, http.StatusOK, s.noteGroup), gid, attrs, members)
	return s.renderUpdated(w, r, info, kindGroup, gid, rec, http.StatusOK, err)
}

func (s *server) deleteGroup(w http.ResponseWriter, r *http.Request, gid string, info *reqInfo) error {
	if err := s.store.DeleteGroup(r.Context(), s.writeReq(r, info, http.StatusNoContent, s.noteGroup), gid); err != nil {
		return err
	}
	committed(info)
	s.m.groups.WithLabelValues(info.idp.ID).Dec()
	w.WriteHeader(http.StatusNoContent)
	return nil
}
